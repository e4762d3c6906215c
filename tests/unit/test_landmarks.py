"""Landmark schemes on synthetic points: permutations, normalising points, regions, region and box schemes.

The permutations against real mirrored faces are in ``tests/data/test_landmarks.py``.
"""

import numpy as np
import pytest

from facelandmarks import landmarks
from facelandmarks.landmarks import (
    REFINED_REGIONS,
    SCHEMES,
    Scheme,
    box_scheme,
    get_scheme,
    mirror_landmarks,
    mirror_pixel_landmarks,
)

# Every built-in scheme, each region of each as a scheme of its own, and each one's region boxes.
ALL_SCHEME_NAMES = sorted(
    [*SCHEMES]
    + [f"{name}/{region}" for name, scheme in SCHEMES.items() for region in scheme.regions]
    + [f"{name}/boxes" for name in SCHEMES]
)


def test_schemes_are_consistent():
    for scheme in SCHEMES.values():
        covered = sorted(i for pts in scheme.regions.values() for i in pts)
        assert len(covered) == len(set(covered)), f"{scheme.name}: a point is in two regions"
        # mirroring maps each region onto itself or onto its left/right twin
        for region, pts in scheme.regions.items():
            twin = region.replace("left", "@").replace("right", "left").replace("@", "right")
            assert sorted(scheme.mirror[p] for p in pts) == sorted(scheme.regions[twin]), (scheme.name, region)


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown landmark scheme 'ibug69'.*ibug68"):
        get_scheme("ibug69")


@pytest.mark.parametrize("name", ALL_SCHEME_NAMES)
def test_mirror_twice_is_identity(name):
    scheme = get_scheme(name)
    k = scheme.num_points
    perm = scheme.mirror_array
    np.testing.assert_array_equal(perm[perm], np.arange(k))
    rng = np.random.default_rng(0)
    pts = rng.random((3, k, 2)).astype(np.float32)
    vis = rng.random((3, k)) > 0.2
    p1, v1 = mirror_landmarks(pts, vis, name)
    np.testing.assert_allclose(p1[..., 0], 1 - pts[:, perm, 0], atol=1e-6)
    np.testing.assert_array_equal(p1[..., 1], pts[:, perm, 1])
    np.testing.assert_array_equal(v1, vis[:, perm])
    p2, v2 = mirror_landmarks(p1, v1, scheme)
    np.testing.assert_allclose(p2, pts, atol=1e-6)
    np.testing.assert_array_equal(v2, vis)
    pixels = rng.uniform(0, 99, (k, 2))
    np.testing.assert_allclose(mirror_pixel_landmarks(mirror_pixel_landmarks(pixels, scheme, 100), scheme, 100), pixels)


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_pixel_mirror_is_the_normalised_mirror(name):
    """x' = W - 1 - x on pixels is u' = 1 - u on normalised coordinates u = (x + 0.5) / W."""
    k, width = SCHEMES[name].num_points, 480
    pixels = np.random.default_rng(1).uniform(0, width - 1, (k, 2))
    as_crop = (pixels + 0.5) / width
    mirrored, _ = mirror_landmarks(as_crop, np.ones(k, bool), name)
    np.testing.assert_allclose((mirror_pixel_landmarks(pixels, name, width) + 0.5) / width, mirrored, atol=1e-6)


# Left/right twins and midline points read off each markup's documentation.
KNOWN_TWINS = {
    "ibug68": {"pairs": [(36, 45), (39, 42), (0, 16), (48, 54), (17, 26), (31, 35)], "midline": [8, 27, 30, 33, 51, 57, 62, 66]},
    "muct76": {"pairs": [(27, 32), (31, 36), (0, 14), (48, 54), (46, 47)], "midline": [7, 41, 51, 57, 67]},
    "wflw98": {"pairs": [(60, 72), (96, 97), (0, 32), (76, 82), (33, 46)], "midline": [16, 51, 54, 57, 79, 85, 90, 94]},
    "kaggle15": {"pairs": [(0, 1), (3, 5), (11, 12)], "midline": [10, 13, 14]},
}


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_known_twins_swap_and_the_midline_stays(name):
    scheme = SCHEMES[name]
    for a, b in KNOWN_TWINS[name]["pairs"]:
        assert (scheme.mirror[a], scheme.mirror[b]) == (b, a), (a, b)
    for p in KNOWN_TWINS[name]["midline"]:
        assert scheme.mirror[p] == p, p
    # the normalising points (and pupils) are a left/right pair, in the two eye regions
    for pair in (scheme.norm_points, scheme.pupils):
        if pair is not None:
            a, b = pair
            assert scheme.mirror[a] == b
            assert {scheme.region_of()[a], scheme.region_of()[b]} == {"left_eye", "right_eye"}


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_point_of_a_builtin_scheme_is_in_a_region(name):
    scheme = SCHEMES[name]
    regions = scheme.region_of()
    assert regions.shape == (scheme.num_points,) and "" not in set(regions)
    for region, points in scheme.regions.items():
        assert set(regions[list(points)]) == {region}


