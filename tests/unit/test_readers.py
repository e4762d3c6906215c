"""Adding a dataset reader, as docs/data.md ("Adding a dataset reader") tells it: the doc's example reader, registered
for the test, prepares a LaPa-like folder of synthetic faces; a reader's name is a dataset name of datagen.py because
``READERS`` is the one registry; a record that breaks the reader contract, or a reader's own ValueError, is one line
before any face is cropped.  No face data: everything is written under ``tmp_path``.
"""

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.cli.datagen import EXIT_INPUT, main, parse_command
from facelandmarks.data import npz, prepare
from facelandmarks.data.readers import READERS
from tests.unit.test_datagen_errors import face_shape, write_face

ROOT = Path(__file__).resolve().parents[2]
STEMS = {"train": ["a0", "a1", "a2", "a3"], "test": ["b0", "b1"]}


def doc_example() -> dict:
    """The namespace of the first Python fence of docs/data.md's "Adding a dataset reader" section, run."""
    text = (ROOT / "docs" / "data.md").read_text()
    section = text.split("## Adding a dataset reader", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)
    namespace = {"__name__": "facelandmarks.data.readers.lapalike"}
    exec(compile(code, "docs/data.md (example reader)", "exec"), namespace)
    return namespace


@pytest.fixture
def lapalike(monkeypatch):
    """The doc's reader, registered as a reader added to readers/__init__.py is."""
    reader = doc_example()["read_lapalike"]
    monkeypatch.setitem(READERS, "lapalike", reader)
    return reader


def lapa_folder(root: Path, pts_root: Path | None = None) -> Path:
    """``root/{train,test}/landmarks/NAME.txt`` (68, then 0-based 'x y' lines) and ``.../images/NAME.jpg``; with
    ``pts_root``, the same faces as 1-based ``.pts`` files (300-W's convention) beside copies of their images in
    ``pts_root/afw``."""
    for split, stems in STEMS.items():
        for i, stem in enumerate(stems):
            points = face_shape(70 + 3 * i, 75 + 2 * i, 38 + i)
            images = root / split / "images"
            write_face(images, stem, points)  # the image, and a 1-based .pts beside it
            pts = images / f"{stem}.pts"
            if pts_root:
                (pts_root / "afw").mkdir(parents=True, exist_ok=True)
                pts.rename(pts_root / "afw" / pts.name)
                shutil.copy(images / f"{stem}.jpg", pts_root / "afw")
            else:
                pts.unlink()
            (root / split / "landmarks").mkdir(exist_ok=True)
            (root / split / "landmarks" / f"{stem}.txt").write_text(
                "68\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y in points))
    return root


def prepare_args(dataset, source, out, *extra):
    return ["prepare", dataset, "--source", str(source), "--size", "32", "--out", str(out), "--workers", "1",
            "--quiet", *extra]


def faces(prefix) -> dict[str, tuple[np.ndarray, str, str]]:
    """Original (not mirrored) faces of a prepared set by image stem: (landmarks, side, subject)."""
    out = {}
    for side in ("train", "test"):
        arrays = npz.load_npz(f"{prefix}_{side}.npz")
        for i in np.flatnonzero(~arrays["mirrored"]):
            out[Path(arrays["name"][i]).stem] = (arrays["landmarks"][i], side, str(arrays["subject"][i]))
    return out


def test_the_doc_readers_name_is_a_dataset_name_and_its_faces_are_0_based(lapalike, tmp_path, capsys):
    source = lapa_folder(tmp_path / "lapa", tmp_path / "pts")
    # READERS is the only registry: the command line takes the new name, in any case, and offers it for a near miss
    assert parse_command(prepare_args("LapaLike", source, tmp_path / "x"))[2].datasets == ["lapalike"]
    with pytest.raises(SystemExit):
        parse_command(prepare_args("lapa", source, tmp_path / "x"))
    assert "did you mean lapalike?" in capsys.readouterr().err
    assert main(prepare_args("lapalike", source, tmp_path / "out" / "ll")) == 0
    assert "lapalike" in capsys.readouterr().out
    read = faces(tmp_path / "out" / "ll")
    assert {stem: side for stem, (_, side, _) in read.items()} == {s: side for side, ss in STEMS.items() for s in ss}
    assert {subject for _, _, subject in read.values()} == {f"lapalike/{s}" for ss in STEMS.values() for s in ss}
    # the same faces, 1-based in .pts files read by 300w (which moves them to 0-based): the same landmarks
    assert main(prepare_args("300w", tmp_path / "pts", tmp_path / "out" / "w", "--test-fraction", "0")) == 0
    by_300w = faces(tmp_path / "out" / "w")
    for stem, (landmarks, _, _) in read.items():
        np.testing.assert_allclose(landmarks, by_300w[stem][0], atol=1e-6)


def test_the_doc_readers_bad_files_are_one_line_naming_the_file(lapalike, tmp_path, capsys):
    source = lapa_folder(tmp_path / "lapa")
    bad = source / "train" / "landmarks" / "a1.txt"
    good = bad.read_text()
    cases = {
        ":1: expected the point count 68 (ibug68) on the first line": lambda t: "abc\n" + t.split("\n", 1)[1],
        ":5: not an 'x y' pair of numbers": lambda t: t.replace(t.splitlines()[4], "1.0 zz"),
        ": 67 points, expected 68 (ibug68)": lambda t: t.rsplit("\n", 2)[0] + "\n",
        ":1: expected the point count 68": lambda t: "",
    }
    for problem, edit in cases.items():
        bad.write_text(edit(good))
        assert main(prepare_args("lapalike", source, tmp_path / "out" / "ll")) == EXIT_INPUT, problem
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"datagen.py prepare: {bad}{problem}"), (problem, err)
    assert not (tmp_path / "out").exists()
    # a missing image is one face skipped with its reason, not the run stopped
    bad.write_text(good)
    (source / "test" / "images" / "b1.jpg").unlink()
    assert main(prepare_args("lapalike", source, tmp_path / "out" / "ll")) == 0
    assert "lapalike: test/images/b1: image missing for b1.txt" in capsys.readouterr().out


