"""dlib/imglab XML: boxes and <part>s; files named *train*/*test* give the split."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from facelandmarks.data.records import AnnotationError, FaceRecord, Listing, ReaderOptions, Skip, named_image
from facelandmarks.landmarks import get_scheme


def read_dlibxml(source: str | os.PathLike, options: ReaderOptions | None = None) -> Listing:
    """dlib imglab XML: ``<image file=…><box top left width height><part name x y/>``.

    ``source`` is an XML file or a folder of them (files without any
    ``<part>`` are ignored).  Parts are named by index (``00``-``K-1``) or by
    the point names of ``options.scheme``; without a scheme they are iBUG 68
    points ``00``-``67``.  A missing part is unlabelled.  The XML box serves
    as the face detection.  When the folder holds both a ``*train*`` and a
    ``*test*`` file, their roles give the split; otherwise it is by image.
    """
    given = (options or ReaderOptions()).scheme
    scheme = given or get_scheme("ibug68")
    k, hint = scheme.num_points, "" if given else "; give --scheme FILE for another markup"
    source = Path(source)
    xml_files = [source] if source.is_file() else sorted(source.glob("*.xml"))
    listing = Listing("dlibxml", str(source), scheme.name)
    parsed = []
    for xml_path in xml_files:
        try:
            root = ElementTree.parse(xml_path).getroot()
        except ElementTree.ParseError as err:
            raise AnnotationError(f"{xml_path}: not well-formed XML ({err})") from None
        except OSError as err:
            raise AnnotationError(f"{xml_path}: cannot read ({err.strerror or err})") from None
        if root.find("./images/image/box/part") is None:
            if source.is_file():
                raise AnnotationError(f"{xml_path}: no <part> landmarks in any <box>")
            listing.notes.append(f"{xml_path.name}: no landmark parts, not used")
            continue
        parsed.append((xml_path, root))
    if not parsed:
        raise AnnotationError(f"{source}: no dlib XML with landmark parts")
    roles = {p: ("test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else None) for p, _ in parsed}
    use_roles = {"test", "train"} <= set(roles.values())
    for xml_path, root in parsed:
        for image_el in root.iter("image"):
            file_name = image_el.get("file", "")
            image = named_image((xml_path.parent / file_name).resolve())
            for index, box_el in enumerate(image_el.findall("box")):
                label = f"{file_name} (box {index})"
                if box_el.get("ignore", "0") == "1":
                    listing.skips.append(Skip("dlibxml", label, "box marked ignore='1'"))
                    continue
                try:
                    left, top = float(box_el.get("left")), float(box_el.get("top"))
                    width, height = float(box_el.get("width")), float(box_el.get("height"))
                except (TypeError, ValueError):
                    raise AnnotationError(f"{xml_path}: {label}: box without numeric left/top/width/height") from None
                points = np.zeros((k, 2), np.float64)
                labelled = np.zeros(k, bool)
                for part in box_el.findall("part"):
                    name = part.get("name") or ""
                    try:
                        x, y = float(part.get("x")), float(part.get("y"))
                    except (TypeError, ValueError):
                        raise AnnotationError(f"{xml_path}: {label}: part {part.attrib} has no numeric x/y") from None
                    if name.isdigit():
                        index_ = int(name)
                    elif name in scheme.point_names:
                        index_ = scheme.point_names.index(name)
                    else:
                        raise AnnotationError(f"{xml_path}: {label}: part name {name!r} is neither an index nor a "
                                              f"point name of {scheme.name}{hint}")
                    if not 0 <= index_ < k:
                        raise AnnotationError(f"{xml_path}: {label}: part name {name} outside 00-{k - 1:02d} "
                                              f"({scheme.name}{hint})")
                    if labelled[index_]:  # a typo that leaves another point out, not a second opinion
                        raise AnnotationError(f"{xml_path}: {label}: part {name} given twice")
                    points[index_], labelled[index_] = (x, y), True
                if not labelled.any():
                    listing.skips.append(Skip("dlibxml", label, "box without landmark parts"))
                    continue
                if not image.is_file():
                    listing.skips.append(Skip("dlibxml", file_name, f"image missing for {xml_path.name} (no {image}; "
                                                                     "names are relative to the XML's folder)"))
                    continue
                listing.records.append(
                    FaceRecord(
                        "dlibxml", file_name, str(image), points, labelled, f"dlibxml/{file_name}",
                        split=roles[xml_path] if use_roles else None,
                        given_box=np.array([left, top, left + width, top + height], np.float32),
                    )
                )
    if not given:
        _check_ibug68(source, listing.records)
    if use_roles:
        listing.notes.append("XML files named *train*/*test* give the split")
    return listing


def _check_ibug68(source: Path, records: list[FaceRecord]) -> None:
    """Without ``--scheme`` the parts are iBUG 68's: parts 00-N in every box and none past them are a markup of
    N + 1 points of its own (read as iBUG 68 they would be its jaw's points, the rest unlabelled): stop."""
    counts = {int(record.labelled.sum()) for record in records}
    if len(counts) != 1 or not all(record.labelled[:next(iter(counts))].all() for record in records):
        return
    n = counts.pop()
    if n < 68:
        raise AnnotationError(f"{source}: every box has parts 00-{n - 1:02d} and none past them: a markup of {n} points, "
                              "not iBUG 68's; give --scheme FILE (docs/own-landmarks.md), or --scheme ibug68 to read them "
                              f"as iBUG 68's points 00-{n - 1:02d}")
