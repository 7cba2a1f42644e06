"""Cell layer conversions (numpy only, no viewer)."""

import numpy as np
from scipy import ndimage as ndi

from helpers import ellipse_mask
from napari_amodal._napari.layers import cell_layer_data, cell_layer_to_frames, track_colour
from napari_amodal.instances import FrameInstances


def _boundary_band(mask, width=1):
    """Pixels within `width` px of the mask's boundary (inside or outside)."""
    return ndi.binary_dilation(mask, iterations=width) & ~ndi.binary_erosion(mask, iterations=width)


def _stack():
    shape = (80, 90)
    frames = []
    for t in range(3):
        masks = np.stack([
            ellipse_mask(shape, (40, 30 + t), (18, 12), 0.3),
            ellipse_mask(shape, (42, 50), (15, 20), 1.0),
        ])
        frames.append(FrameInstances.from_masks(masks, scores=[0.9, 0.6], track_ids=[4, 7], file_name="e.tif", frame=t))
    return frames


def test_cells_round_trip_within_one_pixel():
    frames = _stack()
    data, kwargs, kind = cell_layer_data(frames)
    assert kind == "shapes" and kwargs["ndim"] == 3 and len(data) == 6
    assert {int(d[0, 0]) for d in data} == {0, 1, 2}
    back = cell_layer_to_frames(data, kwargs["features"], kwargs["metadata"], ["polygon"] * len(data))
    assert len(back) == 3
    for f, b in zip(frames, back):
        np.testing.assert_array_equal(b.track_ids, f.track_ids)
        np.testing.assert_allclose(b.scores, f.scores)
        for m, mb in zip(f.masks, b.masks):
            diff = m ^ mb
            # conversion loses at most one pixel: every differing pixel touches the boundary
            assert (diff <= _boundary_band(m)).all()
            assert diff.sum() <= 0.02 * m.sum()


def test_overlapping_cells_keep_distinct_track_colours():
    data, kwargs, _ = cell_layer_data(_stack())
    feats = kwargs["features"]
    a = kwargs["edge_color"][feats["cell_id"] == 4]
    b = kwargs["edge_color"][feats["cell_id"] == 7]
    assert (a == a[0]).all() and (b == b[0]).all()  # same colour through time
    assert np.abs(a[0] - b[0]).sum() > 0.3
    assert not np.allclose(track_colour(1), track_colour(2))


def test_hand_drawn_shapes_get_new_ids_and_ellipses_rasterise():
    frames = _stack()[:1]
    data, kwargs, _ = cell_layer_data(frames, stack=False)
    # a hand-drawn ellipse (napari stores its 4 box corners) with no feature row
    corners = np.array([[10.0, 60.0], [30.0, 60.0], [30.0, 84.0], [10.0, 84.0]])
    data = data + [corners]
    back = cell_layer_to_frames(data, kwargs["features"], kwargs["metadata"], ["polygon"] * 2 + ["ellipse"])
    f = back[0]
    assert len(f) == 3 and len(set(f.track_ids.tolist())) == 3
    area = f.masks[2].sum()
    assert abs(area - np.pi * 10 * 12) < 0.08 * np.pi * 10 * 12
    assert f.masks[2][20, 72] and not f.masks[2][11, 61]


def test_frames_without_cells_keep_integer_features():
    """A frame with no cells must not turn the id / frame / area columns into floats."""
    from napari_amodal._napari.widgets._common import SegmentationResult
    from napari_amodal.instances import FrameInstances

    masks = np.zeros((1, 20, 20), bool)
    masks[0, 5:12, 4:15] = True
    full = FrameInstances.from_masks(masks, frame=1, track_ids=np.array([7]))
    empty = FrameInstances.empty((20, 20), frame=0)
    result = SegmentationResult.from_frames([empty, full], stack=True, name="cells")
    _, kwargs, _ = result.layer_tuple()
    for key in ("cell_id", "area", "frame", "label", "parent_id"):
        assert kwargs["features"][key].dtype == np.int64, key
    assert kwargs["features"]["cell_id"].tolist() == [7] and kwargs["features"]["frame"].tolist() == [1]
    assert result.frames == [0, 1] and result.n_cells == 1


def test_occlusion_stack_holds_the_frames_added_and_zeros_elsewhere():
    from napari_amodal._napari.widgets._common import SegmentationResult
    from napari_amodal.instances import FrameInstances

    masks = np.zeros((2, 20, 20), bool)
    masks[0, 2:12, 2:12] = masks[1, 8:18, 8:18] = True  # overlap at 8..11
    result = SegmentationResult(stack=True, name="cells")
    result.add(FrameInstances.from_masks(masks, frame=3))
    first = result.occlusion_stack(6)
    assert first.shape == (6, 20, 20) and first.dtype == np.float32
    assert first[3, 8:12, 8:12].min() == 1 and first[3].sum() == 16 and first[[0, 1, 2, 4, 5]].sum() == 0
    assert result.occlusion_stack(6) is first  # built once (in the worker), only shown after
    result.add(FrameInstances.from_masks(masks, frame=5))
    assert result.occlusion_stack(6)[5].sum() == 16  # a frame added later is in it
