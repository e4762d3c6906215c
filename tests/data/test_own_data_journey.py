"""A researcher's own CSV of MUCT photos, as spreadsheets and folders with spaces in their names give them."""

import csv
import json
import shutil

import pytest

from facelandmarks.cli.datagen import main as datagen

pytestmark = pytest.mark.data

MY6 = {  # MUCT's outer and inner eye corners and mouth corners, as a markup of one's own
    "name": "journey6",
    "points": ["right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer", "right_mouth", "left_mouth"],
    "pairs": [["right_eye_outer", "left_eye_outer"], ["right_eye_inner", "left_eye_inner"],
              ["right_mouth", "left_mouth"]],
    "normalize": ["right_eye_outer", "left_eye_outer"],
}
MUCT_POINTS = [27, 29, 34, 32, 48, 54]


def muct_rows(data_dir, photos, folder):
    """(image, person, x0, y0, ...) rows of MUCT ``photos`` copied into ``folder``, with their annotations."""
    with open(data_dir / "muct" / "muct-landmarks" / "muct76-opencv.csv", newline="") as handle:
        annotations = {row[0]: row for row in csv.reader(handle)}
    rows = []
    for photo in photos:
        shutil.copy(data_dir / "muct" / "jpg" / f"{photo}.jpg", folder / f"{photo}.jpg")
        cells = annotations[photo][2:]
        rows.append([f"{photo}.jpg", photo[:4]] + [f"{float(cells[2 * p + a]):.1f}" for p in MUCT_POINTS for a in (0, 1)])
    return rows


HEADER = ["image", "person"] + [f"c{i}" for i in range(12)]


def prepare_csv(tmp_path, rows, *options, test_fraction="0"):
    """``datagen.py prepare csv`` of ``rows`` (with MY6's scheme, person in column 1, points from column 2, 32 px)
    written as tmp_path/points.csv, into tmp_path/out/my6: its exit status."""
    (tmp_path / "my6.json").write_text(json.dumps(MY6))
    with open(tmp_path / "points.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return datagen(["prepare", "csv", "--source", str(tmp_path / "points.csv"), "--scheme", str(tmp_path / "my6.json"),
                    "--csv-subject-column", "1", "--csv-first-coordinate", "2", "--size", "32", "--test-fraction",
                    test_fraction, *options, "--workers", "1", "--quiet", "--out", str(tmp_path / "out" / "my6")])


