"""The segmentation and proofread widgets through a real viewer (Xvfb), with a tiny untrained model."""

import json
import os

import numpy as np
import pytest
from scipy import ndimage as ndi
from tiny import save_untrained, tiny_config

from napari_amodal._napari.widgets import ProofreadWidget, SegmentationWidget, _common
from napari_amodal._napari.widgets.segmentation import FILE_CHOICE
from napari_amodal.instances import mask_iou
from napari_amodal.project import autosave_path

pytestmark = pytest.mark.gui

IMAGE = "embryo (synthetic)"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """An untrained tiny model that returns a few cells (box_score_thresh 0; some
    random initialisations give only empty masks, so take the first seed that does not)."""
    import torch

    from napari_amodal.segment import Segmenter

    config = tiny_config().replace(box_score_thresh=0.0, box_detections_per_img=4)
    probe = (np.random.default_rng(0).random((1, 48, 48)) * 255).astype(np.uint8)
    for seed in (2, 0, 1, 3, 4, 5, 6, 7):
        torch.manual_seed(seed)
        path = save_untrained(tmp_path_factory.mktemp("model") / "tiny.safetensors", config)
        if len(Segmenter.load(path, "cpu", score_threshold=0.0)(probe)[0]):
            return path
    # a failure, not a skip: the widget tests below would otherwise stop testing anything
    pytest.fail("no untrained tiny model among seeds 0-7 returns cells: the widget tests have no cells to show")


def _seg_widget(viewer, model_file, image=IMAGE):
    w = SegmentationWidget(viewer)
    w.image.setCurrentText(image)
    w.model.setCurrentText(FILE_CHOICE)
    w.model_path.setText(str(model_file))
    w.device.setCurrentText("cpu")
    w.threshold.setValue(0.0)
    return w


def _run(qtbot, w, timeout=60_000):
    w.run_button.click()
    assert w.worker is not None
    qtbot.waitUntil(lambda: w.worker is None, timeout=timeout)


@pytest.fixture
def segmented(make_napari_viewer, qtbot, model_file, errors):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-amodal", "embryo")
    w = _seg_widget(viewer, model_file)
    w.scope.setCurrentText("frame range")
    w.first.setValue(1)
    w.last.setValue(2)
    _run(qtbot, w)
    assert errors == []
    return viewer, w


def test_segment_frame_range(segmented, qtbot):
    viewer, w = segmented
    cells = viewer.layers[f"{IMAGE} amodal cells"]
    occ = viewer.layers[f"{IMAGE} occlusion"]
    image = viewer.layers[IMAGE]
    assert cells._type_string == "shapes" and cells.ndim == 3
    assert len(cells.data) > 0
    assert set(cells.features["frame"]) == {1, 2}
    assert {"cell_id", "score", "area", "frame"} <= set(cells.features.columns)
    assert (cells.features["area"] > 0).all()
    assert occ.data.shape == image.data.shape and occ.data.dtype == np.float32
    assert not occ.data[0].any()  # frames not segmented stay zero
    # re-running on one frame updates the same layers, keeping the other frame
    n_layers = len(viewer.layers)
    viewer.dims.set_current_step(0, 2)
    w.scope.setCurrentText("current frame")
    _run(qtbot, w)
    assert len(viewer.layers) == n_layers
    assert set(viewer.layers[f"{IMAGE} amodal cells"].features["frame"]) == {1, 2}
    # the occlusion map lies under the cells; each cell shows its id
    cells = viewer.layers[f"{IMAGE} amodal cells"]
    assert viewer.layers.index(viewer.layers[f"{IMAGE} occlusion"]) < viewer.layers.index(cells)
    assert list(cells.text.values) == [str(i) for i in cells.features["cell_id"]]


def test_stop_keeps_frames_done(make_napari_viewer, qtbot, model_file, errors):
    viewer = make_napari_viewer()
    stack = (np.random.default_rng(0).random((40, 48, 48)) * 255).astype(np.uint8)
    viewer.add_image(stack, name="many")
    w = _seg_widget(viewer, model_file, image="many")
    w.scope.setCurrentText("all frames")
    progress = []
    w.run_button.click()
    w.worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 1, timeout=60_000)
    w.stop_button.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=10_000)
    frames = set(viewer.layers["many amodal cells"].features["frame"])
    assert frames and max(frames) < 39
    occ = viewer.layers["many occlusion"].data
    assert occ.shape == stack.shape
    assert not occ[39].any()
    assert errors == []


