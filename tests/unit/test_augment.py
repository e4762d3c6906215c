"""Augmentation without face data: the settings string, the affine maths, and the geometry on synthetic batches.

Markers on real faces following their landmarks are in ``tests/data/test_augment.py``.
"""

import json

import numpy as np
import pytest

from facelandmarks.data.augment.augmenter import Augmenter
from facelandmarks.data.augment.config import AugmentConfig
from facelandmarks.data.augment.geometry import affine_matrices, gaussian_noise
from facelandmarks.landmarks import get_scheme
from facelandmarks.training.config import TrainConfig

SIZE = 20


def synthetic_batch(scheme_name, batch=4, seed=0):
    """Random uint8 crops and landmarks well inside the crop, a few points hidden."""
    rng = np.random.default_rng(seed)
    k = get_scheme(scheme_name).num_points
    images = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
    landmarks = rng.uniform(0.05, 0.95, (batch, k, 2)).astype(np.float32)
    visible = rng.random((batch, k)) > 0.15
    return images, landmarks, visible


def exact_params(augmenter, batch, rotation=0.0, translate=(0.0, 0.0), flip=False):
    """No photometric change and the same given geometry for every image."""
    params = Augmenter(AugmentConfig.none(), augmenter.scheme).sample_params(batch, SIZE)
    flips = np.full(batch, flip)
    points, warp = affine_matrices(
        np.full(batch, rotation), np.ones(batch), np.tile(translate, (batch, 1)), np.zeros((batch, 2)), flips, SIZE
    )
    params.update(points=points, warp=warp, flip=flips)
    return params


# --- the affine maps (numpy) --------------------------------------------------------------


def test_zero_parameters_give_identity_maps_and_a_flip_gives_one_minus_x():
    zeros = np.zeros(2)
    points, warp = affine_matrices(zeros, np.ones(2), np.zeros((2, 2)), np.zeros((2, 2)), [False, True], SIZE)
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    np.testing.assert_allclose(points[0], identity, atol=1e-7)
    np.testing.assert_allclose(warp[0], identity, atol=1e-6)
    # flipped: u' = 1 - u on normalised coordinates, pixel x' = S - 1 - x on the image
    np.testing.assert_allclose(points[1], [[-1, 0, 1], [0, 1, 0]], atol=1e-7)
    np.testing.assert_allclose(warp[1], [[-1, 0, SIZE - 1], [0, 1, 0]], atol=1e-5)


def test_warp_is_the_inverse_of_the_point_map_in_pixels():
    rng = np.random.default_rng(0)
    n = 16
    points, warp = affine_matrices(
        rng.uniform(-40, 40, n), rng.uniform(0.6, 1.4, n), rng.uniform(-0.2, 0.2, (n, 2)),
        rng.uniform(-15, 15, (n, 2)), rng.random(n) < 0.5, SIZE,
    )
    uv = rng.uniform(0, 1, (n, 5, 2))
    moved = np.einsum("bij,bkj->bki", points[:, :, :2], uv) + points[:, None, :, 2]
    # output pixel p' = u' S - 0.5 must sample input pixel p = u S - 0.5
    pixel_out = moved * SIZE - 0.5
    pixel_in = np.einsum("bij,bkj->bki", warp[:, :, :2], pixel_out) + warp[:, None, :, 2]
    np.testing.assert_allclose(pixel_in, uv * SIZE - 0.5, atol=2e-4)


def test_affine_matrices_refuse_bad_sizes_and_scales():
    with pytest.raises(ValueError, match="crop size must be >= 1, got 0"):
        affine_matrices([0.0], [1.0], [[0, 0]], [[0, 0]], [False], 0)
    with pytest.raises(ValueError, match="scale factors must be > 0"):
        affine_matrices([0.0], [0.0], [[0, 0]], [[0, 0]], [False], SIZE)


# --- the geometry on synthetic batches (keras.ops) -----------------------------------------


