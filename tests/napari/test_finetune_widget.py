"""The Fine-tune widget through a real viewer (Xvfb), with a tiny untrained model and a few iterations."""

import json

import pytest
from tiny import save_untrained

from napari_amodal._napari.layers import META_KEY
from napari_amodal._napari.widgets import FinetuneWidget, SegmentationWidget
from napari_amodal._napari.widgets._common import cells_name
from napari_amodal.data.sample import EMBRYO_GT, sample_path
from napari_amodal.models import list_models
from napari_amodal.checkpoint import read_metadata

pytestmark = pytest.mark.gui

IMAGE = "embryo"


@pytest.fixture
def viewer(sample_cells):
    """A viewer with the sample stack and its cells as a cell layer, six frames reviewed."""
    return sample_cells(reviewed=[0, 2, 4, 6, 8, 10])


def _widget(viewer, tmp_path, iterations=2, name="wtuned", replay=0):
    w = FinetuneWidget(viewer)
    w.replay.setValue(replay)
    w.init.setCurrentText(str(save_untrained(tmp_path / "init" / "tiny.safetensors")))
    w.iterations.setValue(iterations)
    w.lr.setValue(0.002)
    w.device.setCurrentText("cpu")
    w.name.setText(name)
    w.out_dir.setText(str(tmp_path / "run"))
    return w


def test_finetune_from_the_cell_layer_offers_the_model(viewer, qtbot, tmp_path, errors):
    seg = SegmentationWidget(viewer)
    w = _widget(viewer, tmp_path, replay=2)
    w.anchor.setValue(0.5)
    assert w.cells.currentText() == cells_name(IMAGE) and w.image.currentText() == IMAGE
    w.run_button.click()
    bar = w.progress  # napari's own progress, shown in its activity dock
    assert bar is not None and bar.desc == "Fine-tuning" and bar.total == 2
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert bar.n == 2 and w.progress is None  # reached the last iteration, then closed
    assert not errors
    assert w.result is not None and not w.result["stopped"]
    assert len(w.plot.series["loss"]) == 2 and w.plot.series["AP"]  # baseline + validation points
    assert "wtuned" in list_models()
    assert seg.model.currentText() == "wtuned"
    assert "wtuned" in [seg.model.itemText(i) for i in range(seg.model.count())]
    summary = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert len(summary["replay"]) == 1 and summary["replay_fraction"] == w.replay_share.value() > 0
    assert summary["anchor"] == 0.5
    assert read_metadata(w.result["path"])["config"]["settings"]["anchor"] == 0.5  # reached the training loop


def test_stop_keeps_the_last_checkpoint(viewer, qtbot, tmp_path, errors):
    w = _widget(viewer, tmp_path, iterations=500, name="stopped")
    w.run_button.click()
    qtbot.waitUntil(lambda: len(w.plot.series["loss"]) >= 1, timeout=120_000)
    w.stop_button.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert not errors
    assert w.result["stopped"] and w.result["path"].exists()
    assert "stopped" in list_models()
    assert (tmp_path / "run" / "last.safetensors").exists()


def test_errors_become_notifications(viewer, qtbot, tmp_path, errors):
    w = _widget(viewer, tmp_path)
    viewer.layers[cells_name(IMAGE)].metadata[META_KEY]["reviewed"] = []
    w.run_button.click()
    assert w.worker is None and errors and "no reviewed frames" in errors[-1]
    # an error inside the worker (a broken annotation file) is a notification too
    w.cells.setCurrentText("(none)")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    w.add_files([bad])
    w.run_button.click()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    assert "bad.json" in errors[-1]


def test_stop_while_replay_frames_render(tmp_path):
    """Stop during the rendering of replay frames: the job ends after the sequence in
    progress, with no model (nothing was trained) and nothing published."""
    from napari_amodal._napari.widgets.finetune import finetune_job
    from napari_amodal.train.finetune import SYNTHETIC_FRAMES_PER_SEQUENCE
    from napari_amodal.utils import drain

    init = save_untrained(tmp_path / "init" / "tiny.safetensors")
    holder = {}
    run = tmp_path / "run"
    job = finetune_job(out_dir=run, holder=holder, data=[sample_path(EMBRYO_GT)], name="never", init=init,
                       iterations=3, device="cpu", val_fraction=0.0, validate_before=False,
                       synthetic_replay=3 * SYNTHETIC_FRAMES_PER_SEQUENCE)
    for done in (0, 1):  # before the first sequence, after it
        ev = next(job)
        assert ev.extra["stage"] == "replay" and (ev.extra["done"], ev.extra["total"]) == (done, 3)
    holder["stop"] = True
    assert drain(job) == {"path": None, "stopped": True, "name": None}
    assert len(list((run / "data" / "synthetic").rglob("embryo_*.tif"))) == 1
    assert not list(run.glob("*.safetensors")) and "never" not in list_models()


def test_curve_plot_draws_its_axes_and_curves(qtbot):
    from napari_amodal._napari.widgets.finetune import CurvePlot

    plot = CurvePlot()
    qtbot.addWidget(plot)
    plot.resize(320, 160)
    plot.clear(100)
    for it in range(0, 101, 10):
        plot.add("loss", it, 2.0 - it / 100)
    plot.add("AP", 50, 0.6)
    image = plot.grab().toImage()
    colours = {image.pixelColor(x, y).getRgb()[:3] for x in range(image.width()) for y in range(image.height())}

    def drawn(c):  # antialiasing blends the edges: a pixel close to the colour
        return any(sum(abs(a - b) for a, b in zip(c.getRgb()[:3], px)) < 40 for px in colours)

    assert drawn(CurvePlot.COLOURS["loss"]) and drawn(CurvePlot.COLOURS["AP"])
