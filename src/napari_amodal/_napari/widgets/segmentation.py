"""The "Amodal segmentation" widget: run a model on an image layer in a worker thread.

Thin by design: :meth:`SegmentationWidget.segment_arguments` turns the GUI
values into :class:`~napari_amodal.segment.Segmenter` arguments, the run is
:func:`segment_job` (a plain generator over ``Segmenter.segment``) in a napari
generator worker, and the results become layers through ``..layers``.
Stop asks the worker to quit: it stops at the next yield, i.e. after the frame
being computed, and the frames already done are added as layers.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from napari.layers import Image, Tracks
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..layers import CELL_LAYER_KIND, META_KEY, OCCLUSION_STYLE
from ._common import (
    FILLING,
    derived_layer,
    follow_renames,
    keep_choice_on_rename,
    SegmentationResult,
    cells_name,
    check_model,
    compact,
    continued_tracker,
    current_frame,
    image_axes,
    image_file,
    import_compute_stack,
    is_cell_layer,
    layer_plane,
    occlusion_name,
    placed_like,
    report_error,
    report_info,
    scroll_body,
    set_choices,
    set_features,
    start_worker,
    tracks_name,
)

FILE_CHOICE = "file..."
SHOW_EVERY_S = 0.5  # a run's results are shown in batches at most this often...
SHOW_SHARE = 0.2  # ...and no more often than keeps showing them to this share of the GUI thread
SCOPES = ("current frame", "frame range", "all frames")


def segment_job(model: str, device: str, score_threshold: float, stack, holder: dict,
                result: SegmentationResult | None = None, **kwargs):
    """Generator (no Qt): load the model, then yield ``(done, total)`` after each
    frame and return a :class:`SegmentationResult` (polygons, features and
    occlusion maps, made here in the worker so the GUI thread only hands them to
    napari, and so that dense masks never pile up over a long stack).
    ``holder["result"]`` gives the caller the frames done if the run is stopped.
    Keyword arguments go to :meth:`~napari_amodal.segment.Segmenter.iter_frames`."""
    from ...segment import Segmenter, frames_view

    if result is None:
        from ...io_images import guess_axes

        axes = kwargs.get("axes") or guess_axes(np.shape(stack))
        result = SegmentationResult(stack="T" in axes, name="amodal cells", plane=layer_plane(axes, kwargs.get("plane")))
    holder["result"] = result
    import pandas  # noqa: F401 - napari's Shapes features need it: imported here, not in the GUI thread

    seg = Segmenter.load(model, device=device, score_threshold=score_threshold)
    frames = kwargs.get("frames")
    n_t = len(frames_view(stack, kwargs.get("axes"), kwargs.get("plane"), kwargs.get("channel"))[0])
    total = len(frames) if frames is not None else n_t
    for inst in seg.iter_frames(stack, **kwargs):
        result.add(inst)
        yield len(result), total
    return result


def explain_error(error: BaseException, device: str = "") -> str:
    """A message a user can act on for an error raised during segmentation."""
    from ...models import ModelNotFoundError

    text = str(error)
    if "out of memory" in text.lower() or type(error).__name__ == "OutOfMemoryError":
        return (f"Segmentation ran out of memory on device '{device or 'auto'}': choose fewer frames, "
                "a smaller image, or the cpu device.")
    if isinstance(error, ModelNotFoundError):
        return f"Model not found: {text}"
    if isinstance(error, ValueError):
        return f"Cannot segment: {text}"
    return f"Segmentation failed: {type(error).__name__}: {text}"


def ask_reviewed(parent, frames: list[int]) -> str:
    """Ask what to do with reviewed frames a run would segment again: ``"skip"`` them (the
    default), ``"replace"`` their corrections, or ``"cancel"`` the run."""
    from qtpy.QtWidgets import QMessageBox

    shown = ", ".join(map(str, frames[:10])) + (f" and {len(frames) - 10} more" if len(frames) > 10 else "")
    box = QMessageBox(QMessageBox.Icon.Question, "Reviewed frames",
                      f"{len(frames)} of the frames to segment are reviewed ({shown}). Segmenting them again "
                      "replaces your corrections there.", parent=parent)
    skip = box.addButton("Skip reviewed frames", QMessageBox.ButtonRole.AcceptRole)
    replace = box.addButton("Replace them", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(skip)
    box.exec_()
    return {id(skip): "skip", id(replace): "replace"}.get(id(box.clickedButton()), "cancel")


class SegmentationWidget(QWidget):
    """Segment an image layer into amodal cells and an occlusion map."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._run: dict[str, Any] | None = None
        self._ranged_for = None  # the image the range and plane boxes were fitted to
        self._show_timer = QTimer(self)
        self._show_timer.setSingleShot(True)
        self._show_timer.timeout.connect(self._show_new)
        self._show_cost = 0.0  # seconds the last batch of results took to show

        self.form = self._build_form()
        f = self.form
        # the Qt widgets under the form, which the rest of the dock (and scripts) use
        self.image, self.model, self.device = f.image.native, f.model.native, f.device.native
        self.model_path, self.device_info = f.model_file.path.native, f.device_info.native
        self.threshold, self.temporal, self.plane = f.threshold.native, f.temporal.native, f.plane.native
        self.scope, self.first, self.last = f.scope.native, f.range.first.native, f.range.last.native
        f.model_file.browse.changed.connect(self._browse_model)
        self.run_button = QPushButton("Run")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        body = QVBoxLayout(scroll_body(self))
        body.addWidget(compact(f))
        body.addLayout(buttons)
        body.addWidget(self.status)
        body.addStretch(1)

        import_compute_stack()
        self._fill_models()
        self.refresh_layers()
        self.image.currentTextChanged.connect(self._image_changed)
        self.run_button.clicked.connect(lambda: self.run())  # clicked passes a bool we must not take for frames
        self.stop_button.clicked.connect(self.stop)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        follow_renames(self.viewer, lambda layer, old: keep_choice_on_rename([self.image], old, layer.name,
                                                                             self.refresh_layers))
        self._image_changed()

    # -- GUI state -----------------------------------------------------------
    def _build_form(self):
        """The parameter form, a magicgui Container: its image picker lists the viewer's layers
        (Image layers first; the others are listed to say why they do not fit) and follows
        layers being added, removed and renamed (:meth:`reset_choices`)."""
        from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

        path = LineEdit(name="path", tooltip="path to a .safetensors model")
        path.native.setPlaceholderText("path to a .safetensors model")
        return Container(labels=True, widgets=[
            ComboBox(name="image", label="Image", choices=self._image_choices),
            ComboBox(name="model", label="Model", choices=[FILE_CHOICE]),
            Container(name="model_file", label="Model file", layout="horizontal", labels=False,
                      widgets=[path, PushButton(name="browse", text="Browse...")]),
            ComboBox(name="device", label="Device", choices=["auto"]),
            Label(name="device_info", label=" "),
            FloatSpinBox(name="threshold", label="Score threshold", min=0.0, max=1.0, step=0.05, value=0.5),
            CheckBox(name="temporal", label="", text="Decode over time", value=True,
                     tooltip="counts that respect the lineage: a cell missed in one frame is carried over "
                             "(inferred), one seen in a single frame dropped; off: each frame on its own"),
            SpinBox(name="plane", label="Focal plane", min=0, max=0, tooltip="focal plane for (T, Z, Y, X) images"),
            ComboBox(name="scope", label="Frames", choices=list(SCOPES)),
            Container(name="range", label="Range", layout="horizontal", labels=False,
                      widgets=[SpinBox(name="first", min=0, max=0), Label(value="to"), SpinBox(name="last", min=0, max=0)]),
        ])

    def _image_choices(self, widget=None) -> list[tuple[str, Any]]:
        layers = [ly for ly in self.viewer.layers if not is_cell_layer(ly)]
        layers.sort(key=lambda ly: not isinstance(ly, Image))
        return [(ly.name, ly) for ly in layers]

    def reset_choices(self, event=None) -> None:
        """Refresh the layer picker (napari calls this on a docked widget when layers change)."""
        self.refresh_layers()

    def add_model_choice(self, name: str) -> None:
        """Offer model ``name`` (before the "file..." entry) and choose it."""
        names = [c for c in self.form.model.choices if c != FILE_CHOICE]
        if name not in names:
            set_choices(self.form.model, [*names, name, FILE_CHOICE])
        self.form.model.value = name

    def _fill_models(self) -> None:
        from ...models import available_devices, list_models

        try:
            names = list(list_models())
        except OSError:
            names = []
        self.form.model.choices = [*names, FILE_CHOICE]
        self.form.model.value = names[0] if names else FILE_CHOICE
        devices = list(available_devices())
        self.form.device.choices = devices
        self.form.device.value = devices[0]
        self.device.currentTextChanged.connect(self._show_device)
        self._show_device()

    def _show_device(self, *args) -> None:
        from ...models import device_description

        try:
            self.device_info.setText("runs on " + device_description(self.device.currentText() or "auto"))
        except Exception as e:  # noqa: BLE001 - a device that cannot be used is said so, not raised
            self.device_info.setText(f"not usable: {e}")

    def _browse_model(self, *args) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "Models (*.safetensors)")
        if path:
            self.model_path.setText(path)
            self.model.setCurrentText(FILE_CHOICE)

    def refresh_layers(self, event=None) -> None:
        """List layers, Image layers first (others are listed to explain why they don't fit);
        the chosen layer stays chosen (by identity: a renamed layer too)."""
        set_choices(self.form.image, self._image_choices())
        self._image_changed()

    def _image_changed(self, *args) -> None:
        """Fit the frame range and focal plane to a newly chosen image (the same image chosen
        again, e.g. when another layer is added, keeps what the user set)."""
        layer = self._layer()
        if layer is None or not isinstance(layer, Image) or layer is self._ranged_for:
            return
        try:
            axes = image_axes(layer)
        except ValueError:
            return
        self._ranged_for = layer
        n_t = layer.data.shape[0] if "T" in axes else 1
        n_z = layer.data.shape[axes.index("Z")] if "Z" in axes else 1
        for spin in (self.first, self.last):
            spin.setRange(0, max(n_t - 1, 0))
        self.last.setValue(max(n_t - 1, 0))
        self.plane.setRange(0, max(n_z - 1, 0))
        self.plane.setValue(n_z // 2)
        self.plane.setEnabled("Z" in axes)

    def _layer(self):
        name = self.image.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    # -- GUI values -> API arguments ----------------------------------------
    def segment_arguments(self) -> dict:
        """Turn the GUI values into :func:`segment_job` arguments; ValueError /
        ModelNotFoundError with a clear message when they do not fit."""
        layer = self._layer()
        if layer is None:
            raise ValueError("No image to segment: open an image first.")
        if not isinstance(layer, Image):
            raise ValueError(
                f"Layer '{layer.name}' is a {type(layer).__name__} layer; choose an Image layer to segment."
            )
        axes = image_axes(layer)
        model = self.model.currentText()
        if model == FILE_CHOICE:
            model = self.model_path.text().strip()
            if not model:
                raise ValueError("Choose a model file (or a named model).")
        check_model(model)  # a missing, foreign or shape-model file fails here, before the worker starts
        n_t = layer.data.shape[0] if "T" in axes else 1
        scope = self.scope.currentText()
        if "T" not in axes or scope == "current frame":
            frames = [current_frame(self.viewer, layer) if "T" in axes else 0]
        elif scope == "frame range":
            if self.first.value() > self.last.value():
                raise ValueError(f"Frame range {self.first.value()}..{self.last.value()} is empty.")
            frames = list(range(self.first.value(), self.last.value() + 1))
        else:
            frames = list(range(n_t))
        _, file_name = image_file(layer)
        return {
            "model": model,
            "device": self.device.currentText() or "auto",
            "score_threshold": float(self.threshold.value()),
            "temporal": bool(self.temporal.isChecked()),
            "stack": layer.data,
            "axes": axes,
            "plane": int(self.plane.value()) if "Z" in axes else None,
            "frames": frames,
            "file_name": file_name,
        }

    # -- running -------------------------------------------------------------
    def run(self, frames: list[int] | None = None) -> None:
        """Start segmenting; ``frames`` overrides the scope (e.g. only unreviewed frames)."""
        if self.worker is not None:
            report_info("A segmentation is already running.")
            return
        try:
            args = self.segment_arguments()
        except Exception as e:  # noqa: BLE001 - every bad input becomes a notification
            report_error(explain_error(e, self.device.currentText()))
            return
        if frames is not None:
            if not frames:
                report_info("Nothing to segment: every frame is reviewed.")
                return
            args["frames"] = sorted(frames)
        if not self._spare_reviewed(args):
            return
        holder: dict = {}
        self._run = {"image": self._layer(), "args": args, "holder": holder, "stopped": False, "done": 0, "shown": 0}
        tracker = continued_tracker(self._cell_layer(self._layer()), min(args["frames"]) if args["frames"] else 0)
        start_worker(
            self, segment_job, {**args, "holder": holder, "result": self._new_result(args), "tracker": tracker},
            status="loading the model...", on_yielded=self._on_progress, on_returned=self._on_returned,
            on_error=self._on_error, on_aborted=self._on_aborted, on_finished=self._on_finished,
            _progress={"total": len(args["frames"]), "desc": "Amodal segmentation"},
        )

    def _spare_reviewed(self, args: dict) -> bool:
        """Ask before a run replaces reviewed frames; drops them from ``args["frames"]`` unless
        the user chooses to replace them. False: nothing to run."""
        layer = self._cell_layer(self._layer())
        reviewed = set(layer.metadata.get(META_KEY, {}).get("reviewed", [])) if layer is not None else set()
        hit = sorted(reviewed & set(args["frames"]))
        if not hit:
            return True
        choice = ask_reviewed(self, hit)
        if choice == "cancel":
            return False
        if choice == "skip":
            args["frames"] = [t for t in args["frames"] if t not in reviewed]
            if not args["frames"]:
                report_info("Nothing to segment: every chosen frame is reviewed.")
                return False
        return True

    def stop(self) -> None:
        """Stop after the frame being computed; frames done are kept."""
        if self.worker is not None:
            self._run["stopped"] = True
            self.status.setText("stopping after this frame...")
            self.worker.quit()

    def _on_progress(self, value) -> None:
        done, total = value
        self._run["done"] = done  # frames the worker has finished (read only those)
        self.status.setText(f"segmented {done} of {total} frames")
        if not self._show_timer.isActive():  # shown in batches: each add costs napari more as the layer grows
            self._show_timer.start(int(1000 * max(SHOW_EVERY_S, self._show_cost / SHOW_SHARE)))

    def _show_new(self) -> None:
        """Show the frames finished since the last time (the timer calls this during a run)."""
        run = self._run
        result = run["holder"].get("result") if run else None
        if result is None or run["done"] <= run["shown"]:
            return
        t0 = time.perf_counter()
        try:
            self.show_frames(run["image"], result, run["args"], run["shown"], run["done"])
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not show the results: {e}")
        run["shown"] = run["done"]
        self._show_cost = time.perf_counter() - t0

    def _on_returned(self, result) -> None:
        self._finish(result)

    def _on_aborted(self) -> None:
        result = self._run["holder"].get("result") if self._run else None
        if result is not None:
            self._finish(result)
        report_info(f"Segmentation stopped; kept {len(result) if result is not None else 0} finished frame(s).")

    def _finish(self, result: SegmentationResult) -> None:
        """The worker has ended: show the frames not shown yet, then the lineage."""
        self._show_timer.stop()
        self._run["done"] = len(result)
        self._show_new()
        image = self._run["image"]
        layer = self._cell_layer(image)
        if layer is not None:
            layer.metadata.get(META_KEY, {}).pop(FILLING, None)
        try:
            if result.stack and len(result):
                self._update_tracks(image, result, layer_plane(self._run["args"]["axes"], self._run["args"]["plane"]))
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not show the lineage: {e}")
        self.status.setText(f"done: {len(result)} frame(s), {result.n_cells} cells")

    def _on_error(self, error) -> None:
        device = self._run["args"]["device"] if self._run else ""
        report_error(explain_error(error, device))

    def _on_finished(self) -> None:
        self.worker = None
        self._show_timer.stop()
        if self._run is not None:
            layer = self._cell_layer(self._run["image"])
            if layer is not None:
                layer.metadata.get(META_KEY, {}).pop(FILLING, None)
            self._run["holder"].clear()  # let the run's results go once they are layers
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)

    # -- results -> layers ---------------------------------------------------
    def _cell_layer(self, image):
        """The cell layer this widget made for ``image`` earlier, if it is still there (found
        by the image it names, which follows renames, else by its name)."""
        if image is None:
            return None
        layer = derived_layer(self.viewer, image, CELL_LAYER_KIND, cells_name(image.name))
        return layer if layer is not None and is_cell_layer(layer) else None

    def _new_result(self, args: dict) -> SegmentationResult:
        """An empty result for the run's image (filled in the worker)."""
        return SegmentationResult(stack="T" in args["axes"], name=cells_name(self._layer().name),
                                  plane=layer_plane(args["axes"], args["plane"]))

    def add_results(self, image, result, args: dict) -> None:
        """Add or update the cell, occlusion and lineage layers of ``image`` for a whole
        :class:`SegmentationResult` (or a list of FrameInstances) at once."""
        stacked = "T" in args["axes"]
        plane = layer_plane(args["axes"], args["plane"])
        if not isinstance(result, SegmentationResult):
            result = SegmentationResult.from_frames(result, stack=stacked, name=cells_name(image.name), plane=plane)
        if not len(result):
            return
        self.show_frames(image, result, args, 0, len(result))
        layer = self._cell_layer(image)
        if layer is not None:
            layer.metadata.get(META_KEY, {}).pop(FILLING, None)
        if stacked:
            self._update_tracks(image, result, plane)

    def show_frames(self, image, result: SegmentationResult, args: dict, start: int, stop: int) -> None:
        """Show frames ``start..stop-1`` of ``result`` (in the order computed) on ``image``'s
        cell and occlusion layers, replacing what those frames showed before. Shapes are
        added to the cell layer in place: rebuilding a layer of thousands of shapes froze
        napari for seconds."""
        piece = result.piece(start, stop)
        self._show_cells(image, result, piece, args, start == 0)
        self._show_occlusion(image, result, piece, args["axes"], layer_plane(args["axes"], args["plane"]))

    def _show_cells(self, image, result: SegmentationResult, piece: dict, args: dict, first: bool) -> None:
        import pandas as pd

        kwargs = result.layer_kwargs()
        layer = self._cell_layer(image)
        if layer is None and kwargs["name"] in self.viewer.layers:
            layer = self.viewer.layers[kwargs["name"]]
        if layer is not None and (not is_cell_layer(layer) or layer.ndim != kwargs["ndim"]):
            self.viewer.layers.remove(layer)
            layer = None
        frames = set(piece["frames"])
        if layer is None:
            kwargs["metadata"][META_KEY].update(source_image=image.name, reviewed=[], **{FILLING: True})
            kwargs.update(placed_like(image, kwargs["ndim"]), features=piece["features"], edge_color=piece["edge"],
                          face_color=piece["face"])
            self.viewer.add_shapes(piece["data"], **kwargs)
            return
        meta = layer.metadata.setdefault(META_KEY, {})
        meta[FILLING] = True  # the Proofread dock leaves these adds alone: they are no edits
        meta["reviewed"] = [t for t in meta.get("reviewed", []) if t not in frames]
        if len(layer.data):
            old = np.asarray(layer.features["frame"], np.int64)
            drop = np.flatnonzero(np.isin(old, list(frames)) if result.stack else np.ones(len(old), bool))
            if len(drop):
                layer.selected_data = set(drop.tolist())
                layer.remove_selected()
        if not piece["data"]:
            return
        n = len(layer.data)
        layer.add(piece["data"], shape_type="polygon", edge_color=piece["edge"], face_color=piece["face"])
        set_features(layer, pd.concat([layer.features.iloc[:n], pd.DataFrame(piece["features"])], ignore_index=True))

    def _update_tracks(self, image, result: SegmentationResult, plane) -> None:
        """The lineage as a napari Tracks layer (centroids linked over time, divisions in its
        graph): the run's frames replace those of an earlier run, the other frames stay."""
        from ..layers import tracks_layer_tuple

        name = tracks_name(image.name)
        layer = derived_layer(self.viewer, image, "amodal_tracks", name)
        rows = [r for r in result.track_rows if len(r)]
        graph = dict(result.graph)
        if layer is not None and isinstance(layer, Tracks):
            old = np.asarray(layer.data)
            old = old[:, [0, 1, -2, -1]]  # drop the Z column of a plane
            rows.insert(0, old[~np.isin(old[:, 1], result.frames)])
            graph = {**{int(k): [int(p) for p in v] for k, v in layer.graph.items()}, **graph}
        data, kwargs, _ = tracks_layer_tuple(np.concatenate(rows) if rows else np.zeros((0, 4)), graph, name, plane)
        kwargs["metadata"][META_KEY]["source_image"] = image.name
        if len(data):
            kwargs.update(placed_like(image, data.shape[1] - 1))
        if layer is not None:
            self.viewer.layers.remove(layer)
        if len(data):
            self.viewer.add_tracks(data, **kwargs)

    def _show_occlusion(self, image, result: SegmentationResult, piece: dict, axes: str, plane) -> None:
        """Write the piece's occlusion maps into ``image``'s occlusion layer (made, all zeros
        but for frames an earlier run filled, when it is missing or of another size)."""
        if not piece["frames"]:
            return
        layer = derived_layer(self.viewer, image, "occlusion", occlusion_name(image.name))
        h, w = piece["occlusion"][0].shape
        want = (h, w) if "T" not in axes else (image.data.shape[0], h, w) if plane is None else (image.data.shape[0], 1, h, w)
        if layer is not None and not (isinstance(layer, Image) and layer.data.shape == want):
            self.viewer.layers.remove(layer)
            layer = None
        if layer is None:
            layer = self._add_occlusion(image, np.zeros(want, np.float32), axes, plane)
        data = layer.data
        for t, m in zip(piece["frames"], piece["occlusion"]):
            if "T" not in axes:
                data[...] = m
            elif plane is None:
                data[t] = m
            else:
                data[t, 0] = m
        layer.refresh()

    def _add_occlusion(self, image, full: np.ndarray, axes: str, plane):
        """A new occlusion layer over ``image``, under its cells so it does not cover their
        outlines and ids."""
        kwargs = dict(OCCLUSION_STYLE)
        kwargs.pop("name", None)
        kwargs.update(placed_like(image, full.ndim))
        if "T" in axes and plane is not None:
            translate = list(kwargs["translate"])
            translate[1] += plane * kwargs["scale"][1]  # the map lies in the chosen focal plane
            kwargs["translate"] = tuple(translate)
        occ = self.viewer.add_image(full, name=occlusion_name(image.name), **kwargs,
                                    metadata={META_KEY: {"kind": "occlusion", "source_image": image.name}})
        cells = self._cell_layer(image)
        if cells is not None:
            at, below = self.viewer.layers.index(occ), self.viewer.layers.index(cells)
            if at > below:
                self.viewer.layers.move(at, below)
        return occ