@pytest.mark.backend
def test_identity_leaves_images_points_and_visibility_unchanged():
    images, landmarks, visible = synthetic_batch("muct76")
    out, out_landmarks, out_visible = Augmenter(AugmentConfig.none(), "muct76")(images, landmarks, visible)
    assert out.dtype == np.float32 and out_landmarks.dtype == np.float32 and out_visible.dtype == np.bool_
    np.testing.assert_array_equal(out, images)
    np.testing.assert_array_equal(out_landmarks, landmarks)
    np.testing.assert_array_equal(out_visible, visible)
    # every transform drawn, at zero amounts, through the compiled warp: the identity too
    zero = AugmentConfig.parse("rotation=0@1,scale=0@1,translate=0@1,shear=0@1,brightness=0@1,contrast=0@1")
    augmenter = Augmenter(zero, "muct76", seed=4)
    params = augmenter.sample_params(len(images), SIZE)
    assert not params["flip"].any() and params["noise_key"] is None
    out, out_landmarks, out_visible = augmenter.apply(images, landmarks, visible, params)
    np.testing.assert_allclose(out, images, atol=1e-3)
    np.testing.assert_allclose(out_landmarks, landmarks, atol=1e-6)
    np.testing.assert_array_equal(out_visible, visible)


@pytest.mark.backend
@pytest.mark.parametrize("scheme_name", ["ibug68", "muct76", "wflw98", "kaggle15"])
def test_pure_flip_mirrors_x_and_swaps_the_schemes_twins(scheme_name):
    scheme = get_scheme(scheme_name)
    images, landmarks, visible = synthetic_batch(scheme_name, seed=1)
    augmenter = Augmenter(AugmentConfig.none(), scheme)
    out, out_landmarks, out_visible = augmenter.apply(images, landmarks, visible, exact_params(augmenter, 4, flip=True))
    np.testing.assert_allclose(out, images[:, :, ::-1], atol=1e-3)
    perm = scheme.mirror_array
    np.testing.assert_allclose(out_landmarks[..., 0], 1 - landmarks[:, perm, 0], atol=1e-6)
    np.testing.assert_allclose(out_landmarks[..., 1], landmarks[:, perm, 1], atol=1e-6)
    np.testing.assert_array_equal(out_visible, visible[:, perm])
    # the subject's outer eye corners swap identities: the right one is now where the left one was, mirrored
    right, left = scheme.norm_points
    np.testing.assert_allclose(out_landmarks[:, right, 0], 1 - landmarks[:, left, 0], atol=1e-6)


@pytest.mark.backend
def test_points_pushed_outside_become_invisible():
    images, landmarks, visible = synthetic_batch("ibug68", seed=2)
    augmenter = Augmenter(AugmentConfig.none(), "ibug68")
    # 0.3 of a 20-px crop: exactly 6 px to the right
    out, out_landmarks, out_visible = augmenter.apply(
        images, landmarks, visible, exact_params(augmenter, 4, translate=(0.3, 0.0))
    )
    np.testing.assert_allclose(out_landmarks, landmarks + [0.3, 0.0], atol=1e-6)
    inside = out_landmarks[..., 0] <= 1.0
    assert (~inside).sum() > 10 and inside.sum() > 10
    np.testing.assert_array_equal(out_visible, visible & inside)  # pushed out: hidden; hidden before: still hidden
    assert not out_visible[~visible].any()
    np.testing.assert_allclose(out[:, :, 6:], images[:, :, :-6], atol=1e-3)
    assert (out[:, :, :6] == 0).all()  # fill_value 0 where the crop has no source


# --- noise and the settings string ----------------------------------------------------------