def test_a_semicolon_csv_with_decimal_commas_is_named_as_such(data_dir, tmp_path, capsys):
    """A spreadsheet saved as CSV where the comma is the decimal mark (French, German...) separates its columns with
    ';': split at commas, each row came out as 2K+1 cells and the line asked for --csv-first-coordinate 1, which
    then called the person's column a coordinate. The line names the ';' instead."""

    (tmp_path / "my6.json").write_text(json.dumps(MY6))
    rows = muct_rows(data_dir, ["i000qa-fn", "i001qa-mn"], tmp_path)
    with open(tmp_path / "points.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["image", "person"] + [f"{n}_{a}" for n in MY6["points"] for a in "xy"])
        writer.writerows([row[:2] + [cell.replace(".", ",") for cell in row[2:]] for row in rows])
    out = tmp_path / "out" / "my6"
    assert datagen(["prepare", "csv", "--source", str(tmp_path / "points.csv"), "--scheme", str(tmp_path / "my6.json"),
                    "--csv-subject-column", "1", "--csv-first-coordinate", "2", "--size", "32", "--test-fraction", "0",
                    "--workers", "1", "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"datagen.py prepare: {tmp_path / 'points.csv'}:2: "), err
    assert "';'" in err and "--csv-first-coordinate" not in err, err
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_the_commands_the_lines_suggest_take_a_run_folder_with_spaces(data_dir, tiny_run, tmp_path, capsys):
    """A run in 'my runs/run é 1': evaluate.py --image's line suggested 'python export.py /.../my runs/run é 1', and
    the finished run's line 'tensorboard --logdir /.../my runs/run é 1/logs', both cut at the spaces when pasted.
    (train.py's resume line quoted its folder already.)"""
    import shlex

    from facelandmarks.cli import evaluate as evaluate_cli
    from facelandmarks.cli import train as train_cli
    from facelandmarks.training.config import TrainConfig

    run = tmp_path / "my runs" / "run é 1"
    shutil.copytree(tiny_run, run)
    photo = data_dir / "300w" / "afw" / "111076519_1.jpg"
    capsys.readouterr()
    assert evaluate_cli.main([str(run), "--image", str(photo), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr()
    line = next(line for line in (text.out + text.err).splitlines() if "not exported (" in line)
    command = shlex.split(line.split("not exported (", 1)[1].split("); ", 1)[0])
    assert command[-1] == str(run), line

    config = TrainConfig.load(run / "config.json")
    summary = json.loads((run / "summary.json").read_text())
    line = train_cli._where_line(TrainConfig(**{**config.__dict__, "run_dir": str(run)}), summary)
    assert shlex.split(line.split("TensorBoard: ", 1)[1]) == ["tensorboard", "--logdir", str(run / "logs")], line


def test_photos_in_subfolders_of_an_image_folder_are_named_not_passed_over(data_dir, tmp_path, capsys):
    """--image 'my faces' marked the one photo at its top and said nothing of the 40 in 'séance 1' and 'séance 2'
    beside it; a folder with photos in subfolders alone was told it held no images. Both lines name the subfolders."""
    from facelandmarks.cli import evaluate as evaluate_cli

    photos = tmp_path / "my faces"
    for sub in ("séance 1", "séance 2"):
        (photos / sub).mkdir(parents=True)
        muct_rows(data_dir, ["i000qa-fn"], photos / sub)
    (photos / "empty").mkdir()
    capsys.readouterr()
    assert evaluate_cli.main(["--image", str(photos), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"evaluate.py: {photos}: no images in this folder"), err
    assert "its subfolders 'séance 1', 'séance 2' hold photos" in err and "'empty'" not in err, err

    shutil.copy(data_dir / "300w" / "afw" / "111076519_1.jpg", photos / "photo.jpg")
    assert evaluate_cli.main(["--image", str(photos), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr()
    assert f"{photos}: its subfolders 'séance 1', 'séance 2' hold photos too" in text.err, text.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.jpg_landmarks.json", "photo.jpg_landmarks.png"]


@pytest.mark.parametrize("folder_form, csv_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_a_csv_finds_its_photos_whatever_unicode_form_names_them(data_dir, tmp_path, capsys, folder_form, csv_form):
    """A folder copied from macOS names 'séance 1' as e + a combining accent (NFD); a CSV typed elsewhere names it
    with 'é' (NFC). Every face was skipped as 'image missing ... (no .../séance 1/i000qa-fn.jpg)', a path that
    looked exactly like the folder beside it."""
    import unicodedata

    rows = []
    for sub, photos in (("séance 1", ["i000qa-fn", "i000qb-fn"]), ("séance 2", ["i001qa-mn", "i001qb-mn"])):
        folder = tmp_path / unicodedata.normalize(folder_form, sub)
        folder.mkdir()
        rows += [[unicodedata.normalize(csv_form, f"{sub}/{row[0]}"), *row[1:]] for row in muct_rows(data_dir, photos, folder)]
    assert prepare_csv(tmp_path, [HEADER, *rows], test_fraction="0.5") == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "my6_report.json").read_text())
    assert report["counts"]["written"] == 4 and report["counts"]["skipped"] == 0, report["skips"]


def test_points_at_the_corner_pixel_are_read_as_unlabelled_and_counted(data_dir, tmp_path, capsys):
    """MUCT, and many annotation tools, write a point they could not place as (0, 0) (or (-1, -1)). Read as a position,
    the mouth corner at the photo's top-left corner made a fallback box reaching to it: a crop of wall with the face
    small in its corner, the point labelled there, in silence."""
    from facelandmarks.data import npz

    photos = ["i000qa-fn", "i000qb-fn", "i001qa-mn", "i001qb-mn"]
    rows = muct_rows(data_dir, photos, tmp_path)
    rows[0][-2:] = ["0", "0"]
    rows[2][-4:-2] = ["-1", "-1"]
    assert prepare_csv(tmp_path, [HEADER, *rows], "--no-mirror") == 0
    printed = capsys.readouterr().out
    arrays = npz.load_npz(tmp_path / "out" / "my6_train.npz")
    visible = dict(zip(arrays["name"], arrays["visible"]))
    assert visible["i000qa-fn.jpg"].tolist() == [True] * 5 + [False]
    assert visible["i001qa-mn.jpg"].tolist() == [True] * 4 + [False, True]
    assert visible["i000qb-fn.jpg"].all() and visible["i001qb-mn.jpg"].all()
    assert list(arrays["detection"]) == ["dlib"] * 4
    assert "2 points at (0, 0) or (-1, -1) in 2 rows (first: points.csv:2) read as unlabelled" in printed, printed


def test_a_csv_without_its_header_row_is_told_so_whatever_unicode_form_names_its_photos(data_dir, tmp_path, capsys):
    """The first row of a CSV without a header is refused as a header (--csv-no-header) when it names a photo; named
    in the other Unicode form than the folder's, it was taken for a header, and that face dropped, in silence."""
    import unicodedata

    folder = tmp_path / unicodedata.normalize("NFD", "séance 1")
    folder.mkdir()
    rows = [[unicodedata.normalize("NFC", f"séance 1/{row[0]}"), *row[1:]]
            for row in muct_rows(data_dir, ["i000qa-fn", "i001qa-mn"], folder)]
    assert prepare_csv(tmp_path, rows) == 2
    err = capsys.readouterr().err
    assert err == (f"datagen.py prepare: {tmp_path / 'points.csv'}:1: every coordinate of the first row is a number: it "
                   "is a face, not a header; give --csv-no-header (or add a header row)\n"), err


def test_a_csv_written_on_windows_finds_its_photos_in_subfolders(data_dir, tmp_path, capsys):
    """'séance 1\\i000qa-fn.jpg', as a CSV (or a COCO file) written on Windows names a photo in a subfolder: every face
    was skipped as 'image missing'."""
    (tmp_path / "séance 1").mkdir()
    rows = [[f"séance 1\\{row[0]}", *row[1:]]
            for row in muct_rows(data_dir, ["i000qa-fn", "i000qb-fn", "i001qa-mn", "i001qb-mn"], tmp_path / "séance 1")]
    assert prepare_csv(tmp_path, [HEADER, *rows]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "my6_report.json").read_text())
    assert report["counts"]["written"] == 4 and report["counts"]["skipped"] == 0, report["skips"]
