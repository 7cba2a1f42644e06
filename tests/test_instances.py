import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import disk_mask, ellipse_mask
from napari_amodal.instances import (
    FrameInstances,
    layers_to_masks,
    mask_iou,
    mask_to_polygons,
    masks_to_boxes,
    masks_to_layers,
    occlusion_from_masks,
    polygons_to_mask,
    rles_to_masks,
)

SHAPE = (64, 80)


@st.composite
def overlapping_masks(draw, min_n=0, max_n=8, min_radius=2, max_radius=20):
    """Random ellipses that may overlap, may touch the border, never empty."""
    n = draw(st.integers(min_n, max_n))
    masks = []
    for _ in range(n):
        cy = draw(st.integers(0, SHAPE[0] - 1))
        cx = draw(st.integers(0, SHAPE[1] - 1))
        ry = draw(st.integers(min_radius, max_radius))
        rx = draw(st.integers(min_radius, max_radius))
        rot = draw(st.floats(0, np.pi))
        m = ellipse_mask(SHAPE, (cy, cx), (ry, rx), rot)
        if not m.any():
            m[cy, cx] = True
        masks.append(m)
    return np.array(masks, bool).reshape(n, *SHAPE)


def test_boxes_are_tight_and_exclusive():
    m = np.zeros((1, 10, 12), bool)
    m[0, 3, 5] = True
    m[0, 6, 8] = True
    np.testing.assert_array_equal(masks_to_boxes(m), [[5, 3, 9, 7]])


def test_frame_validates_lengths(two_cells):
    with pytest.raises(ValueError, match="scores"):
        FrameInstances.from_masks(two_cells.masks, scores=[1.0])


def test_empty_frame_keeps_its_shape():
    f = FrameInstances.empty((30, 40))
    assert len(f) == 0 and f.shape == (30, 40)
    assert f.to_rles() == []
    assert f.to_layers().shape == (1, 30, 40)
    assert not f.occlusion_map().any()


def test_select_and_areas(two_cells):
    sub = two_cells.select(np.array([False, True, True]))
    assert list(sub.track_ids) == [2, 3]
    assert sub.areas[0] == two_cells.masks[1].sum()


def test_occlusion_is_pairwise_overlap(two_cells):
    occ = occlusion_from_masks(two_cells.masks)
    np.testing.assert_array_equal(occ, two_cells.masks[0] & two_cells.masks[1])
    assert occ.any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overlapping_masks())
def test_rle_round_trip_is_exact(masks):
    f = FrameInstances.from_masks(masks, shape=SHAPE)
    back = FrameInstances.from_rles(f.to_rles(), SHAPE)
    np.testing.assert_array_equal(back.masks, masks)
    np.testing.assert_array_equal(back.boxes, f.boxes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overlapping_masks(min_n=1, min_radius=5))
def test_polygon_round_trip_keeps_iou(masks):
    # cells at least 10 px across: radius >= 5
    f = FrameInstances.from_masks(masks, shape=SHAPE)
    back = FrameInstances.from_polygons(f.to_polygons(), SHAPE)
    ious = np.diag(mask_iou(masks, back.masks))
    assert ious.min() >= 0.97, ious


def test_polygon_round_trip_of_a_disk_is_pixel_exact():
    m = disk_mask((50, 50), (25, 25), 12)
    polys = mask_to_polygons(m)
    assert len(polys) == 1
    np.testing.assert_array_equal(polygons_to_mask(polys, m.shape), m)


def test_polygon_of_ring_keeps_hole():
    m = disk_mask((50, 50), (25, 25), 15) & ~disk_mask((50, 50), (25, 25), 6)
    back = polygons_to_mask(mask_to_polygons(m), m.shape)
    assert not back[25, 25]
    assert mask_iou(m[None], back[None])[0, 0] >= 0.97


def _chromatic_number(masks):
    """Brute force: smallest k with a proper colouring of the overlap graph."""
    import itertools

    n = len(masks)
    if n == 0:
        return 1
    flat = masks.reshape(n, -1)
    overlaps = [(i, j) for i in range(n) for j in range(i + 1, n) if (flat[i] & flat[j]).any()]
    for k in range(1, n + 1):
        for colours in itertools.product(range(k), repeat=n):
            if all(colours[i] != colours[j] for i, j in overlaps):
                return k
    return max(n, 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overlapping_masks(max_n=7))
def test_layers_round_trip_exact_and_fewest_planes(masks):
    f = FrameInstances.from_masks(masks, shape=SHAPE, track_ids=np.arange(10, 10 + len(masks)))
    layers = f.to_layers(values=f.track_ids)
    # no plane holds two cells on one pixel: every cell's pixels on its plane carry its label
    values, back = layers_to_masks(layers)
    np.testing.assert_array_equal(values, f.track_ids)
    np.testing.assert_array_equal(back, masks)
    assert len(layers) == max(1, _chromatic_number(masks))
    again = FrameInstances.from_layers(layers)
    np.testing.assert_array_equal(again.masks, masks)
    np.testing.assert_array_equal(again.track_ids, f.track_ids)


def test_layers_reject_duplicate_values(two_cells):
    with pytest.raises(ValueError, match="unique"):
        masks_to_layers(two_cells.masks, values=[1, 1, 2])


def test_rle_size_mismatch_is_an_error(two_cells):
    with pytest.raises(ValueError, match="does not match"):
        rles_to_masks(two_cells.to_rles(), (10, 10))


def test_mask_iou_known_values():
    a = np.zeros((1, 10, 10), bool)
    b = np.zeros((2, 10, 10), bool)
    a[0, :, :5] = True
    b[0, :, :5] = True
    b[1, :, 5:] = True
    np.testing.assert_allclose(mask_iou(a, b), [[1.0, 0.0]])


@pytest.mark.parametrize("tolerance", [0.0, 0.4])
def test_outlines_traced_in_the_box_equal_those_traced_over_the_frame(tolerance):
    from skimage import measure

    shape = (80, 100)
    ring = disk_mask(shape, (40, 50), 20) & ~disk_mask(shape, (40, 50), 8)  # a hole: two contours
    masks = [ring, disk_mask(shape, (2, 3), 9), disk_mask(shape, (78, 98), 6) | disk_mask(shape, (10, 90), 4)]
    for m in masks:
        want = []
        for c in measure.find_contours(np.pad(m, 1).astype(np.float32), 0.5):  # the whole frame, as defined
            c = c - 1.0
            c = measure.approximate_polygon(c, tolerance) if tolerance > 0 else c
            c = c[:-1] if np.allclose(c[0], c[-1]) else c
            want.append(c.astype(np.float32))
        got = mask_to_polygons(m, tolerance=tolerance)
        assert len(got) == len(want) >= 1
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**31 - 1), st.integers(3, 300), st.sampled_from([0.3, 0.7, 2.0]), st.booleans())
def test_simplify_outline_keeps_the_vertices_scikit_image_keeps(seed, n, tolerance, closed):
    from skimage.measure import approximate_polygon

    from napari_amodal.instances import simplify_outline

    chain = np.cumsum(np.random.default_rng(seed).normal(size=(n, 2)), 0)
    if closed:  # outlines come closed: first vertex repeated at the end
        chain = np.vstack([chain, chain[:1]])
    np.testing.assert_array_equal(simplify_outline(chain, tolerance), approximate_polygon(chain, tolerance))