@pytest.mark.backend
def test_noise_is_standard_normal_and_reproducible():
    a = np.asarray(gaussian_noise(np.array([1, 2], np.uint32), (4, 64, 64, 3)))
    b = np.asarray(gaussian_noise(np.array([1, 2], np.uint32), (4, 64, 64, 3)))
    c = np.asarray(gaussian_noise(np.array([1, 3], np.uint32), (4, 64, 64, 3)))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.5
    values = a.reshape(-1)
    assert abs(values.mean()) < 0.02 and abs(values.std() - 1) < 0.02
    assert abs((np.abs(values) < 1).mean() - 0.6827) < 0.01
    assert abs((np.abs(values) < 2).mean() - 0.9545) < 0.005
    # Images and neighbouring pixels are uncorrelated (|r| of independent samples ~ 0.8 / sqrt(n)).
    correlation = np.corrcoef(a.reshape(4, -1))[~np.eye(4, dtype=bool)]
    assert np.abs(correlation).mean() < 2.5 / np.sqrt(a[0].size)
    assert abs(np.corrcoef(values[:-1], values[1:])[0, 1]) < 4 / np.sqrt(values.size)


def test_parse_the_documented_example():
    config = AugmentConfig.parse(
        "rotation=15,scale=0.1,translate=0.05,shear=5,flip=0.5,brightness=0.2,contrast=0.2,noise=5,occlusion=0.2"
    )
    assert config == AugmentConfig()
    assert AugmentConfig.parse("default") == AugmentConfig()
    assert AugmentConfig.parse(" none ") == AugmentConfig.none() and not AugmentConfig.none().enabled
    # the preset the README's fine-tuning runs used, spelt out
    light = AugmentConfig.parse("default,rotation=5,scale=0.05,translate=0.02,shear=0,occlusion=0")
    assert AugmentConfig.parse("light") == AugmentConfig.light() == light and light.enabled
    assert AugmentConfig.parse("light,rotation=10").rotation == 10 and light.rotation_p == AugmentConfig().rotation_p


