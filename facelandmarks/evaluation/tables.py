"""Result tables: CSV and Markdown, and the history.csv of runs read back for them and the curves."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from facelandmarks.metrics import TURN_EDGES


def read_history(path: Path) -> list[dict]:
    """The rows of a history.csv; none (and one line on stderr) when it is damaged: the scores do not need it."""
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as handle:  # Keras's CSVLogger writes NA where an epoch logged no value
            rows = [{key: "" if value == "NA" else value for key, value in row.items()} for row in csv.DictReader(handle)]
        for row in rows:  # every value the tables and curves read must parse
            int(row["epoch"]), float(row["loss"]), float(row.get("val_loss") or "nan")
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as err:
        print(f"{path}: unreadable history, left out of the tables and curves ({' '.join(str(err).split())})",
              file=sys.stderr)
        return []
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        # a value that is not there is an empty cell, NaN or None alike (NaN was written 'nan', None empty)
        writer.writerows({k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()} for row in rows)


# Losses and MSE in three significant digits: at 5 decimals a good model's test MSE had one or two (the shipped
# model's 1.84e-4 and its flip test's 1.75e-4 both read 0.00018), and a better one's would read 0.00001.
SIGNIFICANT = "#.3g"


def _fmt(value, digits=2):
    """A table cell: ``digits`` decimals, or a format spec such as ``SIGNIFICANT``; a dash where there is no value."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return format(value, digits) if isinstance(digits, str) else f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def results_markdown(rows: list[dict], scheme, label: str, faces: int, notes=()) -> str:
    """The tables of results.md; ``notes``: lines under the first table's (which rows are mapped points)."""
    lines = [f"# Results on `{label}` ({scheme.name}, {_faces(faces)})", ""]
    main = [("model", "model", None), ("train loss", "train_loss", SIGNIFICANT), ("val loss", "val_loss", SIGNIFICANT),
            ("test MSE", "test_mse", SIGNIFICANT), ("NME %", "nme", 2)]
    if scheme.pupils is not None:
        main.append(("NME pupils %", "nme_pupils", 2))
    timing, rows = timing_column(rows)
    main += [("AUC@8", "auc@0.08", 3), ("FR@8 %", "fr@0.08", 1), ("AUC@10", "auc@0.1", 3), ("FR@10 %", "fr@0.1", 1),
             ("params", "params", None), (timing, "ms_per_face", 1)]
    lines += _table(rows, main)
    lines += ["", "Losses are the training objective at the best validation epoch (history.csv); test MSE is the seed's",
              f"MSE on [0, 1] crop coordinates over visible points. {_normalisation(scheme)}", *notes, ""]
    if scheme.regions:  # a markup without regions (lapa106) had a table of model names only
        lines += ["## NME % per region", ""]
        lines += _table(rows, [("model", "model", None)] + [(r, f"nme_{r}", 2) for r in scheme.regions])
        lines += [""]
    lines += ["## Mean offset, prediction - annotation, % of the normalising distance", ""]
    lines += _table(rows, [("model", "model", None), ("x (+ right)", "offset_x", 2), ("y (+ down)", "offset_y", 2)])
    lines += ["", "A model trained on mirrored faces cannot learn an x offset of the annotations; a pixel-convention",
              "mix-up between prediction and annotation shows as one (docs/evaluation.md#mean-offset)."]
    if any(f"nme_camera_{c}" in rows[0] for c in MUCT_CAMERAS):
        lines += ["", "## NME % per MUCT camera (a frontal, b/c turned, d above, e below)", ""]
        lines += _table(rows, [("model", "model", None)] + [(c, f"nme_camera_{c}", 2) for c in MUCT_CAMERAS])
    if any("nme_turn_0" in row for row in rows):
        lines += ["", "## NME % by head turn", ""]
        lines += _table(rows, [("model", "model", None)] + _turn_columns(rows))
        lines += ["", "Each face's turn read from its annotation: the nose tip's distance from the middle of the cheeks",
                  "(iBUG points 2 and 14), over half their distance; 0 frontal, 1 profile (docs/evaluation.md#head-turn)."]
    # the first row that counted them: a row without the count (a baseline's, or one made by hand) stopped in a KeyError
    unscored = next((row["unscored"] for row in rows if row.get("unscored") is not None), 0)
    if unscored:
        lines += ["", f"{unscored} face{' was' if unscored == 1 else 's were'} without both normalising points: not scored."]
    return "\n".join(lines) + "\n"


def _faces(count: int) -> str:
    return f"{count} face{'' if count == 1 else 's'}"


def _turn_columns(rows) -> list[tuple]:
    """The head-turn table's columns: each bin's range with the faces the first row scored in it."""
    first = next(row for row in rows if "nme_turn_0" in row)
    edges = ("0", *map(str, TURN_EDGES), "1")
    return [(f"{low}-{high} ({_faces(first[f'faces_turn_{i}'])})", f"nme_turn_{i}", 2)
            for i, (low, high) in enumerate(zip(edges[:-1], edges[1:]))]


def timing_column(rows: list[dict]) -> tuple[str, list[dict]]:
    """The timing column's title and the rows as the table shows them: ``GPU ms/face`` where every timed row ran on
    one device (``device``: 'CPU', 'GPU' ...), else ``ms/face`` with each time's device beside it (Keras on a GPU
    beside an export on the CPU); ``ms/face`` where nothing was timed."""
    def timed(row) -> bool:
        return bool(row.get("device")) and _fmt(row.get("ms_per_face")) != "–"

    devices = list(dict.fromkeys(row["device"] for row in rows if timed(row)))
    if len(devices) == 1:
        return f"{devices[0]} ms/face", rows
    return "ms/face", [{**row, "ms_per_face": f"{_fmt(row['ms_per_face'], 1)} {row['device']}"} if timed(row) else row
                       for row in rows]


def _table(rows, columns) -> list[str]:
    out = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(key), digits) if digits else _fmt(row.get(key)) for _, key, digits in columns) + " |")
    return out


MUCT_CAMERAS = "abcde"


def _normalisation(scheme) -> str:
    if scheme.normalize == "box":
        return "NME normalised by the size of each face's ground-truth box, sqrt(width x height) of its visible points."
    return f"NME normalised by {normaliser(scheme)}."


def normaliser(scheme) -> str:
    """What a face's NME is a percentage of, in a few words (the CED's axis)."""
    if scheme.normalize == "box":
        return "the face box size"
    first, second = (scheme.point_label(i) for i in scheme.norm_points)
    return f"the distance between points {first} and {second}"
