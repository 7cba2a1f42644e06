"""Bad GUI input gets one clear message, and nothing is damaged (docs/reliability.md, "GUI inputs").

Files dropped or opened on the viewer go through the plugin's reader (napari shows what it
raises); the widgets' fields are checked before any worker starts, and what is wrong
becomes one napari notification naming the field or file. Each test is one row of the table.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from napari_amodal import atomic
from napari_amodal import project as core
from napari_amodal._napari import io as plugin_io
from napari_amodal._napari.layers import META_KEY
from napari_amodal._napari.widgets import FinetuneWidget, ProofreadWidget, SegmentationWidget, TimelapseWidget, _common
from napari_amodal._napari.widgets._common import cells_layer_tuple, cells_name
from napari_amodal._napari.widgets.finetune import NO_LAYER
from napari_amodal._napari.widgets.segmentation import FILE_CHOICE
from napari_amodal.checkpoint import save_checkpoint
from napari_amodal.data.sample import EMBRYO_GT, sample_path
from napari_amodal.instances import FrameInstances

pytestmark = pytest.mark.gui

IMAGE = "img"
CELLS = cells_name(IMAGE)


@pytest.fixture
def viewer(make_napari_viewer):
    """A (3, 64, 64) image and its cell layer (one cell a frame), frames 0 and 1 reviewed."""
    v = make_napari_viewer()
    v.add_image(np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64), name=IMAGE)
    frames = []
    for t in range(3):
        m = np.zeros((1, 64, 64), bool)
        m[0, 10:30, 10:30 + t] = True
        frames.append(FrameInstances.from_masks(m, scores=[0.9], labels=[1], track_ids=[1], file_name=IMAGE, frame=t))
    data, kwargs, _ = cells_layer_tuple(frames, stack=True, name=CELLS)
    kwargs["metadata"][META_KEY].update(source_image=IMAGE, reviewed=[0, 1])
    v.add_shapes(data, **kwargs)
    return v


def _state(viewer):
    """Every layer's name and a copy of its data: to show nothing was changed."""
    return [(ly.name, [np.array(d, copy=True) for d in ly.data] if ly._type_string == "shapes"
             else np.array(ly.data, copy=True)) for ly in viewer.layers]


def _same(a, b):
    assert [n for n, _ in a] == [n for n, _ in b]
    for (_, x), (_, y) in zip(a, b):
        if isinstance(x, list):
            assert len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
        else:
            assert np.array_equal(x, y)


def _drop(viewer, path):
    """What napari does with a file dropped on the canvas (File > Open goes the same way)."""
    viewer.window._qt_viewer._qt_open([str(path)], stack=False)


def _shape_model(tmp_path):
    from tiny import tiny_config

    return save_checkpoint(tmp_path / "shape.safetensors", {}, {"kind": "shape", "model": tiny_config().to_dict()})


# -- files dropped / opened on the viewer ------------------------------------------------


def test_tiffs_are_left_to_napari_and_the_docks_still_read_their_axes(viewer, tmp_path):
    """Claiming TIFFs made napari ask which reader on every TIFF: napari's own reader opens
    them, and the docks read axes and units from the file's header."""
    from npe2 import PluginManager

    from napari_amodal.data.sample import EMBRYO_STACK

    focal = tmp_path / "focal.tif"  # an ImageJ Z stack: by its shape alone it would be frames
    tifffile.imwrite(focal, np.zeros((5, 32, 32), np.uint8), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "unit": "um"})
    readers = {r.plugin_name for r in PluginManager.instance().iter_compatible_readers([str(focal)])}
    assert "napari-amodal" not in readers and readers  # one reader: napari opens it without asking
    _drop(viewer, focal)
    layer = viewer.layers["focal"]
    assert _common.image_axes(layer) == "ZYX"
    assert _common.image_meta(layer)["um_per_px"] == pytest.approx(0.5)
    _drop(viewer, sample_path(EMBRYO_STACK))  # a plain tifffile stack: frames, by its shape
    assert _common.image_axes(viewer.layers[-1]) == "TYX"