def breaking(reader, **change):
    """``reader`` whose first record has ``change`` made to it (or, for ``scheme``, whose listing has)."""
    def read(source):
        listing = reader(source)
        if "scheme" in change:
            listing.scheme = change["scheme"]
        else:
            listing.records[0] = dataclasses.replace(listing.records[0], **change)
        return listing
    return read


def test_a_record_that_breaks_the_contract_is_one_line_before_any_face_is_cropped(lapalike, tmp_path, capsys,
                                                                                   monkeypatch):
    source = lapa_folder(tmp_path / "lapa")
    first = "test/images/b0.jpg"
    cases = {
        "points of shape (60, 2), not (68, 2): ibug68 has 68 points": {"points": face_shape()[:60]},
        "labelled of shape (68,) and dtype int64, not bool (68,)": {"labelled": np.ones(68, np.int64)},
        "split 'val' (a split is 'train', 'test' or None)": {"split": "val"},
        "subject '' (a subject is a non-empty string)": {"subject": ""},
        "neither image_path nor pixels": {"image_path": None},
    }

    def no_cropping(*args, **kwargs):
        raise AssertionError("a face was cropped")

    monkeypatch.setattr(prepare, "_crop_all", no_cropping)
    for problem, change in cases.items():
        monkeypatch.setitem(READERS, "lapalike", breaking(lapalike, **change))
        assert main(prepare_args("lapalike", source, tmp_path / "out" / "ll")) == EXIT_INPUT, problem
        err = capsys.readouterr().err
        assert err == f"datagen.py prepare: {source}: {first}: the lapalike reader gave {problem}\n", err
    monkeypatch.setitem(READERS, "lapalike", breaking(lapalike, scheme="ibug-68"))
    assert main(prepare_args("lapalike", source, tmp_path / "out" / "ll")) == EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"datagen.py prepare: {source}: the lapalike reader's scheme: unknown landmark scheme 'ibug-68'")
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_readers_own_value_error_names_the_dataset_and_its_source(tmp_path, capsys, monkeypatch):
    def careless(source):
        return float("zz")  # a reader that parses without naming the file

    monkeypatch.setitem(READERS, "careless", careless)
    assert main(prepare_args("careless", tmp_path, tmp_path / "out" / "c")) == EXIT_INPUT
    assert capsys.readouterr().err == (f"datagen.py prepare: careless ({tmp_path}): could not convert string to float: "
                                       "'zz'\n")
