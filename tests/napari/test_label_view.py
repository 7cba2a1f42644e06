"""Overlapping cells as napari Labels layers (one per plane), kept in step with the cell layer."""

import numpy as np
import pytest
import tifffile

from napari_amodal._napari.widgets import ProofreadWidget
from napari_amodal._napari.widgets._common import layer_frame
from napari_amodal.label_planes import frame_from_planes

pytestmark = pytest.mark.gui

IMAGE = "embryo"


@pytest.fixture
def proofread(sample_cells):
    v = sample_cells()
    p = ProofreadWidget(v)
    p.timer.stop()
    p.image.setCurrentText(IMAGE)
    return v, p


def _planes_at(view, t):
    return np.stack([ly.data[t] for ly in view.layers])


def _cell_at(view, t, cid):
    frame = layer_frame(view.cells, t)
    return frame.masks[list(frame.track_ids).index(cid)]


def test_labels_hold_every_cell_and_paint_comes_back_to_the_cells(proofread, qtbot, errors):
    v, p = proofread
    view = p.show_labels(wait=True)
    cells = view.cells
    assert len(view.layers) >= 2 and all(ly.data.shape == (20, 500, 500) for ly in view.layers)
    t = 12
    v.dims.set_current_step(0, t)
    shown = layer_frame(cells, t)
    back = frame_from_planes(_planes_at(view, t), t, shown)
    assert list(back.track_ids) == list(shown.track_ids) and np.array_equal(back.masks, shown.masks)
    assert (shown.masks.sum(0) > 1).any()  # the frame has overlaps: hidden parts are on other planes

    # paint a cell bigger, just outside its outline, on its own plane
    cid = int(shown.track_ids[0])
    mask = shown.masks[0]
    ys, xs = np.nonzero(mask)
    y, x = int(ys.min()) - 3, int(xs[ys == ys.min()].mean())
    area = int(mask.sum())
    k = view.planes[cid]
    view.layers[k].paint((t, y, x), cid)
    qtbot.wait(50)  # the cells follow a turn of the event loop later
    grown = _cell_at(view, t, cid)
    assert grown[y, x] and grown.sum() > area and grown[mask].all()
    feats = cells.features
    assert int(feats.loc[(feats["frame"] == t) & (feats["cell_id"] == cid), "area"].sum()) == int(grown.sum())

    # erase a whole cell of one plane: it leaves the cell layer
    other = int(shown.track_ids[1])
    yy, xx = np.argwhere(shown.masks[1])[len(np.argwhere(shown.masks[1])) // 2]
    view.layers[view.planes[other]].fill((t, int(yy), int(xx)), 0)
    qtbot.wait(50)
    assert not (_planes_at(view, t) == other).any()  # a cell lies on its own plane only
    assert other not in set(layer_frame(cells, t).track_ids) and cid in set(layer_frame(cells, t).track_ids)
    assert errors == []


def test_edits_of_the_cell_layer_redraw_the_labels_of_that_frame(proofread, errors, tmp_path):
    v, p = proofread
    view = p.show_labels(wait=True)
    cells = view.cells
    before = [ly.data.copy() for ly in view.layers]
    t = 5
    v.dims.set_current_step(0, t)
    frames = np.asarray(cells.features["frame"])
    i = int(np.flatnonzero(frames == t)[0])
    cid = int(cells.features["cell_id"].iloc[i])
    cells.selected_data = {i}
    p.delete_selected()
    assert not (_planes_at(view, t) == cid).any() and (before[view.planes[cid]][t] == cid).any()
    for ly, old in zip(view.layers, before):  # the other frames are as they were
        assert np.array_equal(np.delete(ly.data, t, axis=0), np.delete(old, t, axis=0))
    p.undo()
    assert (_planes_at(view, t) == cid).any()

    out = p.export_labels(tmp_path / "labels.tif", wait=True)
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TCYX"
        planes = tif.asarray().transpose(1, 0, 2, 3)
    assert np.array_equal(planes, np.stack([ly.data for ly in view.layers]))
    assert errors == []