def test_json_that_is_not_coco_amodal_is_left_to_other_readers(viewer, tmp_path):
    from napari.errors import ReaderPluginError

    other = tmp_path / "settings.json"
    other.write_text(json.dumps({"theme": "dark"}))
    before = _state(viewer)
    assert plugin_io.get_reader(str(other)) is None  # napari then tries other readers
    with pytest.raises(ReaderPluginError) as e:  # here there is none: napari says so
        _drop(viewer, other)
    assert f"Reader 'napari-amodal' was selected to open ['{other}'], but refused the file" in str(e.value)
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(ReaderPluginError) as e:
        _drop(viewer, tmp_path / "empty.json")
    assert f"{tmp_path / 'empty.json'}: the file is empty (0 bytes)" in str(e.value)
    _same(_state(viewer), before)


def test_coco_amodal_json_with_bad_fields_names_the_file_and_field(viewer, tmp_path):
    from napari.errors import ReaderPluginError

    gt = json.loads(sample_path(EMBRYO_GT).read_text())
    gt["annotations"][0]["segmentation"] = "zzz"
    (tmp_path / "badseg.json").write_text(json.dumps(gt))
    (tmp_path / "cut.json").write_text('{"images": [ {"id": 1,')
    before = _state(viewer)
    for name, field in (("badseg.json", "annotations[0].segmentation"), ("cut.json", "<json>")):
        with pytest.raises(ReaderPluginError) as e:  # napari's error, carrying the plugin's message
            _drop(viewer, tmp_path / name)
        assert f"{tmp_path / name}: field '{field}'" in str(e.value)
    _same(_state(viewer), before)


def test_a_folder_named_like_a_stack_is_not_claimed(viewer, tmp_path):
    folder = tmp_path / "stack.tif"
    folder.mkdir()
    assert plugin_io.get_reader(str(folder)) is None
    before = _state(viewer)
    with pytest.raises(ValueError, match="not a compatible reader"):  # napari: the manifest accepts no folders
        viewer.open(str(folder), plugin="napari-amodal")
    _same(_state(viewer), before)


def test_the_writer_refuses_what_is_not_amodal_cells_with_its_reason(viewer, tmp_path):
    plain = viewer.add_shapes([np.array([[0, 0], [5, 5], [0, 5]])], shape_type="polygon", name="plain")
    viewer.layers.selection = {plain}
    out = tmp_path / "plain.json"
    with pytest.raises(plugin_io.CellWriteError, match="layer 'plain' is not an amodal cell layer"):
        viewer.layers.save(str(out), selected=True, plugin="napari-amodal")
    cells = viewer.layers[CELLS]
    cells.add(np.array([[1.0, 2.0, 2.0], [1.0, 30.0, 30.0]]), shape_type="line")
    viewer.layers.selection = {cells}
    with pytest.raises(plugin_io.CellWriteError, match=f"layer '{CELLS}' cannot be saved as COCO-amodal: cannot turn "
                                                       "a napari 'line' shape into a cell mask"):
        viewer.layers.save(str(out), selected=True, plugin="napari-amodal")
    assert not out.exists()


def test_the_writer_to_a_read_only_place_keeps_the_earlier_file(viewer, tmp_path, monkeypatch):
    out = tmp_path / "cells.json"
    out.write_text("earlier")

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(atomic, "tempfile", SimpleNamespace(mkstemp=read_only))
    viewer.layers.selection = {viewer.layers[CELLS]}
    with pytest.raises(plugin_io.CellWriteError, match=r"cells.json: could not write \(permission denied\); an earlier"):
        viewer.layers.save(str(out), selected=True, plugin="napari-amodal")
    assert out.read_text() == "earlier"


# -- the segmentation widget --------------------------------------------------------------


def test_segmentation_without_a_usable_image_layer(make_napari_viewer, errors):
    v = make_napari_viewer()
    w = SegmentationWidget(v)
    w.run()
    assert w.worker is None and errors[-1] == "Cannot segment: No image to segment: open an image first."
    v.add_points(np.zeros((2, 2)), name="points")
    v.add_image(np.zeros((2, 2, 2, 2, 16, 16), np.uint8), name="six-d")
    before = _state(v)
    for layer, says in (("points", "'points' is a Points layer; choose an Image layer"),
                        ("six-d", "'six-d' has shape (2, 2, 2, 2, 16, 16)")):
        w.image.setCurrentText(layer)
        w.run()
        assert w.worker is None and says in errors[-1]
    _same(_state(v), before)


