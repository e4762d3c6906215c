"""A CSV of image names and point coordinates in a layout the user describes: any markup."""

from __future__ import annotations

import os
from pathlib import Path

from facelandmarks.data.records import (
    AnnotationError,
    FaceRecord,
    Listing,
    ReaderOptions,
    Skip,
    _parse_float,
    _points_from_values,
    csv_rows,
    named_image,
)


def read_csv_points(source: str | os.PathLike, options: ReaderOptions | None = None) -> Listing:
    """One face per row: an image name in column ``csv_image_column`` and, from column
    ``csv_first_coordinate`` to the end of the row, the 2K coordinates of ``options.scheme``
    (``xy``: x0, y0, x1, y1 ...; ``xxyy``: all x, then all y).  An empty or NaN cell is an unlabelled
    point, as is one at (0, 0) or (-1, -1), a placeholder (a note counts them); a row whose count disagrees with the
    scheme stops with the file and row.

    ``source`` is a CSV file or a folder of them.  Images are relative to ``options.images`` or the
    CSV's folder.  Files named *train*/*test* give the split when both are there.  The subject (the
    person, whom the split keeps on one side) is the cell of ``csv_subject_column``; without one each
    image is its own subject, and a note says so.  Coordinates count pixels from ``csv_origin`` (0, the
    toolkit's own; 1-based files lose 1 here); a note records which.  A first row read as a header whose coordinates are all
    numbers stops (it is data: ``--csv-no-header``), as does a non-numeric cell, named with its column.
    """
    options = options or ReaderOptions()
    if options.scheme is None:
        raise AnnotationError(f"{source}: a CSV of points needs its markup: give --scheme FILE (or a built-in name)")
    scheme, k = options.scheme, options.scheme.num_points
    source = Path(source)
    csv_files = [source] if source.is_file() else sorted(source.glob("*.csv"))
    if not csv_files:
        raise AnnotationError(f"{source}: no .csv files")
    listing = Listing("csv", str(source), scheme.name)
    roles = {p: ("test" if "test" in p.stem.lower() else "train" if "train" in p.stem.lower() else None) for p in csv_files}
    use_roles = {"test", "train"} <= set(roles.values())
    first, image_column, subject_column = options.csv_first_coordinate, options.csv_image_column, options.csv_subject_column
    placeholders = []  # (file:line, points) of rows with points at (0, 0) or (-1, -1)
    for csv_path in csv_files:
        folder = Path(options.images) if options.images else csv_path.parent
        read_before = False  # a row of this file had the scheme's count: a later row that misses is that row's mistake
        for line, row in csv_rows(csv_path):
            if not any(cell.strip() for cell in row):
                continue
            if line == 1 and options.csv_header:
                named = image_column < len(row) and named_image(folder / row[image_column].strip()).is_file()
                if named and len(row) - first == 2 * k and all(_is_number(cell) for cell in row[first:]):
                    raise AnnotationError(f"{csv_path}:1: every coordinate of the first row is a number: it is a face, "
                                          "not a header; give --csv-no-header (or add a header row)")
                continue
            cells = row[first:]
            if len(cells) != 2 * k:
                hint = (" (one column: the reader splits at commas, and this row has ';')" if len(row) == 1 and ";" in row[0]
                        else " (the reader splits at commas, and this row has ';' too: a file separated by ';', with "
                             "decimal commas? save it with ',' between the columns and '.' in the numbers)"
                        if any(";" in cell for cell in row)
                        else " (a comma at the end of the row?)" if len(cells) == 2 * k + 1 and not cells[-1].strip()
                        else _first_coordinate_hint(row, first, k, image_column, subject_column) if not read_before else "")
                raise AnnotationError(f"{csv_path}:{line}: {len(cells)} coordinates from column {first}, "
                                      f"scheme {scheme.name} has {k} points ({2 * k} numbers){hint}")
            for column, what in ((image_column, "image"), (subject_column, "subject")):
                if column is not None and column >= len(row):
                    raise AnnotationError(f"{csv_path}:{line}: no {what} column {column} ({len(row)} columns)")
                if column is not None and column >= first:
                    raise AnnotationError(f"{csv_path}:{line}: {what} column {column} is a coordinate (the coordinates run "
                                          f"from column {first}, --csv-first-coordinate, to the end of the row)")
            read_before = True
            try:
                values = [_parse_float(cell) for cell in cells]
            except ValueError:
                bad = next(i for i, cell in enumerate(cells) if not _is_number(cell))
                hint = " (a header row? then drop --csv-no-header)" if line == 1 else ""
                raise AnnotationError(f"{csv_path}:{line}: column {first + bad}: {cells[bad].strip()!r} is not a "
                                      f"number{hint}") from None
            if options.csv_layout == "xxyy":
                values = [v for pair in zip(values[:k], values[k:]) for v in pair]
            points, labelled = _points_from_values(values, k)
            corner = labelled & ((points == 0).all(axis=1) | (points == -1).all(axis=1))
            if corner.any():  # a point the annotator could not place, as MUCT and many tools write one
                labelled &= ~corner
                placeholders.append((f"{csv_path.name}:{line}", int(corner.sum())))
            points[labelled] -= options.csv_origin
            name = row[image_column].strip()
            subject = name if subject_column is None else row[subject_column].strip()
            image = named_image((folder / name).resolve())
            if not name:
                listing.skips.append(Skip("csv", f"{csv_path.name}:{line}", f"no image name (column {image_column})"))
            elif not subject:
                raise AnnotationError(f"{csv_path}:{line}: no subject in column {subject_column}")
            elif not labelled.any():
                listing.skips.append(Skip("csv", name, f"no labelled point ({csv_path.name}:{line})"))
            elif not image.is_file():
                listing.skips.append(Skip("csv", name, f"image missing for {csv_path.name}:{line} (no {image}; "
                                                         "names are relative to the CSV's folder, or to --images DIR)"))
            else:
                listing.records.append(FaceRecord("csv", name, str(image), points, labelled, f"csv/{subject}",
                                                  split=roles[csv_path] if use_roles else None))
    if placeholders:
        listing.notes.append(f"{sum(n for _, n in placeholders)} points at (0, 0) or (-1, -1) in {len(placeholders)} rows "
                             f"(first: {placeholders[0][0]}) read as unlabelled: MUCT and many annotation tools write a "
                             "point they could not place so (an empty cell says it too)")
    listing.notes.append("coordinates read as pixels counted from 1 (--csv-origin 1): 1 subtracted from each"
                         if options.csv_origin else
                         "coordinates read as pixels counted from 0 (--csv-origin 0); for a file that counts from 1 "
                         "(iBUG's .pts, MATLAB) give --csv-origin 1")
    if use_roles:
        listing.notes.append("CSV files named *train*/*test* give the split")
    elif subject_column is None:
        listing.notes.append("each image is its own subject: photos of one person can land on both sides of the "
                             "split; name each face's person with --csv-subject-column N")
    return listing


def _first_coordinate_hint(row: list[str], first: int, k: int, image_column: int, subject_column: int | None) -> str:
    """For a file's first row of the wrong count: where its 2K coordinates would start (``--csv-first-coordinate``
    forgotten, or a column more or less before them than it says), unless the columns it would skip are numbers too
    (then more points than the scheme's is as likely); the ``--csv-subject-column`` among them is no coordinate,
    whatever it holds (people are often numbered)."""
    start = len(row) - 2 * k
    person_skipped = subject_column is not None and first <= subject_column < start
    skipped_text = start > first and (person_skipped or not all(_is_number(cell) for cell in row[first:start]))
    return (f" ({len(row)} columns: do the coordinates start at column {start}? --csv-first-coordinate {start})"
            if image_column < start and (start < first or skipped_text) else "")


def _is_number(cell: str) -> bool:
    """A coordinate cell: a number, or empty / NaN (an unlabelled point)."""
    try:
        _parse_float(cell)
    except ValueError:
        return False
    return True
