"""datagen.py without face data: the hash split, archive extraction refusing escapes, argument errors.

Preparing every dataset from real files is tested in ``tests/data/test_datagen.py``.
"""

import io
import tarfile

import pytest

from facelandmarks.cli.datagen import main
from facelandmarks.data.download import ArchiveError, safe_extract
from facelandmarks.data.splits import SplitError, check_subject_split, hash_test_subjects


def test_hash_split_is_deterministic_and_two_sided():
    subjects = [f"s{i}" for i in range(200)]
    test = hash_test_subjects(subjects, 0.2, seed=0)
    assert test == hash_test_subjects(list(reversed(subjects)), 0.2, seed=0)
    assert 25 <= len(test) <= 55
    assert test != hash_test_subjects(subjects, 0.2, seed=1)
    assert len(hash_test_subjects(["a", "b"], 0.0001, seed=0)) == 1
    assert len(hash_test_subjects(["a", "b"], 0.9999, seed=0)) == 1
    with pytest.raises(SplitError, match="1 subject"):
        check_subject_split(["a", "b"], ["b", "c"])


@pytest.mark.parametrize(
    "member, problem",
    [("../evil.txt", "has '..' in its path"), ("/tmp/evil.txt", "has an absolute path"),
     ("jpg/link", "links outside"), ("jpg/../../evil.txt", "has '..' in its path")],
)
def test_archive_members_outside_the_destination_are_refused(tmp_path, member, problem):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        good = tarfile.TarInfo("jpg/good.txt")
        good.size = 4
        tar.addfile(good, io.BytesIO(b"good"))
        info = tarfile.TarInfo(member)
        if member == "jpg/link":
            info.type, info.linkname = tarfile.SYMTYPE, "../../outside"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    dest = tmp_path / "dest"
    with pytest.raises(ArchiveError) as caught:
        safe_extract(archive, dest)
    assert str(archive) in str(caught.value) and repr(member) in str(caught.value) and problem in str(caught.value)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "jpg" / "good.txt").exists()


def test_cli_rejects_unpaired_sources(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "300w", "youtube68", "--source", str(tmp_path), "--size", "32", "--out", str(tmp_path / "x")])
    assert "2 dataset(s) but 1 --source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "celeba", "--source", str(tmp_path), "--size", "32", "--out", str(tmp_path / "x")])


def test_a_split_option_that_a_dataset_does_not_use_is_said_to_be_unused():
    """--test-fraction gave way in silence to a dataset's own split, --test-subjects to every split but MUCT's."""
    import numpy as np

    from facelandmarks.data.records import FaceRecord, Listing
    from facelandmarks.data.splits import SplitOptions, assign_splits

    def listing(sides):
        found = Listing("dlibxml", "faces", "ibug68")
        for i, side in enumerate(sides):
            found.records.append(FaceRecord("dlibxml", f"{i}.jpg", f"{i}.jpg", np.zeros((68, 2)), np.ones(68, bool),
                                            f"s{i}", split=side))
        return found

    own = assign_splits(listing(["train", "train", "test"]), SplitOptions(test_fraction=0.0))
    assert own.sides == ["train", "train", "test"]
    assert "(--test-fraction 0.0 not used: --official-split ignore splits by hash instead)" in own.text
    hashed = assign_splits(listing([None] * 6), SplitOptions(test_subjects=2))
    assert "(--test-subjects is for muct's numbered subjects: not used here)" in hashed.text
    assert "not used" not in assign_splits(listing([None] * 6), SplitOptions(test_fraction=0.5)).text


def test_the_prepare_summary_counts_one_face_and_one_subject_in_the_singular():
    """A test side of one face said 'test: 1 faces (1 + 0 mirrored + 0 vertically flipped), 1 subjects -> ...'."""
    from facelandmarks.data.report import format_summary

    side = {"faces": 1, "originals": 1, "mirrored": 0, "vflipped": 0, "subjects": 1, "path": "d_test.npz"}
    report = {"scheme": "ibug68", "size": 48, "channels": 3, "datasets": [], "notes": [], "subjects_on_both_sides": [],
              "counts": {k: 1 for k in ("read", "detected", "fallback", "given", "skipped", "listed")}, "skips": [],
              "outputs": {"train": {**side, "faces": 2, "mirrored": 1, "subjects": 2, "path": "d_train.npz"},
                          "test": side, "val": {"faces": 1, "shards": 1, "subjects": 1, "path": "v.shards.json"}},
              "set_id": "x", "seconds": 0.1}
    lines = format_summary(report, "r.txt", "r.json").splitlines()
    assert "  train: 2 faces (1 + 1 mirrored + 0 vertically flipped), 2 subjects -> d_train.npz" in lines
    assert "  test: 1 face (1 + 0 mirrored + 0 vertically flipped), 1 subject -> d_test.npz" in lines
    assert "  val: 1 face in 1 shard, 1 subject -> v.shards.json" in lines