def test_parse_probabilities_overrides_and_round_trips():
    config = AugmentConfig.parse("default,rotation=30@0.25,noise=0,fill_mode=nearest,occlusion_size=0.3")
    assert (config.rotation, config.rotation_p) == (30, 0.25)
    assert config.noise_p == 0 and config.fill_mode == "nearest" and config.occlusion_size == 0.3
    assert config.scale == 0.1 and config.flip == 0.5  # untouched defaults
    only = AugmentConfig.parse("rotation=10")
    assert only.rotation_p == AugmentConfig().rotation_p and only.flip == 0 and only.scale_p == 0
    for c in (config, only, AugmentConfig(), AugmentConfig.none(), AugmentConfig.light()):
        assert AugmentConfig.parse(c.to_string()) == c
        assert AugmentConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    "text, message",
    [
        ("rotation", "'rotation'.*missing '=value'"),
        ("heavy", "'heavy': not a preset \\(default, light, none\\) nor name=value tokens"),
        ("spin=3", "'spin=3'.*unknown name 'spin'"),
        ("rotation=abc", "'rotation=abc'.*'abc' is not a number"),
        ("flip=1.5", "flip=1.5.*probability"),
        ("rotation=15@2", "rotation_p=2.0.*probability"),
        ("flip=0.5@0.3", "'flip=0.5@0.3'.*only rotation"),
        ("rotation=200", "rotation=200.0.*\\[0.0, 180.0\\]"),
        ("scale=1.5", "scale=1.5"),
        ("rotation=5,rotation=6", "'rotation=6'.*twice"),
        ("rotation=5,default", "'default' must come first"),
        ("flip=1,light", "'light' must come first"),
        ("fill_mode=wrap", "fill_mode='wrap'"),
        ("rotation=nan", "'rotation=nan'.*not a finite"),
        ("", "empty augmentation string"),
        ("rotation=5,,flip=1", "empty token"),
    ],
)
def test_parse_rejects_bad_tokens_naming_them(text, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig.parse(text)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown augmentation config keys \\['spin'\\]"):
        AugmentConfig.from_dict({"rotation": 10, "spin": 3})


def with_names(names: tuple, *added: str) -> tuple:
    """``names`` and the names a test adds as docs/training.md's "Adding a transform" would, each once: a checkout
    that has added the doc's example (blur) already has it, and a name listed twice is written twice by to_string."""
    return tuple(dict.fromkeys(names + added))


def test_a_transform_without_a_default_probability_asks_for_one(monkeypatch):
    """A transform added with ``<name>_p = 0`` as its default: ``blur=2`` alone left it off without a word (its
    probability stayed 0 and the augmenter passed the batches through)."""
    import dataclasses

    from facelandmarks.data.augment import config as module

    @dataclasses.dataclass(frozen=True)
    class WithBlur(AugmentConfig):
        blur: float = 0.0
        blur_p: float = 0.0

    monkeypatch.setattr(module, "RANGED", with_names(module.RANGED, "blur"))
    monkeypatch.setitem(module._RANGE_LIMITS, "blur", (0.0, 5.0, "pixels"))
    with pytest.raises(ValueError, match=r"'blur=2'.*blur has no default probability; give one, blur=2@P"):
        WithBlur.parse("default,blur=2")
    assert WithBlur.parse("default,blur=2@0.3").blur_p == 0.3


@pytest.mark.parametrize("texts", [
    ("blur=2@0.3,blur_truncate=2", "default,blur_truncate=4", "blur_truncate=2.5", "light,blur=1@1"),  # ranged
    ("cutout=0.5,cutout_size=0.2", "default,cutout_size=0.1", "none,cutout_size=0.6"),  # probability only
])
def test_a_transform_added_as_docs_training_md_says_round_trips_with_its_second_setting(texts, monkeypatch):
    """docs/training.md "Adding a transform": the fields on AugmentConfig, the name in RANGED (or PROBABILITY_ONLY),
    the bounds in _RANGE_LIMITS, nothing else. to_string wrote a second setting (blur_truncate, cutout_size) only
    when it was added to its own list by hand: a config with one changed came back from parse -> to_string -> parse
    with its default."""
    import dataclasses

    from facelandmarks.data.augment import config as module

    @dataclasses.dataclass(frozen=True)
    class Added(AugmentConfig):
        blur: float = 1.5
        blur_p: float = 0.0
        blur_truncate: float = 3.0
        cutout: float = 0.0
        cutout_size: float = 0.3

    monkeypatch.setattr(module, "AugmentConfig", Added)  # the class the module's own methods name
    monkeypatch.setattr(module, "RANGED", with_names(module.RANGED, "blur"))
    monkeypatch.setattr(module, "PROBABILITY_ONLY", with_names(module.PROBABILITY_ONLY, "cutout"))
    monkeypatch.setitem(module._RANGE_LIMITS, "blur", (0.0, 5.0, "pixels: largest gaussian sigma"))
    for text in texts:
        config = Added.parse(text)
        assert Added.parse(config.to_string()) == config, (text, config.to_string())
    assert Added.parse(Added.none().to_string()) == Added.none()
    assert Added.parse(Added().to_string()) == Added()


def test_a_seeds_draws_stay_as_they_were():
    """Each batch's parameters come from (seed, epoch, batch index); a transform added later draws after the others,
    so the batches of an existing seed and spec do not change (a new draw in the middle would shift all that follow)."""
    rng = np.random.default_rng([0, 3, 7, 1])  # LandmarkBatches' generator of batch 7 of epoch 3, seed 0
    params = Augmenter(AugmentConfig(), "ibug68", compile=False).sample_params(4, 64, rng=rng)
    np.testing.assert_array_equal(params["flip"], [False, True, False, True])
    np.testing.assert_allclose(params["points"][:, 0, 2], [0.0922, 0.9314, -0.058, 0.9009], atol=1e-4)
    np.testing.assert_allclose(params["brightness"], [-11.2053, 0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(params["noise_std"], [0, 0, 2.3657, 0], atol=1e-4)
    np.testing.assert_array_equal(params["noise_key"], [3175276043, 1540667781])


def test_train_py_refuses_a_bad_spec_in_one_line_before_reading_the_data(tmp_path, capsys):
    """The spec is checked with the other settings: it was parsed only when the augmenter was built, after the data
    was read, the model built and the run folder's config.json written."""
    from facelandmarks.cli.train import main

    run = tmp_path / "run"
    code = main(["mlp", "--data", str(tmp_path / "missing.npz"), "--run-dir", str(run), "--augment",
                 "default,rotation=200"])
    err = capsys.readouterr().err
    assert code == 2 and not run.exists()
    assert err.startswith("train.py: --augment: ") and err.count("\n") == 1, err
    assert "rotation=200.0 must be in [0.0, 180.0] (degrees)" in err
    with pytest.raises(ValueError, match="--augment: .*'spin=3'.*unknown name"):
        TrainConfig(model="mlp", data="a.npz", run_dir="run", augment="default,spin=3").validate()
    TrainConfig(model="mlp", data="a.npz", run_dir="run", augment="none").validate()


@pytest.mark.backend
def test_a_shards_smaller_last_batch_reuses_the_full_batches_compiled_transform(tmp_path, monkeypatch):
    """train.py --data X.shards.json said "WARNING:tensorflow:5 out of the last 12 calls to augment_batch triggered
    tf.function retracing": each shard's last batch has a size of its own, and each size was traced and compiled
    again (under jax.jit too). The loader now has such a batch computed at its batch size, with the same numbers."""
    from facelandmarks.data import npz
    from facelandmarks.data.augment import augmenter as module
    from facelandmarks.data.feeding import FaceParts, LandmarkBatches

    traced, apply_augmentation = [], module.apply_augmentation

    def counted(images, *args):  # the traced function: runs once per trace (per compile under jax.jit)
        traced.append(images.shape[0])
        return apply_augmentation(images, *args)

    monkeypatch.setattr(module, "apply_augmentation", counted)
    module._augmentation_function.cache_clear()  # earlier tests' traces
    images, landmarks, visible = synthetic_batch("ibug68", batch=12, seed=4)
    whole = {"images": images, "landmarks": landmarks, "visible": visible, "scheme": np.array("ibug68"),
             "subject": np.array([f"s{i}" for i in range(12)]), "box": np.tile(np.float32([0, 0, SIZE, SIZE]), (12, 1))}
    shards = []
    for i, rows in enumerate((np.arange(7), np.arange(7, 12))):  # batches of 4: 4 + 3, then 4 + 1
        npz.save_npz(npz.shard_path(tmp_path / "s_train", i), npz.subset(whole, rows))
        shards.append({"file": npz.shard_path(tmp_path / "s_train", i), "faces": len(rows)})
    train = npz.ShardSet(npz.write_manifest(tmp_path / "s_train.shards.json", shards, "ibug68", images.shape[1:]))
    config = AugmentConfig.parse("rotation=20,scale=0.1,flip=0.5,brightness=0.2,noise=1,occlusion=1")  # one trace kind
    batches = LandmarkBatches(FaceParts(train, None), 4, augmenter=Augmenter(config, "ibug68"), seed=1)
    out = [batches[i] for i in range(len(batches))]
    assert sorted(len(x) for x, _ in out) == [1, 3, 4, 4]
    assert traced == [4]
    module._augmentation_function.cache_clear()
    # the same numbers as the batch augmented at its own size (XLA may round a warped pixel's last bit otherwise
    # at another batch shape: 1.5e-05 at most on JAX, none on TensorFlow, when this was written)
    for i, (part, rows) in enumerate(batches.plan):
        inputs, points, shown = batches.parts.get(part)
        rng = np.random.default_rng([1, 0, i, 1])  # LandmarkBatches' generator of batch i of epoch 0, seed 1
        x, y, seen = Augmenter(config, "ibug68")(inputs[rows], points[rows], shown[rows], rng=rng)
        np.testing.assert_allclose(out[i][0], x, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out[i][1], batches._pack(y, seen))
    module._augmentation_function.cache_clear()
