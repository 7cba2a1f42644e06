"""Corrections offered for the following frames, in the Proofread dock (real viewer, Xvfb)."""

import numpy as np
import pytest
from helpers import disk_mask

from napari_amodal._napari.layers import cell_layer_data
from napari_amodal._napari.widgets import ProofreadWidget
from napari_amodal.instances import FrameInstances, mask_iou

pytestmark = pytest.mark.gui

SHAPE, T = (96, 128), 8
SPURIOUS = disk_mask(SHAPE, (75, 60), 8)  # a cell the model invented in frames 0-5


def _cell(t):  # a real cell moving right 2 px a frame
    return disk_mask(SHAPE, (40, 30 + 2 * t), 12)


def _other(t):  # a real cell the model misses in frames 0-4
    return disk_mask(SHAPE, (30 + t, 95), 10)


@pytest.fixture
def proofread(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    images = np.random.default_rng(0).normal(100, 3, (T, *SHAPE))
    for t in range(T):
        images[t][_cell(t)] += 80
        images[t][_other(t)] += 60
    viewer.add_image(images.astype(np.float32), name="embryo")
    frames = [FrameInstances.from_masks(np.stack([_cell(t)] + ([SPURIOUS] if t < 6 else []) + ([_other(t)] if t >= 5 else [])),
                                        track_ids=[1] + ([2] if t < 6 else []) + ([3] if t >= 5 else []), frame=t)
              for t in range(T)]
    data, kwargs, _ = cell_layer_data(frames, stack=True, name="cells")
    viewer.add_shapes(data, **kwargs)
    p = ProofreadWidget(viewer)
    p.image.setCurrentText("embryo")
    return viewer, p, errors


def _cells_in(layer, t, cell_id=None):
    feats = layer.features
    keep = feats["frame"] == t
    if cell_id is not None:
        keep &= feats["cell_id"] == cell_id
    return int(keep.sum())


def _delete_spurious_in_frame_1(p, qtbot):
    """Delete the invented cell (id 2) in frame 1 and wait for the offer."""
    feats = p.layer.features
    p.layer.selected_data = {int(np.flatnonzero((feats["frame"] == 1) & (feats["cell_id"] == 2))[0])}
    p.delete_selected()
    qtbot.waitUntil(lambda: p.offers.result is not None, timeout=20_000)


def _offer_shown(viewer) -> bool:
    return "offer: cells" in viewer.layers and len(viewer.layers["offer: cells"].data) > 0


def _press(viewer, key):
    from napari.utils.key_bindings import KeyBinding

    viewer.keymap[KeyBinding.from_str(key)](viewer)


def test_a_deletion_is_offered_for_the_frames_that_still_have_the_cell(proofread, qtbot):
    viewer, p, errors = proofread
    layer = p.layer
    _delete_spurious_in_frame_1(p, qtbot)
    assert p.offers.result.frames == [2, 3, 4, 5] and _offer_shown(viewer)
    assert "Shift-A" in p.status.text() and "frames 2-5" in p.status.text()
    assert viewer.layers.selection.active is layer  # editing goes on in the cell layer
    _press(viewer, "Shift-A")
    assert not _offer_shown(viewer) and p.offers.result is None
    assert [_cells_in(layer, t, 2) for t in range(T)] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert [_cells_in(layer, t, 1) for t in range(T)] == [1] * T  # the real cell stays everywhere
    p.undo()  # the accepted offer is one undoable edit
    assert [_cells_in(layer, t, 2) for t in range(T)] == [1, 0, 1, 1, 1, 1, 0, 0]
    assert errors == []


def test_a_drawn_cell_is_offered_where_the_model_misses_it_and_rejecting_keeps_the_layer(proofread, qtbot):
    viewer, p, errors = proofread
    layer = p.layer
    from napari_amodal.instances import mask_to_polygons

    poly = mask_to_polygons(_other(2))[0]
    layer.add(np.column_stack([np.full(len(poly), 2.0), poly]), shape_type="polygon")
    new_id = int(layer.features["cell_id"].iloc[-1])
    qtbot.waitUntil(lambda: p.offers.result is not None, timeout=20_000)
    result = p.offers.result
    assert result.frames == [3, 4]  # from frame 5 on the model has the cell
    assert mask_iou(result.masks[4], _other(4)[None])[0, 0] > 0.95  # it followed the cell down the image
    before = [np.array(d) for d in layer.data]
    _press(viewer, "Shift-X")
    assert not _offer_shown(viewer) and len(layer.data) == len(before)
    # draw it again and accept: frames 3 and 4 get the cell, with the drawn cell's id
    layer.add(np.column_stack([np.full(len(poly), 2.0), poly]), shape_type="polygon")
    new_id = int(layer.features["cell_id"].iloc[-1])
    qtbot.waitUntil(lambda: p.offers.result is not None, timeout=20_000)
    p.accept_offer()
    assert [_cells_in(layer, t, new_id) for t in range(T)] == [0, 0, 1, 1, 1, 0, 0, 0]
    from napari_amodal.overlay import track_colour

    carried = np.flatnonzero((layer.features["cell_id"] == new_id) & (layer.features["frame"] == 4))[0]
    assert np.allclose(layer.edge_color[carried], track_colour(new_id))  # its track's colour, like the rest
    assert errors == []


def test_an_edit_withdraws_the_offer_before_it(proofread, qtbot, monkeypatch):
    from napari_amodal._napari.widgets import _common

    infos = []
    monkeypatch.setattr(_common, "show_info", lambda msg: infos.append(str(msg)))
    viewer, p, _ = proofread
    layer = p.layer
    _delete_spurious_in_frame_1(p, qtbot)
    p.undo()
    assert p.offers.result is None and not _offer_shown(viewer)
    p.accept_offer()  # nothing on offer: said so, nothing changes
    assert infos == ["No correction is on offer: edit a cell in one frame first."]
    assert [_cells_in(layer, t, 2) for t in range(T)] == [1, 1, 1, 1, 1, 1, 0, 0]