def test_segmentation_model_that_is_missing_or_not_a_model(viewer, errors, tmp_path):
    w = SegmentationWidget(viewer)
    w.image.setCurrentText(IMAGE)
    junk = tmp_path / "junk.safetensors"
    junk.write_text("hello")
    tif = tmp_path / "a.tif"
    tifffile.imwrite(tif, np.zeros((8, 8), np.uint8))
    (tmp_path / "folder.safetensors").mkdir()
    before = _state(viewer)
    for model, says in ((tmp_path / "nope.safetensors", "nope.safetensors does not exist"),
                        ("no-such-model", "no model named 'no-such-model'"),
                        (tmp_path / "folder.safetensors", "folder.safetensors: is a folder, not a .safetensors"),
                        (junk, "junk.safetensors: not a safetensors file"),
                        (tif, "a.tif: not a safetensors file"),
                        (_shape_model(tmp_path), "shape.safetensors holds a shape model, not a segmentation model")):
        w.model.setCurrentText(FILE_CHOICE)
        w.model_path.setText(str(model))
        n = len(errors)
        w.run()
        assert w.worker is None, model  # refused before a worker starts
        assert len(errors) == n + 1 and says in errors[-1]
    _same(_state(viewer), before)


# -- the fine-tune widget -----------------------------------------------------------------


def _finetune(viewer, tmp_path):
    w = FinetuneWidget(viewer)
    w.replay.setValue(0)
    w.device.setCurrentText("cpu")
    w.out_dir.setText(str(tmp_path / "run"))
    return w


def _refused(w, errors, says):
    n = len(errors)
    w.run()
    assert w.worker is None and len(errors) == n + 1, errors[n:]
    assert errors[-1].startswith("Cannot fine-tune: ") and says in errors[-1], errors[-1]


def test_finetune_without_proofread_frames(viewer, errors, tmp_path):
    w = _finetune(viewer, tmp_path)
    viewer.layers[CELLS].metadata[META_KEY]["reviewed"] = []
    _refused(w, errors, f"no reviewed frames in layer '{CELLS}'")
    w.cells.setCurrentText(NO_LAYER)
    _refused(w, errors, "No training data")
    w.add_files([tmp_path / "gone.json"])
    _refused(w, errors, "gone.json: no such project or annotation file")
    assert not (tmp_path / "run").exists()


def test_finetune_start_model_that_is_missing_or_not_a_detector(viewer, errors, tmp_path):
    w = _finetune(viewer, tmp_path)
    w.init.setCurrentText("no-such-model")
    _refused(w, errors, "no model named 'no-such-model'")
    w.init.setCurrentText(str(_shape_model(tmp_path)))
    _refused(w, errors, "shape.safetensors holds a shape model, not a segmentation model")
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot go


def test_finetune_output_folder_that_cannot_take_the_run(viewer, errors, tmp_path, monkeypatch):
    w = _finetune(viewer, tmp_path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    w.out_dir.setText(str(a_file))
    _refused(w, errors, f"output folder {a_file} is a file, not a folder")
    w.out_dir.setText(str(a_file / "run"))
    _refused(w, errors, f"{a_file} is a file, not a folder")
    assert a_file.read_text() == "mine"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "best.safetensors").write_bytes(b"weights")
    w.out_dir.setText(str(earlier))
    _refused(w, errors, "holds an earlier run (best.safetensors)")
    assert sorted(p.name for p in earlier.iterdir()) == ["best.safetensors"]  # no layer data written into it
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real = _common.os.access
    monkeypatch.setattr(_common.os, "access", lambda p, mode: False if str(p) == str(read_only) else real(p, mode))
    w.out_dir.setText(str(read_only / "run"))
    _refused(w, errors, f"{read_only} is not writable")


