"""Overlay pictures: outlines drawn in each cell's box equal those drawn over the whole frame."""

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from helpers import disk_mask, ellipse_mask
from napari_amodal.instances import FrameInstances
from napari_amodal.overlay import draw_instances, montage, to_rgb8, track_colour, write_png


def _frame_with_cells(shape=(96, 120)):
    masks = np.stack([
        disk_mask(shape, (40, 50), 22),
        ellipse_mask(shape, (50, 70), (20, 28), rotation=0.4),
        disk_mask(shape, (3, 4), 9),  # cut by the top-left corner
        disk_mask(shape, (94, 118), 12),  # cut by the bottom-right corner
        np.zeros(shape, bool),  # empty: nothing drawn
    ])
    return FrameInstances.from_masks(masks, track_ids=np.array([3, 7, -1, 12, 5]))


def _whole_frame_reference(frame, inst, thickness):
    """The outline as defined: inner boundary over the full frame, thickened inside the mask."""
    rgb = to_rgb8(frame).astype(np.float32)
    occ = inst.occlusion_map() >= 0.5
    rgb[occ] = 0.7 * rgb[occ] + 0.3 * np.array([255, 0, 255])
    for i in range(len(inst)):
        tid = int(inst.track_ids[i]) if inst.track_ids[i] >= 0 else i + 1
        edge = find_boundaries(inst.masks[i], mode="inner")
        if thickness > 1:
            edge = ndi.binary_dilation(edge, iterations=thickness - 1) & inst.masks[i]
        rgb[edge] = track_colour(tid)[:3] * 255
    return rgb.astype(np.uint8)


@pytest.mark.parametrize("thickness", [1, 2, 3])
def test_outlines_drawn_in_boxes_equal_the_whole_frame_drawing(thickness):
    inst = _frame_with_cells()
    frame = np.random.default_rng(0).integers(0, 4000, inst.shape).astype(np.uint16)
    got = draw_instances(frame, inst, thickness=thickness)
    want = _whole_frame_reference(frame, inst, thickness)
    assert got.dtype == np.uint8 and got.shape == (*inst.shape, 3)
    np.testing.assert_array_equal(got, want)
    # the cell cut by the corner is outlined (in the colour of its index: it has no track)
    colour = (track_colour(3)[:3] * 255).astype(np.uint8)
    assert (got[:13, :14] == colour).all(-1).sum() >= 10


def test_png_is_lossless(tmp_path):
    inst = _frame_with_cells()
    tiles = [draw_instances(np.full(inst.shape, k * 40, np.uint8), inst) for k in range(5)]
    picture = montage(tiles, columns=2)
    write_png(tmp_path / "o.png", picture)
    np.testing.assert_array_equal(iio.imread(tmp_path / "o.png"), picture)


def test_nan_and_inf_pixels_are_drawn_without_spoiling_the_frame():
    import warnings

    frame = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (48, 1))
    bad = frame.copy()
    bad[5, 5], bad[6, 6], bad[7, 7] = np.nan, np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid cast would warn
        got = to_rgb8(bad)
    np.testing.assert_array_equal(np.delete(got.reshape(-1, 3), [5 * 64 + 5, 6 * 64 + 6, 7 * 64 + 7], 0),
                                  np.delete(to_rgb8(frame).reshape(-1, 3), [5 * 64 + 5, 6 * 64 + 6, 7 * 64 + 7], 0))
    assert got[6, 6].min() == 255 and got[7, 7].max() == 0