def test_errors_become_notifications(make_napari_viewer, qtbot, model_file, errors, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_points(np.zeros((2, 2)), name="points")
    viewer.add_image(np.zeros((64, 64), np.uint8), name="img")
    w = _seg_widget(viewer, model_file, image="points")
    w.run_button.click()
    assert w.worker is None and "choose an Image layer" in errors[-1]
    w.image.setCurrentText("img")
    w.model_path.setText(str(tmp_path / "missing.safetensors"))
    w.run_button.click()
    assert w.worker is None and "does not exist" in errors[-1]
    # an error inside the worker (bad input: a 4-pixel-wide image) is a notification too
    viewer.add_image(np.zeros((64, 4), np.uint8), name="thin")
    w = _seg_widget(viewer, model_file, image="thin")
    _run(qtbot, w)
    assert "too small" in errors[-1]


def _proofread(viewer):
    p = ProofreadWidget(viewer)
    p.image.setCurrentText(IMAGE)
    return p


def test_proofread_edits_and_undo(segmented):
    viewer, _ = segmented
    p = _proofread(viewer)
    layer = p.layer
    n0 = len(layer.data)
    ids0 = set(layer.features["cell_id"])
    # add an ellipse on frame 1
    p.add_ellipse()
    assert layer.mode == "add_ellipse"
    layer.add(np.array([[1, 100, 100], [1, 100, 140], [1, 130, 140], [1, 130, 100]], float), shape_type="ellipse")
    assert len(layer.data) == n0 + 1
    new = layer.features.iloc[-1]
    assert new["cell_id"] not in ids0 and new["cell_id"] > max(ids0)
    assert new["score"] == 1 and new["frame"] == 1 and new["area"] > 0
    # delete the first cell
    layer.selected_data = {0}
    p.delete_selected()
    assert len(layer.data) == n0
    # change an id
    layer.selected_data = {0}
    p.cell_id.setValue(777)
    p.apply_id()
    assert layer.features["cell_id"].iloc[0] == 777
    # undo the id change, the deletion, the addition
    p.undo()
    assert layer.features["cell_id"].iloc[0] != 777
    p.undo()
    assert len(layer.data) == n0 + 1
    p.undo()
    assert len(layer.data) == n0 and set(layer.features["cell_id"]) == ids0


def test_next_frame_and_review(segmented):
    viewer, _ = segmented
    p = _proofread(viewer)
    p.threshold.setValue(0.0)  # no low scores: only count changes and review state
    viewer.dims.set_current_step(0, 0)
    # frame 0 has no cells, frame 1 has some: the count changes at 1
    assert p.next_frame() == 1
    assert viewer.dims.current_step[0] == 1
    p.mark_reviewed()
    assert p.reviewed() == {1}
    p.undo()
    assert p.reviewed() == set()
    p.mark_reviewed()
    t = p.next_frame()
    assert t == 3  # frame 3 is empty after frame 2 had cells
    # everything reviewed -> None
    for t in range(20):
        viewer.dims.set_current_step(0, t)
        p.mark_reviewed()
    assert p.next_frame() is None


def test_project_save_reload_refuse_autosave(segmented, make_napari_viewer, errors, tmp_path, monkeypatch, qtbot):
    viewer, _ = segmented
    p = _proofread(viewer)
    viewer.dims.set_current_step(0, 2)
    p.mark_reviewed()
    path = tmp_path / "proj.json"
    assert p.save(path, wait=True) == path
    before = _common.layer_frames(p.layer)

    # reload into a fresh viewer on the same image
    v2 = make_napari_viewer()
    v2.open_sample("napari-amodal", "embryo")
    p2 = _proofread(v2)
    assert p2.load(path, wait=True)
    after = _common.layer_frames(p2.layer)
    assert p2.reviewed() == {2}
    for a, b in zip(before, after):
        assert len(a) == len(b)
        if len(a):
            assert (mask_iou(a.masks, b.masks).diagonal() > 0.9).all()
            for ma, mb in zip(a.masks, b.masks):  # outlines agree within one pixel
                band = ndi.binary_dilation(ma) & ~ndi.binary_erosion(ma)
                assert not ((ma ^ mb) & ~band).any()

    # a project for another image is refused
    v2.add_image(np.zeros((20, 500, 500), np.uint8), name="other")
    p2.image.setCurrentText("other")
    n_errors = len(errors)
    assert not p2.load(path, wait=True)
    assert len(errors) == n_errors + 1 and "another image" in errors[-1]
    # loading again onto the right image replaces the cell layer, no pile-up
    p2.image.setCurrentText(IMAGE)
    n_layers = len(v2.layers)
    assert p2.load(path, wait=True) and len(v2.layers) == n_layers

    # an atomic-write failure leaves the previous file intact
    saved = path.read_text()
    p.mark_reviewed()  # dirty again

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    assert p.save(path, wait=True) is None
    assert "previous file is unchanged" in errors[-1]
    assert path.read_text() == saved
    monkeypatch.undo()

    # autosave writes after an edit
    p.timer.setInterval(50)
    p.layer.selected_data = {0}
    p.delete_selected()
    qtbot.waitUntil(lambda: autosave_path(path).exists(), timeout=5000)
    d = json.loads(autosave_path(path).read_text())
    assert d["napari_amodal_project"]["reviewed"] == [2]
    assert not p.dirty


def test_segment_job_builds_the_layers_frame_by_frame(model_file):
    """The worker keeps polygons + occlusion maps per frame (no dense masks), and
    they equal what the whole list of frames would give."""
    from napari_amodal._napari.widgets.segmentation import segment_job
    from napari_amodal.segment import Segmenter
    from napari_amodal.utils import drain

    stack = (np.random.default_rng(1).random((3, 48, 48)) * 255).astype(np.uint8)
    holder: dict = {}
    progress = []
    result = drain(segment_job(str(model_file), "cpu", 0.0, stack, holder, axes="TYX", frames=[0, 2]), progress.append)
    assert progress == [(1, 2), (2, 2)] and holder["result"] is result
    assert result.frames == [0, 2]
    frames = Segmenter.load(model_file, "cpu", score_threshold=0.0)(stack, axes="TYX", frames=[0, 2])
    assert result.n_cells == sum(len(f) for f in frames) > 0
    data, kwargs, kind = result.layer_tuple()
    want, want_kwargs, _ = _common.cells_layer_tuple(frames, stack=True, name="amodal cells")
    assert kind == "shapes" and len(data) == len(want)
    for a, b in zip(data, want):
        np.testing.assert_array_equal(a, b)
    for k in want_kwargs["features"]:
        np.testing.assert_array_equal(kwargs["features"][k], want_kwargs["features"][k])
    np.testing.assert_array_equal(kwargs["face_color"], want_kwargs["face_color"])
    for m, f in zip(result.occlusion, frames):
        assert m.dtype == np.float16
        np.testing.assert_allclose(m, f.occlusion_map(), atol=1e-3)
    assert not any(isinstance(v, np.ndarray) and v.dtype == bool for v in vars(result).values())


def test_focal_stack_without_time_segments_the_chosen_plane(make_napari_viewer, qtbot, model_file, errors, tmp_path):
    """A (Z, Y, X) focal stack: the chosen plane is segmented and the results are 2D
    layers (shown on every plane), with the same cells as segmenting that plane alone."""
    from napari_amodal._napari.layers import META_KEY
    from napari_amodal.segment import Segmenter

    viewer = make_napari_viewer()
    stack = (np.random.default_rng(3).random((5, 48, 48)) * 255).astype(np.uint8)
    viewer.add_image(stack, name="focal", metadata={META_KEY: {"axes": "ZYX"}})
    w = _seg_widget(viewer, model_file, image="focal")
    assert w.plane.isEnabled() and w.plane.value() == 2
    w.plane.setValue(3)
    _run(qtbot, w)
    assert errors == []
    cells = viewer.layers["focal amodal cells"]
    want = Segmenter.load(model_file, "cpu", score_threshold=0.0)(stack[3])[0]
    assert cells.ndim == 2 and len(want) > 0
    assert sorted(cells.features["score"].round(4)) == sorted(np.round(want.scores, 4))
    occ = viewer.layers["focal occlusion"].data
    assert occ.shape == (48, 48)

    # its project saved and loaded again: still one 2D frame (Z is not taken for time)
    p = ProofreadWidget(viewer)
    p.image.setCurrentText("focal")
    p.cells.setCurrentText("focal amodal cells")
    path = p.save(tmp_path / "focal.json", wait=True)
    assert path is not None and errors == []
    viewer.layers.remove("focal amodal cells")
    assert p.load(path, wait=True), errors
    reloaded = viewer.layers["focal amodal cells"]
    assert reloaded.ndim == 2 and len(reloaded.data) == len(want)


def test_export_measurements_of_the_corrected_cells(segmented, qtbot, errors, tmp_path):
    import csv

    viewer, _ = segmented
    p = _proofread(viewer)
    layer = p.layer
    layer.selected_data = {0}  # a correction: the export measures the layer as it stands
    p.delete_selected()
    p.um_per_px.setValue(0.5)
    p.minutes.setValue(30)
    worker = p.export_measurements(tmp_path / "embryo.csv")
    assert worker is not None
    qtbot.waitUntil(lambda: getattr(p, "last_measurements", None) is not None, timeout=30_000)
    assert errors == []
    rows = list(csv.DictReader(open(tmp_path / "embryo_frames.csv")))
    # only frames with cells (or reviewed) are measured: the 18 frames never segmented are not empty embryos
    counts = np.bincount(layer.features["frame"].astype(int), minlength=20)
    measured = [t for t in range(20) if counts[t]]
    assert measured and set(measured) <= {1, 2}
    assert [int(r["frame"]) for r in rows] == measured and [int(r["cells"]) for r in rows] == list(counts[measured])
    assert [float(r["time"]) for r in rows] == [t * 0.5 for t in measured] and rows[0]["time_unit"] == "h"
    cells = list(csv.DictReader(open(tmp_path / "embryo_cells.csv")))
    assert len(cells) == len(layer.data) and {r["area_unit"] for r in cells} == {"um2"}
    # areas in µm²: 0.25 x the rasterised pixel area of the same cells
    frames = _common.layer_frames(layer)
    px = sorted(float(a) for f in frames for a in f.areas)
    assert sorted(float(r["area"]) for r in cells) == pytest.approx([a * 0.25 for a in px], rel=1e-5)
    cleavage = list(csv.DictReader(open(tmp_path / "embryo_cleavage.csv")))
    first = [r for r in cleavage if r["frame"] == str(measured[0])]
    assert len(first) == max(counts[measured[0]] - 1, 0)  # t2..tN of an N-cell first frame
    assert all(r["note"] == "at or before the first measured frame" for r in first)
    assert all(int(r["cells"]) <= counts[measured[0]] for r in first)


def test_each_hand_drawn_cell_is_a_new_cell(segmented):
    """napari resets feature_defaults on every features assignment: the second drawn
    cell copied the first one's id, frame and area, and the two merged on export."""
    viewer, _ = segmented
    p = _proofread(viewer)
    layer = p.layer
    p.add_ellipse()
    layer.add(np.array([[1, 100, 100], [1, 100, 140], [1, 130, 140], [1, 130, 100]], float), shape_type="ellipse")
    layer.add(np.array([[2, 20, 20], [2, 20, 80], [2, 90, 80], [2, 90, 20]], float), shape_type="ellipse")
    first, second = layer.features.iloc[-2], layer.features.iloc[-1]
    assert second["cell_id"] != first["cell_id"] and second["cell_id"] > first["cell_id"]
    assert (first["frame"], second["frame"]) == (1, 2)
    assert second["area"] > first["area"] > 0
    layer.selected_data = {len(layer.data) - 1}
    p.cell_id.setValue(4242)
    p.apply_id()
    layer.add(np.array([[1, 150, 150], [1, 150, 170], [1, 170, 170], [1, 170, 150]], float), shape_type="ellipse")
    third = layer.features.iloc[-1]
    assert third["cell_id"] not in (4242, first["cell_id"]) and third["frame"] == 1


def test_resegmenting_a_range_keeps_the_ids_shown(segmented, qtbot, errors):
    """Re-segmenting frames restarted track ids at 1, so a cell changed id and colour."""
    viewer, w = segmented
    layer = viewer.layers[_common.cells_name(IMAGE)]
    feats = layer.features.copy()
    feats["cell_id"] = feats["cell_id"] + 100  # ids the user has come to know
    _common.set_features(layer, feats)
    shown = {int(t): set(feats.loc[feats["frame"] == t, "cell_id"]) for t in (1, 2)}
    w.first.setValue(2)
    w.last.setValue(2)
    _run(qtbot, w)
    assert errors == []
    feats = layer.features
    again = set(feats.loc[feats["frame"] == 2, "cell_id"])
    assert set(feats.loc[feats["frame"] == 1, "cell_id"]) == shown[1]  # frame 1 untouched
    assert again and all(i in shown[1] or i > max(shown[1] | shown[2]) for i in again)
    assert again & shown[1]  # the same cells (same untrained model, same image) kept their ids


def test_lineage_is_a_tracks_layer_with_its_division_graph(make_napari_viewer):
    from napari_amodal.data.coco import read_coco
    from napari_amodal.data.sample import EMBRYO_GT, sample_path

    viewer = make_napari_viewer()
    viewer.open_sample("napari-amodal", "embryo")
    w = SegmentationWidget(viewer)
    gt = sorted(read_coco(sample_path(EMBRYO_GT)), key=lambda f: f.frame)
    w.add_results(viewer.layers[IMAGE], gt, {"axes": "TYX", "plane": None})
    tracks = viewer.layers[_common.tracks_name(IMAGE)]
    assert tracks._type_string == "tracks"
    data = np.asarray(tracks.data)
    assert len(data) == sum(len(f) for f in gt)
    # every cell's centroid at its frame, under its track id
    f = gt[5]
    ys, xs = np.nonzero(f.masks[0])
    row = data[(data[:, 0] == f.track_ids[0]) & (data[:, 1] == 5)]
    assert row[0, 2:] == pytest.approx([ys.mean(), xs.mean()])
    truth = {int(t): [int(p)] for g in gt for t, p in zip(g.track_ids, g.parent_ids) if p >= 0}
    assert truth and {int(k): [int(p) for p in v] for k, v in tracks.graph.items()} == truth
    # a re-run of frames 0-1 with other ids replaces those frames' points only
    redo = [g.select(np.ones(len(g), bool)) for g in gt[:2]]
    for g in redo:
        g.track_ids = g.track_ids + 500
    w.add_results(viewer.layers[IMAGE], redo, {"axes": "TYX", "plane": None})
    data = np.asarray(viewer.layers[_common.tracks_name(IMAGE)].data)
    assert set(data[data[:, 1] <= 1, 0]) == {float(t) for g in redo for t in g.track_ids}
    assert len(data) == sum(len(f) for f in gt)


def test_units_come_from_the_image_file_unless_typed(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    tifffile.imwrite(tmp_path / "e.tif", np.zeros((3, 32, 32), np.uint8), imagej=True, resolution=(2.5, 2.5),
                     metadata={"axes": "TYX", "finterval": 600, "unit": "um"})
    viewer.open(str(tmp_path / "e.tif"))  # napari's own reader: the units come from the file
    w = ProofreadWidget(viewer)
    w.image.setCurrentText("e")
    w.refresh_layers()
    assert w.um_per_px.value() == pytest.approx(0.4) and w.minutes.value() == pytest.approx(10.0)
    w.um_per_px.setValue(0.3)  # typed by the user: kept
    w.refresh_layers()
    assert w.um_per_px.value() == pytest.approx(0.3)


def test_timelapse_dock_plots_counts_lists_kinetics_and_moves_the_slider(make_napari_viewer, qtbot):
    from qtpy.QtCore import QPoint, Qt

    from napari_amodal._napari.widgets import TimelapseWidget
    from napari_amodal.data.coco import read_coco
    from napari_amodal.data.sample import EMBRYO_GT, sample_path
    from napari_amodal.measure import measure

    viewer = make_napari_viewer()
    viewer.open_sample("napari-amodal", "embryo")
    gt = sorted(read_coco(sample_path(EMBRYO_GT)), key=lambda f: f.frame)
    gt[4].scores[:] = 0.4  # one doubtful frame
    SegmentationWidget(viewer).add_results(viewer.layers[IMAGE], gt, {"axes": "TYX", "plane": None})
    w = TimelapseWidget(viewer)
    assert w.cells.currentText() == _common.cells_name(IMAGE)
    w.minutes.setValue(30)
    worker = w.refresh()
    qtbot.waitUntil(lambda: w.worker is None and w.figures is not None, timeout=60_000)
    truth = measure(gt, hours_per_frame=0.5, persist=2)
    assert w.figures["counts"] == [len(f) for f in gt]
    assert w.figures["uncertain"] == [4]  # the truth's counts never blip or fall
    k = truth.morphokinetics[0]
    row = {w.table.verticalHeaderItem(i).text(): w.table.item(i, 0).text() for i in range(w.table.rowCount())}
    assert row["t3"] == (f"{k['t3']:g} h" if k["t3"] is not None else "-")
    assert row["direct_cleavage"] == ("yes" if k["direct_cleavage"] else "no")
    # a click on the plot moves napari's time slider to the nearest frame
    w.plot.resize(400, 150)
    x = int(w.plot.x_of(7))
    qtbot.mouseClick(w.plot, Qt.LeftButton, pos=QPoint(x, 60))
    assert viewer.dims.current_step[0] == 7
    assert worker is not None


def test_the_device_in_use_is_shown_before_a_run(make_napari_viewer):
    import os

    w = SegmentationWidget(make_napari_viewer())
    w.device.setCurrentText("cpu")
    assert w.device_info.text().startswith(f"runs on CPU ({os.cpu_count()} cores")
    w.device.setCurrentText("auto")  # no GPU on the test machines: auto is the CPU too
    assert "CPU" in w.device_info.text() or "cuda" in w.device_info.text()


def test_the_docks_fit_a_1080_pixel_screen(make_napari_viewer):
    from napari_amodal._napari.widgets import FinetuneWidget, TimelapseWidget

    viewer = make_napari_viewer()
    docks = [SegmentationWidget(viewer), ProofreadWidget(viewer), FinetuneWidget(viewer), TimelapseWidget(viewer)]
    for w in docks:
        viewer.window.add_dock_widget(w, area="right")
        # the controls scroll inside the dock rather than stretch it
        assert w.scroll_area.widget().sizeHint().height() > w.minimumSizeHint().height()
    assert viewer.window._qt_window.minimumSizeHint().height() <= 1080 - 40  # a task bar's worth spare


def test_proofreading_shortcuts(segmented):
    from napari.utils.key_bindings import KeyBinding

    viewer, _ = segmented
    p = _proofread(viewer)
    p.threshold.setValue(0.0)
    viewer.dims.set_current_step(0, 0)

    def press(key):
        viewer.keymap[KeyBinding.from_str(key)](viewer)

    press("Shift-N")  # next frame needing attention
    assert viewer.dims.current_step[0] == 1
    press("Shift-R")  # mark reviewed
    assert p.reviewed() == {1}
    press("Shift-U")  # undo
    assert p.reviewed() == set()
    assert "Shift-N" in p.buttons["next"].toolTip()
    from napari_amodal._napari.widgets.proofread import SHORTCUTS, _unbind

    _unbind(viewer, list(SHORTCUTS))  # what closing the dock does
    assert KeyBinding.from_str("Shift-N") not in viewer.keymap


# -- walk-through bugs (issue 22) ----------------------------------------------------------


def _drag_vertices(layer, index, scale):
    """What napari's direct mode does when a vertex is dragged: the shape's vertices change
    in place and only a "changed" event follows (no "changing" before it)."""
    from napari.layers.base._base_constants import ActionType

    vertices = layer._data_view.shapes[index].data
    centre = vertices[:, -2:].mean(axis=0)
    vertices[:, -2:] = centre + (vertices[:, -2:] - centre) * scale
    layer._data_view.edit(index, vertices)
    layer.events.data(value=layer.data, action=ActionType.CHANGED, data_indices=(index,), vertex_indices=((0,),))


def test_vertex_edits_update_the_area_and_can_be_undone(segmented):
    viewer, _ = segmented
    p = _proofread(viewer)
    layer = p.layer
    layer.selected_data = {1}
    p.delete_selected()  # an earlier edit, so an undo that skips the vertex edit shows
    n = len(layer.data)
    old, area = np.array(layer.data[0], copy=True), int(layer.features["area"].iloc[0])
    _drag_vertices(layer, 0, 1.5)
    grown = int(layer.features["area"].iloc[0])
    assert grown > 1.8 * area  # 1.5x the size: 2.25x the area, not the stale one
    p.undo()
    assert len(layer.data) == n  # the deletion is still undone only by the next undo
    back = [i for i, d in enumerate(layer.data) if d.shape == old.shape and np.allclose(d, old)]
    assert len(back) == 1 and int(layer.features["area"].iloc[back[0]]) == area  # undo may reorder shapes
    p.undo()
    assert len(layer.data) == n + 1


def test_the_frame_range_survives_adding_a_layer(make_napari_viewer, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((10, 48, 48), np.uint8), name="a")
    w = _seg_widget(viewer, model_file, image="a")
    w.first.setValue(2)
    w.last.setValue(5)
    viewer.add_points(np.zeros((1, 3)), name="marks")
    viewer.add_image(np.zeros((4, 48, 48), np.uint8), name="b")
    assert (w.first.value(), w.last.value()) == (2, 5)
    w.image.setCurrentText("b")  # another image: the range fits it
    assert (w.first.value(), w.last.value()) == (2, 3) and w.last.maximum() == 3


def test_reviewed_frames_are_only_segmented_again_when_the_user_says_so(segmented, qtbot, monkeypatch, errors):
    from napari_amodal._napari.widgets import segmentation

    viewer, w = segmented
    p = _proofread(viewer)
    layer = p.layer
    viewer.dims.set_current_step(0, 1)
    layer.selected_data = set(np.flatnonzero(np.asarray(layer.features["frame"]) == 1)[:1].tolist())
    p.delete_selected()  # a correction in frame 1
    p.mark_reviewed()
    kept = [np.array(d) for d, t in zip(layer.data, layer.features["frame"]) if t == 1]
    asked = []
    for choice in ("cancel", "skip", "replace"):
        monkeypatch.setattr(segmentation, "ask_reviewed", lambda parent, frames, c=choice: asked.append(frames) or c)
        w.scope.setCurrentText("frame range")
        w.first.setValue(1)
        w.last.setValue(2)
        w.run()
        if choice == "cancel":
            assert w.worker is None and asked == [[1]]
            continue
        qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
        now = [np.array(d) for d, t in zip(layer.data, layer.features["frame"]) if t == 1]
        if choice == "skip":  # the reviewed frame is untouched, frame 2 was segmented again
            assert len(now) == len(kept) and all(np.array_equal(a, b) for a, b in zip(now, kept))
            assert p.reviewed() == {1}
        else:
            assert len(now) == len(kept) + 1  # the model's cells are back
            assert p.reviewed() == set()
    assert errors == []


def test_a_project_opened_with_file_open_keeps_its_review_and_image(make_napari_viewer, tmp_path, errors):
    import tifffile

    from napari_amodal.data.sample import EMBRYO_GT, EMBRYO_STACK, sample_path
    from napari_amodal.io_images import read_stack

    tif = tmp_path / "embryo.tif"
    tifffile.imwrite(tif, read_stack(sample_path(EMBRYO_STACK))[0])
    v = make_napari_viewer()
    v.open(str(tif))
    v.open(str(sample_path(EMBRYO_GT)), plugin="napari-amodal")
    p = ProofreadWidget(v)
    p.timer.stop()
    p.image.setCurrentText("embryo")
    v.dims.set_current_step(0, 3)
    p.mark_reviewed()
    path = tmp_path / "proj.json"
    assert p.save(path, wait=True) == path
    n_cells = len(p.layer.data)

    v2 = make_napari_viewer()
    v2.window._qt_viewer._qt_open([str(path)], stack=False)  # File > Open, or a drop on the canvas
    assert [ly.name for ly in v2.layers] == ["embryo", "embryo amodal cells"]
    assert np.array_equal(v2.layers["embryo"].data, v.layers["embryo"].data)
    p2 = ProofreadWidget(v2)
    p2.timer.stop()
    assert p2.reviewed() == {3} and len(p2.layer.data) == n_cells
    assert p2.image.currentText() == "embryo" and p2.project_path == path
    v2.dims.set_current_step(0, 4)
    p2.mark_reviewed()
    assert p2.save(wait=True) == path  # back to the project it came from
    v3 = make_napari_viewer()
    v3.open(str(path), plugin="napari-amodal")
    assert ProofreadWidget(v3).reviewed() == {3, 4}
    assert errors == []


def test_outputs_lie_on_a_scaled_and_shifted_image(make_napari_viewer, qtbot, model_file, errors):
    from napari_amodal.data.sample import EMBRYO_STACK, sample_path
    from napari_amodal.io_images import read_stack

    viewer = make_napari_viewer()
    stack = read_stack(sample_path(EMBRYO_STACK))[0][:4]
    image = viewer.add_image(stack, name="scaled", scale=(2.0, 0.5, 0.5), translate=(10.0, 5.0, -3.0))
    w = _seg_widget(viewer, model_file, image="scaled")
    w.scope.setCurrentText("all frames")
    _run(qtbot, w)
    assert errors == []
    for name in ("scaled amodal cells", "scaled occlusion", "scaled lineage"):
        layer = viewer.layers[name]
        assert np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate), name
    cells = viewer.layers["scaled amodal cells"]
    viewer.dims.set_point(0, 10.0 + 2.0 * 3)  # world time of frame 3
    assert _common.current_frame(viewer, cells) == 3 == _common.current_frame(viewer, image)
    _common.go_to_frame(viewer, cells, 1)
    assert viewer.dims.point[0] == pytest.approx(12.0) and _common.current_frame(viewer, image) == 1


def test_layer_pickers_follow_a_rename(segmented, make_napari_viewer, qtbot, errors):
    from napari_amodal._napari.widgets import FinetuneWidget, TimelapseWidget

    viewer, w = segmented
    p = _proofread(viewer)
    f, t = FinetuneWidget(viewer), TimelapseWidget(viewer)
    cells = viewer.layers[_common.cells_name(IMAGE)]
    f.cells.setCurrentText(cells.name)
    viewer.layers[IMAGE].name = "day 3 embryo"
    cells.name = "my cells"
    assert w.image.currentText() == "day 3 embryo"
    assert (p.cells.currentText(), p.image.currentText()) == ("my cells", "day 3 embryo")
    assert (f.cells.currentText(), f.image.currentText()) == ("my cells", "day 3 embryo")
    assert t.cells.currentText() == "my cells"
    assert cells.metadata["napari_amodal"]["source_image"] == "day 3 embryo"
    n = len(viewer.layers)
    w.scope.setCurrentText("current frame")
    viewer.dims.set_current_step(0, 1)
    _run(qtbot, w)  # the renamed cell layer is updated, not a second one made
    assert len(viewer.layers) == n and errors == []


def test_results_appear_while_the_run_goes_and_the_loop_keeps_turning(make_napari_viewer, qtbot, model_file, errors):
    """Frame by frame: the cell layer fills while the worker still runs, and the event loop is
    never held long (showing 60 frames at the end froze napari for 8 s)."""
    import time

    from qtpy.QtCore import QTimer

    viewer = make_napari_viewer()
    viewer.add_image((np.random.default_rng(0).random((150, 48, 48)) * 255).astype(np.uint8), name="long")
    w = _seg_widget(viewer, model_file, image="long")
    w.scope.setCurrentText("all frames")
    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    w.run_button.click()
    qtbot.waitUntil(lambda: "long amodal cells" in viewer.layers, timeout=60_000)
    shown_early = w.worker is not None
    frames_early = set(viewer.layers["long amodal cells"].features["frame"])
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    timer.stop()
    assert shown_early and frames_early and max(frames_early) < 149
    final = set(viewer.layers["long amodal cells"].features["frame"])
    assert final > frames_early and max(final) > max(frames_early)  # the rest came after, none lost
    assert max(np.diff(ticks)) < 1.0, max(np.diff(ticks))
    assert errors == []


def test_the_segmentation_form_is_magicgui_and_its_picker_follows_the_layers(make_napari_viewer):
    from magicgui.widgets import Container

    viewer = make_napari_viewer()
    w = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert isinstance(w.form, Container) and w.form.image.native is w.image
    points = viewer.add_points(np.zeros((1, 3)), name="marks")
    a = viewer.add_image(np.zeros((3, 8, 8), np.uint8), name="a")
    assert list(w.form.image.choices) == [a, points]  # Image layers first, others to say why they do not fit
    w.image.setCurrentText("a")
    assert w.form.image.value is a
    viewer.layers.remove(points)
    assert list(w.form.image.choices) == [a] and w.form.image.value is a
    w.add_model_choice("mine")
    assert w.model.currentText() == "mine" and w.model.itemText(w.model.count() - 1) == FILE_CHOICE
