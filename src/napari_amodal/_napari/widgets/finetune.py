"""The "Fine-tune" widget: adapt a model to proofread frames, in a worker thread.

Thin over :func:`napari_amodal.train.finetune.finetune`: :meth:`FinetuneWidget.finetune_arguments`
turns the GUI values into arguments of :func:`finetune_job` (a plain generator,
no Qt), which runs in a napari generator worker. Training data are the reviewed
frames of a cell layer (with its image layer, as the Proofread widget keeps
them) and/or saved project / COCO-amodal files. Losses and validation AP are
drawn live in the dock (:class:`CurvePlot`, plain QPainter). Stop ends the run
after the current iteration and keeps the best (else the last) checkpoint as
the result. A result saved under a name is offered at once in every
"Amodal segmentation" widget of the viewer, which can re-segment the stack.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

from napari.layers import Image
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...train.finetune import DEFAULTS
from ..layers import META_KEY
from ._common import (
    cells_name,
    check_image_fits,
    check_model,
    check_output_folder,
    compact,
    follow_renames,
    image_axes,
    image_file,
    import_compute_stack,
    is_cell_layer,
    keep_choice_on_rename,
    layer_frames,
    report_error,
    report_info,
    scroll_body,
    set_choices,
    start_worker,
)

NO_LAYER = "(none)"
TRAIN_LABELS = {"heads": "heads (backbone frozen)", "all": "all layers", "refit_vqvae": "refit shape VQ-VAE + heads"}


def finetune_job(*, out_dir, holder: dict, layer=None, data=(), name=None, **kwargs):
    """Generator (no Qt): fine-tune and yield :class:`TrainEvent` s; returns
    ``{"path", "stopped", "name"}``.

    ``layer`` is ``(project, image, axes)``: an in-memory annotation project and
    its image stack, whose reviewed frames are written to ``out_dir/layer``.
    Setting ``holder["stop"]`` ends the run after the current iteration (or replay sequence); the
    best (else last) checkpoint is then the result (saved under ``name`` too).
    """
    from ...train.finetune import (
        finetune,
        publish_model,
        stopped_result,
        write_reviewed_stack,
    )

    files = list(data)
    if layer is not None:
        project, image, axes = layer
        files.insert(0, write_reviewed_stack(project, image, Path(out_dir) / "layer", axes))
    gen = finetune(data=files, out_dir=out_dir, name=name, **kwargs)
    while True:
        if holder.get("stop"):
            gen.close()  # saves last.safetensors
            path = stopped_result(out_dir)
            if path is not None and name:
                path = publish_model(path, name)
            return {"path": path, "stopped": True, "name": name if path is not None else None}
        try:
            event = next(gen)
        except StopIteration as stop:
            return {"path": stop.value, "stopped": False, "name": name}
        yield event


def segmentation_widgets(viewer) -> list:
    """The "Amodal segmentation" widgets open on ``viewer``."""
    from .segmentation import SegmentationWidget

    app = QApplication.instance()
    widgets = app.allWidgets() if app is not None else []
    return [w for w in widgets if isinstance(w, SegmentationWidget) and w.viewer is viewer]


def offer_model(viewer, name: str | None, path) -> list:
    """Make a new model the choice of every segmentation widget of ``viewer``
    (by name when it has one, else as a model file); returns those widgets."""
    from .segmentation import FILE_CHOICE

    widgets = segmentation_widgets(viewer)
    for w in widgets:
        if name:
            w.add_model_choice(name)
        else:
            w.model_path.setText(str(path))
            w.model.setCurrentText(FILE_CHOICE)
    return widgets


class CurvePlot(QWidget):
    """Loss (left scale, from 0 to its maximum) and validation AP (right scale, 0..1)
    against the iteration, drawn with QPainter (no plotting library needed)."""

    COLOURS: ClassVar[dict] = {"loss": QColor(70, 160, 230), "AP": QColor(240, 150, 40)}

    def __init__(self, parent=None):
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {"loss": [], "AP": []}
        self.total = 1
        self.setMinimumHeight(120)

    def clear(self, total: int = 1) -> None:
        self.series = {"loss": [], "AP": []}
        self.total = max(1, int(total))
        self.update()

    def add(self, key: str, x: float, y: float | None) -> None:
        if y is not None and math.isfinite(y):
            self.series[key].append((float(x), float(y)))
            self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        m, left, right = 6, 34, 22  # margins: the left and right ones hold the scales
        x0, w, h = left, max(1, self.width() - left - right), max(1, self.height() - 2 * m - 26)
        p.setPen(QPen(QColor(128, 128, 128)))
        p.drawRect(x0, m, w, h)
        top = max((y for _, y in self.series["loss"]), default=1.0) or 1.0
        for key, scale in (("loss", top), ("AP", 1.0)):
            pts = self.series[key]
            p.setPen(QPen(self.COLOURS[key], 2))
            mapped = [QPointF(x0 + w * x / self.total, m + h * (1 - min(y / scale, 1.0))) for x, y in pts]
            for a, b in pairwise(mapped):
                p.drawLine(a, b)
            for q in mapped[-1:] if key == "loss" else mapped:
                p.drawEllipse(q, 2.5, 2.5)
        # axes: loss from 0 to its maximum on the left, AP 0..1 on the right, iterations below
        p.setPen(QPen(self.COLOURS["loss"]))
        p.drawText(2, m + 10, f"{top:.2g}")
        p.drawText(2, m + h, "0")
        p.setPen(QPen(self.COLOURS["AP"]))
        p.drawText(x0 + w + 3, m + 10, "1")
        p.drawText(x0 + w + 3, m + h, "0")
        fg = QPen(self.palette().color(self.foregroundRole()))
        p.setPen(fg)
        p.drawText(x0, m + h + 12, "0")
        p.drawText(x0 + w - 40, m + h + 12, f"{self.total} it")
        last = {k: v[-1][1] for k, v in self.series.items() if v}
        text = "  ".join(f"{k} {v:.3f}" for k, v in last.items()) or "loss (blue, left), validation AP (orange, right)"
        p.drawText(x0, self.height() - 2, text)
        p.end()


class FinetuneWidget(QWidget):
    """Fine-tune a model on reviewed frames; the result appears in the segmentation widget."""

    def __init__(self, napari_viewer):
        super().__init__()
        import_compute_stack()
        self.viewer = napari_viewer
        self.worker = None
        self.result: dict | None = None
        self._run: dict[str, Any] | None = None

        self.files = QListWidget()
        self.files.setMaximumHeight(70)
        add = QPushButton("Add files...")
        add.clicked.connect(self._browse_files)
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: [self.files.takeItem(self.files.row(i)) for i in self.files.selectedItems()])
        self.form, self.settings = self._build_forms()
        f, g = self.form, self.settings
        # the Qt widgets under the forms, which the rest of the dock (and scripts) use
        self.cells, self.image, self.init, self.iterations = (f.cells.native, f.image.native, g.init.native,
                                                              g.iterations.native)
        self.lr, self.train, self.replay, self.replay_share = (g.lr.native, g.train.native, g.replay.native,
                                                               g.replay_share.native)
        self.anchor, self.device, self.name, self.out_dir = (g.anchor.native, g.device.native, g.save_as.native,
                                                             g.out_dir.native)
        self.resegment = g.resegment.native
        self.lr.setDecimals(5)  # magicgui takes decimals from the step
        self.anchor.setDecimals(3)
        self.init.setEditable(True)
        self.out_dir.setPlaceholderText("default: ~/.napari-amodal/finetune/NAME")
        self.plot = CurvePlot()
        self.progress = None  # napari's progress (its activity dock) while a run goes
        self.run_button = QPushButton("Fine-tune")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        file_row = QHBoxLayout()
        file_row.addWidget(add)
        file_row.addWidget(remove)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        body = QVBoxLayout(scroll_body(self))
        files = QFormLayout()
        files.addRow("Project / COCO files", self.files)
        files.addRow(file_row)
        body.addWidget(compact(f))
        body.addLayout(files)
        body.addWidget(compact(g))
        body.addLayout(buttons)
        body.addWidget(self.plot)
        body.addWidget(self.status)
        body.addStretch(1)

        self._fill_choices()
        self.refresh_layers()
        self.cells.currentTextChanged.connect(self._cells_changed)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        follow_renames(self.viewer, lambda layer, old: keep_choice_on_rename([self.cells, self.image], old,
                                                                             layer.name, self.refresh_layers))

    # -- GUI state -----------------------------------------------------------
    def _build_forms(self):
        """The parameter forms, magicgui Containers: the layer pickers and the training
        settings, shown either side of the file list (a Qt list: magicgui has no list of
        files to add and remove)."""
        from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, SpinBox

        pickers = Container(labels=True, widgets=[
            ComboBox(name="cells", label="Cell layer", choices=[(NO_LAYER, None)]),
            ComboBox(name="image", label="Image", choices=[]),
        ])
        settings = Container(labels=True, widgets=[
            ComboBox(name="init", label="Start from", choices=["bundled"],
                     tooltip="model to start from: a name or a .safetensors path"),
            SpinBox(name="iterations", label="Iterations", min=1, max=100_000, value=DEFAULTS["iterations"]),
            FloatSpinBox(name="lr", label="Learning rate", min=1e-5, max=1.0, step=0.001, value=DEFAULTS["lr"]),
            ComboBox(name="train", label="Train", choices=[(label, key) for key, label in TRAIN_LABELS.items()],
                     value=DEFAULTS["train"]),
            SpinBox(name="replay", label="Replay synthetic frames", min=0, max=400, value=DEFAULTS["synthetic_replay"],
                    tooltip="synthetic embryo frames (the kind the bundled model was trained on), rendered at the "
                            "start of the run (about 0.3 s each) and mixed in so the model does not forget them; "
                            "0: none"),
            FloatSpinBox(name="replay_share", label="Replay share", min=0.0, max=0.9, step=0.05,
                         value=DEFAULTS["replay_fraction"],
                         tooltip="chance that a training sample is a replayed synthetic frame"),
            FloatSpinBox(name="anchor", label="Stay near start", min=0.0, max=100.0, step=0.1, value=DEFAULTS["anchor"],
                         tooltip="how strongly the weights are pulled back toward the starting model's (L2-SP), "
                                 "against forgetting what it could do; 0: off"),
            ComboBox(name="device", label="Device", choices=["auto"]),
            LineEdit(name="save_as", label="Save as", value="finetuned",
                     tooltip="saved as this model name (found in the segmentation widget's model list)"),
            LineEdit(name="out_dir", label="Output folder"),
            CheckBox(name="resegment", label="", text="re-segment the stack afterwards"),
        ])
        return pickers, settings

    def reset_choices(self, event=None) -> None:
        """Refresh the layer pickers (napari calls this on a docked widget when layers change)."""
        self.refresh_layers()

    def _fill_choices(self) -> None:
        from ...models import available_devices, list_models

        try:
            names = list(list_models())
        except OSError:
            names = []
        set_choices(self.settings.init, names or ["bundled"])
        self.init.setCurrentText("bundled" if "bundled" in names else (names[0] if names else "bundled"))
        devices = list(available_devices())
        set_choices(self.settings.device, devices)
        self.settings.device.value = devices[0]

    def _browse_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Projects or COCO-amodal files", "", "JSON (*.json)")
        self.add_files(paths)

    def add_files(self, paths) -> None:
        have = set(self.file_list())
        self.files.addItems([str(p) for p in paths if str(p) not in have])

    def file_list(self) -> list[str]:
        return [self.files.item(i).text() for i in range(self.files.count())]

    def refresh_layers(self, event=None) -> None:
        """List the cell layers (the last one chosen when none was) and the Image layers; the
        chosen layers stay chosen (by identity: a renamed layer too)."""
        cells = [ly for ly in self.viewer.layers if is_cell_layer(ly)]
        had = self.form.cells.value
        set_choices(self.form.cells, [(NO_LAYER, None)] + [(ly.name, ly) for ly in cells])
        if had is None and cells:
            self.form.cells.native.blockSignals(True)
            self.form.cells.value = cells[-1]
            self.form.cells.native.blockSignals(False)
        set_choices(self.form.image, [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Image)])
        self._cells_changed()

    def _cells_changed(self, *args) -> None:
        layer = self._cell_layer()
        src = layer.metadata.get(META_KEY, {}).get("source_image") if layer is not None else None
        if src and src in self.viewer.layers:
            self.image.setCurrentText(src)

    def _cell_layer(self):
        name = self.cells.currentText()
        return self.viewer.layers[name] if name != NO_LAYER and name in self.viewer.layers else None

    # -- GUI values -> API arguments ----------------------------------------
    def layer_project(self):
        """``(project, image data, axes)`` of the chosen cell layer and image, or None."""
        from ... import project as core

        layer = self._cell_layer()
        if layer is None:
            return None
        meta = layer.metadata.get(META_KEY, {})
        reviewed = sorted(int(t) for t in meta.get("reviewed", []))
        if not reviewed:
            raise ValueError(f"no reviewed frames in layer '{layer.name}': mark frames reviewed "
                             "in the Proofread widget first")
        name = self.image.currentText()
        if name not in self.viewer.layers or not isinstance(self.viewer.layers[name], Image):
            raise ValueError("Choose the image the cells belong to (an Image layer).")
        image = self.viewer.layers[name]
        check_image_fits(image, layer)
        axes = image_axes(image)
        data = image.data if "T" in axes else image.data[None]
        _, file_name = image_file(image)
        shape = tuple(meta.get("image_shape", ())) or tuple(data.shape[-2:])
        project = core.AnnotationProject.from_frames(
            {"name": file_name}, layer_frames(layer), n_frames=int(data.shape[0]), frame_shape=shape[-2:],
            reviewed=reviewed, categories=meta.get("categories"),
        )
        return project, data, axes if "T" in axes else "T" + axes

    def finetune_arguments(self) -> dict:
        """The GUI values as :func:`finetune_job` arguments (ValueError when they do not fit,
        checked before the worker starts, so nothing is written for a run that cannot go)."""
        from ...models import user_model_dir
        from ...train.finetune import check_name

        layer = self.layer_project()
        files = self.file_list()
        if layer is None and not files:
            raise ValueError("No training data: choose a cell layer with reviewed frames, or add project / "
                             "COCO-amodal files.")
        for f in files:
            if not Path(f).is_file():
                raise ValueError(f"{f}: no such project or annotation file (remove it from the list)")
        name = self.name.text().strip() or None
        if name:
            check_name(name)
            if (user_model_dir() / f"{name}.safetensors").exists():
                raise ValueError(f"a model called {name!r} exists already: choose another name to save as")
        init = self.init.currentText().strip() or "bundled"
        check_model(init)
        out = self.out_dir.text().strip()
        # a fresh folder per run by default: an earlier run's checkpoints are never reused or overwritten
        stamp = __import__("time").strftime("%Y%m%d-%H%M%S")
        out_dir = Path(out).expanduser() if out else user_model_dir().parent / "finetune" / f"{name or 'unnamed'}-{stamp}"
        check_output_folder(out_dir)
        earlier = sorted(p.name for p in out_dir.glob("*.safetensors")) + (
            ["log.jsonl"] if (out_dir / "log.jsonl").exists() else [])
        if earlier:
            raise ValueError(f"output folder {out_dir} holds an earlier run ({', '.join(earlier)}): "
                             "choose a new folder (that run is left as it is)")
        iterations = int(self.iterations.value())
        return {
            "init": init, "layer": layer, "data": files, "out_dir": out_dir, "name": name,
            "iterations": iterations, "lr": float(self.lr.value()), "train": self.train.currentData(),
            "device": self.device.currentText() or "auto", "val_every": max(1, iterations // 10),
            "synthetic_replay": int(self.replay.value()),
            "replay_fraction": float(self.replay_share.value()) if self.replay.value() else 0.0,
            "anchor": float(self.anchor.value()),
        }

    # -- running -------------------------------------------------------------
    def run(self) -> None:
        if self.worker is not None:
            report_info("A fine-tuning run is already going.")
            return
        try:
            args = self.finetune_arguments()
        except Exception as e:  # noqa: BLE001 - every bad input becomes a notification
            report_error(f"Cannot fine-tune: {e}")
            return
        holder: dict = {}
        self.result = None
        self._run = {"args": args, "holder": holder, "image": self.image.currentText()}
        self.plot.clear(args["iterations"])
        from napari.utils import progress

        self.progress = progress(total=args["iterations"], desc="Fine-tuning")
        start_worker(self, finetune_job, {**args, "holder": holder}, status="preparing the data...",
                     on_yielded=self._on_event, on_returned=self._on_returned, on_error=self._on_error,
                     on_finished=self._on_finished)

    def stop(self) -> None:
        """Stop after the current iteration; the best (else last) checkpoint becomes the result."""
        if self.worker is not None:
            self._run["holder"]["stop"] = True
            self.status.setText("stopping after this step...")

    def _on_event(self, ev) -> None:
        stage = ev.extra.get("stage")
        if stage == "baseline":
            self.plot.add("AP", 0, (ev.validation or {}).get("AP"))
            self.status.setText(f"validation AP before: {_ap(ev.validation)}")
            return
        if stage == "replay":
            self.status.setText(f"rendering {ev.extra['frames']} synthetic frames to replay: "
                                f"{ev.extra['done']} of {ev.extra['total']} sequences")
            return
        if stage == "shape":
            self.status.setText(f"shape model refitted (IoU {ev.extra['report']['val_iou']:.3f}); training...")
            return
        if self.progress is not None:
            self.progress.update(ev.iteration - self.progress.n)
        self.plot.add("loss", ev.iteration, ev.losses.get("loss"))
        text = f"iteration {ev.iteration} of {ev.total}: loss {ev.losses.get('loss', float('nan')):.3f}"
        if ev.validation is not None:
            self.plot.add("AP", ev.iteration, ev.validation.get("AP"))
            text += f", validation AP {_ap(ev.validation)}"
        self.status.setText(text)

    def _on_returned(self, result: dict) -> None:
        self.result = result
        if result["path"] is None:
            report_info("Fine-tuning stopped before the first checkpoint; nothing was saved.")
            self.status.setText("stopped; nothing saved")
            return
        widgets = offer_model(self.viewer, result["name"], result["path"])
        what = "stopped; kept" if result["stopped"] else "done:"
        label = f"model '{result['name']}'" if result["name"] else str(result["path"])
        self.status.setText(f"{what} {label} ({result['path']})")
        report_info(f"Fine-tuning {'stopped' if result['stopped'] else 'finished'}: {label} is ready "
                    "in the segmentation widget.")
        if self.resegment.isChecked():
            self._resegment(widgets, result)

    def _resegment(self, widgets, result) -> None:
        try:
            if not widgets:
                self.viewer.window.add_plugin_dock_widget("napari-amodal", "Amodal segmentation")
                widgets = offer_model(self.viewer, result["name"], result["path"])
            seg = widgets[0]
            seg.image.setCurrentText(self._run["image"])
            # the reviewed frames are the user's corrections: never overwrite them
            image = self.viewer.layers[self._run["image"]]
            n_frames = image.data.shape[0] if "T" in image_axes(image) else 1
            cells = cells_name(self._run["image"])
            reviewed = set()
            if cells in self.viewer.layers:
                reviewed = set(self.viewer.layers[cells].metadata.get(META_KEY, {}).get("reviewed", []))
            seg.run(frames=[t for t in range(n_frames) if t not in reviewed])
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not re-segment with the new model: {e}")

    def _on_error(self, error) -> None:
        from ...train.finetune import FinetuneError

        if isinstance(error, (FinetuneError, FileNotFoundError)):
            report_error(f"Cannot fine-tune: {error}")
        else:
            report_error(f"Fine-tuning failed: {type(error).__name__}: {error}. Earlier checkpoints are intact.")
        self.status.setText(f"failed: {error}")

    def _on_finished(self) -> None:
        self.worker = None
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    def closeEvent(self, event) -> None:
        self.stop()
        super().closeEvent(event)


def _ap(v) -> str:
    return "n/a" if not v or v.get("AP") is None else f"{v['AP']:.3f}"