def test_scheme_refuses_a_mirror_that_is_not_an_involution():
    with pytest.raises(ValueError, match="'bad': mirror is not a permutation of 0..2"):
        Scheme(name="bad", num_points=3, mirror=(0, 0, 1), norm_points=None, pupils=None)
    with pytest.raises(ValueError, match="'bad': mirror is not an involution"):
        Scheme(name="bad", num_points=3, mirror=(1, 2, 0), norm_points=None, pupils=None)
    with pytest.raises(ValueError, match="'bad': point index 3 outside 0..2"):
        Scheme(name="bad", num_points=3, mirror=(0, 1, 2), norm_points=(0, 3), pupils=None)
    with pytest.raises(ValueError, match="'bad': region 'eye' has bad indices"):
        Scheme(name="bad", num_points=3, mirror=(0, 1, 2), norm_points=None, pupils=None, regions={"eye": (1, 5)})


def test_derived_region_and_box_schemes():
    eye = get_scheme("ibug68/left_eye")
    assert eye.num_points == 6 and eye.norm_points is None
    boxes = get_scheme("muct76/boxes")
    assert boxes.num_points == 4 * len(landmarks.REFINED_REGIONS)
    # mirroring box corners of a face equals the boxes of the mirrored face
    rng = np.random.default_rng(3)
    points = rng.random((68, 2)).astype(np.float32)
    scheme = get_scheme("ibug68/boxes")

    def corners(pts):
        out = []
        for region in landmarks.REFINED_REGIONS:
            p = pts[list(landmarks.IBUG68.regions[region])]
            (x0, y0), (x1, y1) = p.min(0), p.max(0)
            out += [(x0, y0), (x1, y0), (x0, y1), (x1, y1)]
        return np.array(out, np.float32)

    mirrored_face, _ = mirror_landmarks(points, np.ones(68, bool), "ibug68")
    mirrored_boxes, _ = mirror_landmarks(corners(points), np.ones(scheme.num_points, bool), scheme)
    np.testing.assert_allclose(mirrored_boxes, corners(mirrored_face), atol=1e-6)
    with pytest.raises(ValueError, match="no region 'ears'"):
        get_scheme("ibug68/ears")


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_region_scheme_numbers_the_regions_points(name):
    for region, points in SCHEMES[name].regions.items():
        scheme = get_scheme(f"{name}/{region}")
        assert scheme.name == f"{name}/{region}" and scheme.num_points == len(points)
        assert scheme.mirror == tuple(range(len(points)))  # a lone region is never mirrored onto itself
        assert scheme.regions == {region: tuple(range(len(points)))}
        assert scheme.norm_points is None and scheme.pupils is None


def test_box_scheme_layout_and_mirror_indices():
    scheme = get_scheme("wflw98/boxes")
    assert scheme.name == "wflw98/boxes" and scheme.num_points == 24
    assert list(scheme.regions) == list(REFINED_REGIONS)
    assert scheme.regions["right_eye"] == (8, 9, 10, 11)  # point 4 r + c: corner c of region r
    # right_brow's top-left corner becomes left_brow's top-right; the nose box only swaps its own corners
    assert scheme.mirror[0] == 4 + 1 and scheme.mirror[3] == 4 + 2
    assert scheme.mirror[16:20] == (17, 16, 19, 18)
    assert box_scheme("ibug68", ["mouth"]).mirror == (1, 0, 3, 2)
    assert box_scheme("ibug68", ["left_eye", "right_eye"]).mirror == (5, 4, 7, 6, 1, 0, 3, 2)
    with pytest.raises(ValueError, match="scheme ibug68 has no region 'ears'"):
        box_scheme("ibug68", ["nose", "ears"])


@pytest.mark.parametrize("name", [name for name in sorted(SCHEMES) if SCHEMES[name].ibug68 is not None])
def test_a_builtin_schemes_ibug68_mirrors_as_both_markups_pair_their_points(name):
    """Where a built-in markup says its points lie in iBUG 68 (kaggle15), a mirrored face's points are the mirrored
    iBUG 68 points (or their means): the mapping agrees with both markups' pairs."""
    scheme, ibug = SCHEMES[name], SCHEMES["ibug68"]
    assert len(scheme.ibug68) == scheme.num_points
    for i, group in enumerate(scheme.ibug68):
        assert sorted(ibug.mirror[j] for j in group) == sorted(scheme.ibug68[scheme.mirror[i]]), scheme.point_label(i)
    assert "kaggle15" in [name for name in SCHEMES if SCHEMES[name].ibug68 is not None]