def test_finetune_save_as_name_that_cannot_be_used(viewer, errors, tmp_path, home):
    w = _finetune(viewer, tmp_path)
    w.name.setText("../elsewhere")
    _refused(w, errors, "model name '../elsewhere'")
    (home / "models").mkdir(parents=True)
    (home / "models" / "mine.safetensors").write_bytes(b"weights")
    w.name.setText("mine")
    _refused(w, errors, "a model called 'mine' exists already")
    assert (home / "models" / "mine.safetensors").read_bytes() == b"weights"


def test_an_image_of_another_size_than_the_cells_is_refused(viewer, errors, tmp_path):
    viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="small")
    w = _finetune(viewer, tmp_path)
    w.image.setCurrentText("small")
    _refused(w, errors, f"image 'small' is 32x32 px, but the cells of '{CELLS}' were drawn on 64x64 px")
    p = ProofreadWidget(viewer)
    p.timer.stop()
    p.image.setCurrentText("small")
    assert p.save(tmp_path / "proj.json", wait=True) is None
    assert "image 'small' is 32x32 px" in errors[-1] and not (tmp_path / "proj.json").exists()


# -- the proofread widget -----------------------------------------------------------------


def test_proofread_buttons_and_keys_without_a_cell_layer(make_napari_viewer, errors, tmp_path):
    from napari.utils.key_bindings import KeyBinding

    v = make_napari_viewer()
    p = ProofreadWidget(v)
    p.timer.stop()
    p.path.setText(str(tmp_path / "proj.json"))
    for key in ("polygon", "ellipse", "edit", "select", "delete", "set_id", "undo", "next", "reviewed", "save"):
        n = len(errors)
        p.buttons[key].click()  # a slot that raised would fail this test (pytest-qt)
        assert len(errors) == n + 1 and "No amodal cell layer" in errors[-1], key
    for key in ("Shift-N", "Shift-R", "Shift-D", "Shift-U"):
        n = len(errors)
        v.keymap[KeyBinding.from_str(key)](v)
        assert len(errors) == n + 1 and "No amodal cell layer" in errors[-1], key
    assert not (tmp_path / "proj.json").exists() and len(v.layers) == 0


def _saved_project(viewer, tmp_path):
    """A Proofread dock on the test image (no autosave timer) and the project it saved."""
    p = ProofreadWidget(viewer)
    p.timer.stop()
    p.image.setCurrentText(IMAGE)
    path = tmp_path / "proj.json"
    assert p.save(path, wait=True) == path
    return p, path


def test_a_line_drawn_in_the_cell_layer_is_said_to_be_no_cell(viewer, errors, tmp_path):
    p, path = _saved_project(viewer, tmp_path)
    saved = path.read_bytes()
    layer = p.layer
    n = len(layer.data)
    layer.add(np.array([[1.0, 2.0, 2.0], [1.0, 30.0, 30.0]]), shape_type="line")
    assert len(layer.data) == n + 1
    assert "A line is not a cell outline" in errors[-1]
    assert p.save(path, wait=True) is None
    assert "cannot turn a napari 'line' shape into a cell mask" in errors[-1] and "unchanged" in errors[-1]
    assert path.read_bytes() == saved
    p.undo()  # the line goes; the project saves again
    assert len(layer.data) == n and p.save(path, wait=True) == path


def test_loading_a_project_whose_image_changed(viewer, errors, tmp_path):
    p, path = _saved_project(viewer, tmp_path)
    viewer.layers[IMAGE].data = viewer.layers[IMAGE].data[::-1].copy()  # same size, other pixels
    before = _state(viewer)
    assert not p.load(path, wait=True)
    assert "proj.json was saved for another image" in errors[-1] and "the pixel values differ" in errors[-1]
    _same(_state(viewer), before)


def test_loading_a_project_file_with_wrong_fields(viewer, errors, tmp_path):
    p, path = _saved_project(viewer, tmp_path)
    d = json.loads(path.read_text())
    d[core.PROJECT_KEY]["reviewed"] = "all"
    (tmp_path / "wrong.json").write_text(json.dumps(d))
    (tmp_path / "plain.json").write_text(sample_path(EMBRYO_GT).read_text())  # COCO-amodal, not a project
    (tmp_path / "cut.json").write_text(path.read_text()[:100])
    before = _state(viewer)
    for name, says in (("wrong.json", "'napari_amodal_project.reviewed' must be a list of frame indices"),
                       ("plain.json", "not a napari-amodal project"),
                       ("cut.json", "not a valid project file"),
                       ("none.json", "no such project file")):
        assert not p.load(tmp_path / name, wait=True)
        assert f"{name}: {says}" in errors[-1], errors[-1]
    _same(_state(viewer), before)


