"""Everything about the package is in pyproject.toml; this file only adds the shipped model.

The model in ``weights/`` sits beside the package, not in it, so a plain (non-editable) install
would leave it behind.  Its tracked files (those .gitignore lets into git) are installed as data
files into ``<prefix>/share/facelandmarks/weights/<model>/``, where ``facelandmarks.inference.shipped``
looks when there is no working copy's ``weights/``.
"""

from pathlib import Path

from setuptools import setup

SHIPPED_FILES = ("config.json", "best.weights.h5", "MODEL_CARD.md", "history.csv")

setup(data_files=[
    (f"share/facelandmarks/weights/{folder.name}", [f"weights/{folder.name}/{name}" for name in SHIPPED_FILES
                                                    if (folder / name).is_file()])
    for folder in sorted(Path("weights").glob("*/"))
    if (folder / "config.json").is_file() and not folder.name.startswith(".")  # .NAME.partial: a --ship's, not a model
])
