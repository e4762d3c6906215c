"""One reader per dataset, each returning a ``Listing`` of face records.

A reader is a function ``read_NAME(source) -> Listing``; add a dataset by adding a file here, its import
and a line to ``READERS``: ``READERS`` is the one list of names (``datagen.py prepare NAME``, its ``--help``
and its "did you mean" hint read it).  The readers of markups of any kind (``TAKE_OPTIONS``) also take a
``ReaderOptions`` (the scheme, image folder, layout): ``read_NAME(source, options)``.  The contract (what a
record holds, coordinates, subjects, splits, errors) is in docs/data.md, "Adding a dataset reader".
"""

from __future__ import annotations

from facelandmarks.data.readers.coco import read_coco
from facelandmarks.data.readers.csvtable import read_csv_points
from facelandmarks.data.readers.dlibxml import read_dlibxml
from facelandmarks.data.readers.ibug300w import read_300w
from facelandmarks.data.readers.kaggle import read_kaggle
from facelandmarks.data.readers.muct import read_muct
from facelandmarks.data.readers.wflw import read_wflw
from facelandmarks.data.readers.youtube68 import read_youtube68

READERS = {
    "muct": read_muct,
    "300w": read_300w,
    "youtube68": read_youtube68,
    "kaggle": read_kaggle,
    "wflw": read_wflw,
    "dlibxml": read_dlibxml,
    "coco": read_coco,
    "csv": read_csv_points,
}
TAKE_OPTIONS = ("dlibxml", "coco", "csv")
# the readers whose --source may name the annotation file itself; the others read a folder
READS_A_FILE = ("kaggle", "dlibxml", "coco", "csv")
