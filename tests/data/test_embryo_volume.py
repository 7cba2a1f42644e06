"""The second embryo family: exact, self-consistent ground truth and its coverage."""

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_amodal.data.embryo_volume import VolumeStyle, render_volume_sequence, write_volume_dataset
from napari_amodal.instances import masks_to_boxes


@pytest.fixture(scope="module")
def growing():
    style = replace(VolumeStyle.sample(np.random.default_rng(4), 256), empty=False, compacts=False,
                    center_frac=(0.5, 0.5), bit_depth=12)
    return render_volume_sequence(11, n_frames=8, start_cells=1, end_cells=6, style=style, file_name="v.tif")


def test_same_seed_same_sequence():
    a_img, a_fr = render_volume_sequence(3, n_frames=3, start_cells=2, end_cells=3, size=256)
    b_img, b_fr = render_volume_sequence(3, n_frames=3, start_cells=2, end_cells=3, size=256)
    np.testing.assert_array_equal(a_img, b_img)
    for a, b in zip(a_fr, b_fr):
        np.testing.assert_array_equal(a.masks, b.masks)


def test_ground_truth_is_consistent(growing):
    images, frames = growing
    assert images.shape == (8, 256, 256) and images.dtype == np.uint16 and images.max() <= 4095
    counts = [len(f) for f in frames]
    assert counts[0] == 1 and counts[-1] == 6 and counts == sorted(counts)  # zygote -> 6 cells, never fewer
    for f in frames:
        assert f.meta["state"] == "cells" and f.file_name == "v.tif"
        np.testing.assert_array_equal(f.boxes, masks_to_boxes(f.masks))
        assert (f.visible <= f.masks).all()  # visible part inside the amodal mask
        assert (f.visible.sum(0) <= 1).all()  # one front-most cell per pixel
        np.testing.assert_array_equal(f.visible.any(0), f.masks.any(0))
        assert len(set(f.track_ids.tolist())) == len(f)
    # a new track is born from a mother that existed before and is gone after
    for prev, cur in zip(frames, frames[1:]):
        for tid, parent in zip(cur.track_ids, cur.parent_ids):
            if tid not in prev.track_ids:
                assert parent in prev.track_ids and parent not in cur.track_ids


def test_overlapping_cells_hide_each_other(growing):
    _, frames = growing
    last = frames[-1]
    hidden = (last.masks & ~last.visible).sum((1, 2))
    assert hidden.max() > 0  # amodal masks extend behind neighbours
    assert (last.masks.sum(0) >= 2).any()


def test_cell_outlines_are_not_ellipses(growing):
    """Footprints carry Fourier modes and contact flattening: the ellipse of the same
    second moments misses pixels, unlike the hoffman family's exact ellipses."""
    from skimage.draw import ellipse
    from skimage.measure import regionprops

    _, frames = growing
    ious = []
    for m in frames[-1].masks:
        r = regionprops(m.astype(np.uint8))[0]
        fit = np.zeros_like(m)
        rr, cc = ellipse(*r.centroid, r.axis_major_length / 2, r.axis_minor_length / 2, m.shape,
                         rotation=r.orientation)
        fit[rr, cc] = True
        ious.append((fit & m).sum() / (fit | m).sum())
    assert min(ious) < 0.97 and max(ious) > 0.85  # not ellipses, but cell-like


def test_empty_and_compacted_frames_have_no_cells():
    base = replace(VolumeStyle.sample(np.random.default_rng(0), 256), center_frac=(0.5, 0.5))
    _, empty = render_volume_sequence(1, n_frames=2, style=replace(base, empty=True))
    assert [f.meta["state"] for f in empty] == ["empty", "empty"] and all(len(f) == 0 for f in empty)
    _, frames = render_volume_sequence(1, n_frames=8, start_cells=8, end_cells=12,
                                       style=replace(base, empty=False, compacts=True))
    states = [f.meta["state"] for f in frames]
    assert states[0] == "cells" and states[-1] == "compacted"
    assert all(len(f) == 0 for f in frames if f.meta["state"] == "compacted")
    assert len(frames[0]) >= 8


def test_styles_cover_the_protocol():
    styles = [VolumeStyle.sample(np.random.default_rng(s)) for s in range(400)]
    assert {s.microscope for s in styles} == {"dic", "phase", "brightfield"}
    assert {s.bit_depth for s in styles} == {8, 12, 16}
    sizes = [s.size for s in styles]
    assert min(sizes) == 256 and max(sizes) == 1024
    assert {np.sign(s.bias) for s in styles} == {-1.0, 1.0}  # both relief polarities
    assert any(s.empty for s in styles) and any(s.compacts for s in styles)
    assert any(abs(s.center_frac[0] - 0.5) > 0.3 for s in styles)  # partly outside the frame
    span = [s.um_per_px * s.size for s in styles]  # field of view, um
    assert max(span) / min(span) > 3  # zoom 0.5x .. 2x


def test_dataset_records_frame_states(tmp_path):
    from napari_amodal.data.coco import read_amodal

    path = write_volume_dataset(tmp_path, n_sequences=2, n_frames=2, seed=5, size=256, start_cells=1, end_cells=2)
    d = json.loads(path.read_text())
    assert {im["state"] for im in d["images"]} <= {"cells", "compacted", "empty"}
    assert len(d["images"]) == 4 and d["info"]["generator"] == "embryo_volume"
    frames, _ = read_amodal(path)
    assert [f.file_name for f in frames] == ["volume_0000.tif"] * 2 + ["volume_0001.tif"] * 2