def test_saving_the_project_to_a_read_only_place(viewer, errors, tmp_path, monkeypatch):
    p, path = _saved_project(viewer, tmp_path)
    saved = path.read_bytes()

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    with monkeypatch.context() as m:
        m.setattr(atomic, "tempfile", SimpleNamespace(mkstemp=read_only))
        p.mark_reviewed()
        assert p.save(path, wait=True) is None
    assert errors[-1] == f"Could not save the project to {path}: permission denied. The previous file is unchanged."
    assert path.read_bytes() == saved and p.dirty
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert p.save(a_file / "proj.json", wait=True) is None
    assert f"Could not save the project to {a_file / 'proj.json'}" in errors[-1] and a_file.read_text() == "mine"


def test_exporting_with_no_reviewed_frame(viewer, errors, tmp_path):
    viewer.layers[CELLS].metadata[META_KEY]["reviewed"] = []
    p = ProofreadWidget(viewer)
    p.timer.stop()
    p.image.setCurrentText(IMAGE)
    assert p.export(tmp_path / "train.json", wait=True) is None
    assert "no frame is marked reviewed" in errors[-1] and not (tmp_path / "train.json").exists()


# -- unit boxes ---------------------------------------------------------------------------


def test_unit_boxes_refuse_what_is_not_a_positive_number(viewer, qtbot):
    from qtpy.QtTest import QTest

    p = ProofreadWidget(viewer)
    p.timer.stop()
    t = TimelapseWidget(viewer)
    for box in (p.um_per_px, p.minutes, t.um_per_px, t.minutes):
        for text in ("abc", "-3", "nan", "inf"):
            box.lineEdit().selectAll()
            QTest.keyClicks(box.lineEdit(), text)
            box.interpretText()
            assert box.value() == 0.0, text  # 0: pixels / frame indices, as the box shows
            assert box.lineEdit().text() in ("pixels", "frames"), text
        box.lineEdit().selectAll()
        QTest.keyClicks(box.lineEdit(), "0.5 um")  # a unit typed after the number: the number is kept
        box.interpretText()
        assert box.value() == 0.5
        box.setValue(0)


def test_file_units_the_boxes_cannot_hold_are_left_out_with_a_warning(make_napari_viewer, warned, tmp_path):
    v = make_napari_viewer()
    tifffile.imwrite(tmp_path / "odd.tif", np.zeros((3, 32, 32), np.uint8), imagej=True, resolution=(2e-4, 2e-4),
                     metadata={"axes": "TYX", "finterval": 1e7, "unit": "um"})  # 5000 µm/px, 166667 min/frame
    v.open(str(tmp_path / "odd.tif"))
    p = ProofreadWidget(v)
    p.timer.stop()
    assert p.um_per_px.value() == 0.0 and p.minutes.value() == 0.0  # not clamped to the boxes' maxima
    assert any(m.startswith("odd.tif: its metadata says 5000 µm/px") for m in warned), warned
    assert any(m.startswith("odd.tif: its metadata says 166667 min/frame") for m in warned), warned


# -- the time-lapse widget ----------------------------------------------------------------


def test_timelapse_without_cells(make_napari_viewer, errors, qtbot):
    v = make_napari_viewer()
    t = TimelapseWidget(v)
    t.update_button.click()
    assert t.worker is None and errors[-1] == "No amodal cell layer: run a segmentation or load a project first."
    data, kwargs, _ = cells_layer_tuple([FrameInstances.from_masks(np.zeros((0, 16, 16), bool), shape=(16, 16))],
                                        stack=False, name="empty cells")
    v.add_shapes(data, **kwargs)
    worker = t.refresh()
    qtbot.waitUntil(lambda: t.worker is None, timeout=10_000)
    assert worker is not None and "the cell layer has no cells yet: segment first" in errors[-1]
    assert t.status.text() == "not measured (see the notification)"
