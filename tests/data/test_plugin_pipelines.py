"""A pipeline whose refiner is a model family of the researcher's own file (docs/models.md, "Families and losses from
your own file"; docs/training.md, pipelines): on TensorFlow only, since what it checks -- the plugin recorded in each
stage's config.json, found again on resume and by evaluate.py -- is no backend's; the family itself trains on both
backends in test_plugins.py."""

import json
import shutil

import pytest

from tests.data.test_plugins import doc_plugin, script

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def dlib_faces(tmp_path_factory, data_dir):
    """docs/models.md's first-run set: dlib's example photos at 48 px (36 training faces, 25 test), and a scratch stage 1
    trained on it for one epoch (batch 8), as a pipeline refines."""
    from facelandmarks.data.prepare import PrepareOptions, prepare
    from facelandmarks.training.config import TrainConfig
    from facelandmarks.training.fit import fit

    root = tmp_path_factory.mktemp("dlib48")
    prepare([("dlibxml", str(data_dir / "samples" / "dlib" / "examples" / "faces"))],
            PrepareOptions(size=48, out=str(root / "faces"), workers=1, progress=False))
    fit(TrainConfig(model="scratch", data=str(root / "faces_train.npz"), run_dir=str(root / "stage1"), epochs=1, batch=8,
                    preview_every=0, workers=1), verbose=0)
    return {"train": root / "faces_train.npz", "test": root / "faces_test.npz", "stage1": root / "stage1"}


def test_a_cascade_whose_refiner_is_your_family_records_resumes_and_evaluates(tmp_path, dlib_faces, monkeypatch):
    """train.py cascade --refiner tinycnn --plugins FILE: each stage's config.json records the plugin; a pipeline stopped
    in its first refiner, its plugin moved since (FACELANDMARKS_PLUGINS naming where it is now), resumes into that
    refiner and trains the next one, each config.json then naming where the plugin is now; evaluate.py scores the
    pipeline without the variable."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "my_models.py").write_text(doc_plugin())
    regions = ("mouth", "left_eye")
    # the pipeline trained by train.py's main in this process, in tmp_path (a train.py process took 10.7 s alone); the
    # family and loss it registers here are taken out again after it, as the resume and the evaluation below, each a
    # process of its own, find them from the config.json files alone
    from facelandmarks.cli.train import main
    from facelandmarks.models import REGISTRY, losses, plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.delenv(plugins.ENV, raising=False)
    families, table = dict(REGISTRY), dict(losses.LOSSES)
    try:
        assert main(["cascade", "--stage1", str(dlib_faces["stage1"]), "--refiner", "tinycnn", "--plugins",
                     "lib/my_models.py", "--loss", "smooth_l1", "--regions", ",".join(regions), "--copies", "1",
                     "--epochs", "1", "--batch", "8", "--preview-every", "0", "--run-dir", "cascade"]) == 0
    finally:
        for current, saved in ((REGISTRY, families), (losses.LOSSES, table)):
            current.clear()
            current.update(saved)
    run = tmp_path / "cascade"
    for config in (run / "config.json", *(run / region / "run" / "config.json" for region in regions)):
        assert json.loads(config.read_text())["plugins"] == ["lib/my_models.py"], config
    assert json.loads((run / "mouth" / "run" / "config.json").read_text())["model"] == "tinycnn"

    # as a stop in the mouth refiner's second epoch leaves it (checked by hand with Ctrl-C): its first epoch
    # committed, no model.keras or summary.json, no left_eye refiner yet
    for name in ("model.keras", "summary.json"):
        (run / "mouth" / "run" / name).unlink()
    shutil.rmtree(run / "left_eye")
    (tmp_path / "lib").rename(tmp_path / "moved")
    resumed = script("train.py", "--resume", "--run-dir", "cascade", "--epochs", "2", cwd=tmp_path,
                     plugins_env="moved/my_models.py")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout[resumed.stdout.index("\n{") + 1:])
    assert {region: summary[region]["epochs"] for region in regions} == {"mouth": 2, "left_eye": 2}
    for region in regions:  # the refiners record where the plugin is now, and so does the pipeline (it kept lib/)
        refiner = json.loads((run / region / "run" / "config.json").read_text())
        assert (refiner["model"], refiner["plugins"]) == ("tinycnn", ["moved/my_models.py"]), region
    assert json.loads((run / "config.json").read_text())["plugins"] == ["moved/my_models.py"]

    evaluated = script("evaluate.py", "cascade", "--data", dlib_faces["test"], "--no-timing", "--out", "results",
                       cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "cascade: stage 1 + cascade" in evaluated.stdout
