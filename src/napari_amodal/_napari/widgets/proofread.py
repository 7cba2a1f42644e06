"""The "Proofread" widget: edit amodal cells, review frames, save the project.

Each button is one call on the cell layer or into :mod:`napari_amodal.project`.
Edits (through the widget or napari's own tools on the chosen cell layer) push
a snapshot of the layer (data, features, colours, review state) on a small
undo stack first. Autosave (every ~10 s when there are unsaved edits) writes
``<project>.autosave.json`` beside the project file, or
``~/.napari-amodal/autosave/<image name>-<image hash>.autosave.json`` before the project
has a file; saving the project removes the autosave.
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ... import project as core
from ..io import describe_error
from ..layers import META_KEY, NEW_CELL_DEFAULTS
from ._common import (
    cells_layer_tuple,
    cells_name,
    check_image_fits,
    current_frame,
    fill_units,
    filling,
    follow_renames,
    go_to_frame,
    image_axes,
    image_file,
    is_cell_layer,
    keep_choice_on_rename,
    layer_plane,
    placed_like,
    recolour,
    report_error,
    report_info,
    reported,
    restore,
    scroll_body,
    set_features,
    set_shapes,
    snapshot,
)
from .offers import CorrectionOffers

HISTORY = 30
AUTOSAVE_MS = 10_000


def default_autosave_dir() -> Path:
    from ...models import user_model_dir

    return user_model_dir().parent / "autosave"


SHORTCUTS = {"Shift-N": "next", "Shift-R": "reviewed", "Shift-D": "delete", "Shift-U": "undo",
             "Shift-A": "accept_offer", "Shift-X": "reject_offer"}


def _unbind(viewer, keys) -> None:
    from napari.utils.key_bindings import KeyBinding

    for key in keys:
        viewer.keymap.pop(KeyBinding.from_str(key), None)


class ProofreadWidget(QWidget):
    """Add, delete, edit and renumber cells; walk the frames needing attention; save."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.history: deque[dict] = deque(maxlen=HISTORY)
        self.dirty = False
        self.project_path: Path | None = None
        self.last_autosave: Path | None = None
        self.last_measurements: list[Path] | None = None
        self.exported: Path | None = None
        self.edits = 0  # edits so far: a save marks the project saved only if none came while it was written
        self.jobs: list = []  # saves, loads and exports running in workers
        self.label_view = None  # the cells also as Labels layers, one per plane (Show as Labels)
        self._layer = None
        self._quiet = 0  # >0: layer events come from the widget itself
        self._last: dict | None = None  # snapshot of the layer after the last edit: the state before the next
        self.offers = CorrectionOffers(self)

        self.cells = QComboBox()
        self.image = QComboBox()
        self.cell_id = QSpinBox()
        self.cell_id.setRange(1, 10**9)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(0.5)
        self.path = QLineEdit()
        self.path.setPlaceholderText("project.json")
        self.um_per_px = QDoubleSpinBox()
        self.um_per_px.setRange(0.0, 1000.0)
        self.um_per_px.setDecimals(4)
        self.um_per_px.setSpecialValueText("pixels")  # 0: sizes in pixels
        self.um_per_px.setToolTip("Pixel size in µm for the measurements (0: sizes in pixels)")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 10_000.0)
        self.minutes.setSpecialValueText("frames")  # 0: times as frame indices
        self.minutes.setToolTip("Minutes between frames for the cleavage times (0: frame indices)")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        b = {}
        for key, text, slot in [
            ("polygon", "Add polygon", self.add_polygon),
            ("ellipse", "Add ellipse", self.add_ellipse),
            ("edit", "Edit outline", self.edit_outlines),
            ("select", "Select", self.select_mode),
            ("delete", "Delete selected", self.delete_selected),
            ("set_id", "Set id", self.apply_id),
            ("undo", "Undo", self.undo),
            ("accept_offer", "Accept offer", self.accept_offer),
            ("reject_offer", "Reject offer", self.reject_offer),
            ("next", "Next frame needing attention", self.next_frame),
            ("reviewed", "Mark frame reviewed", self.mark_reviewed),
            ("save", "Save", self.save),
            ("load", "Load...", self.load),
            ("export", "Export reviewed...", self.export),
            ("measure", "Export measurements...", self.export_measurements),
            ("labels", "Show as Labels", self.show_labels),
            ("label_tiff", "Export label TIFF...", self.export_labels),
        ]:
            b[key] = QPushButton(text)
            b[key].clicked.connect(lambda *_, s=reported(slot): s())
        self.buttons = b
        self._bind_keys()

        edit = QGridLayout()
        for i, key in enumerate(["polygon", "ellipse", "edit", "select", "delete", "undo", "accept_offer", "reject_offer"]):
            edit.addWidget(b[key], i // 2, i % 2)
        id_row = QHBoxLayout()
        id_row.addWidget(self.cell_id)
        id_row.addWidget(b["set_id"])
        file_row = QHBoxLayout()
        file_row.addWidget(self.path)
        file_row.addWidget(b["save"])
        file_row.addWidget(b["load"])
        form = QFormLayout(scroll_body(self))
        form.addRow("Cells", self.cells)
        form.addRow("Image", self.image)
        form.addRow(edit)
        form.addRow("Cell id", id_row)
        form.addRow("Low score below", self.threshold)
        form.addRow(b["next"])
        form.addRow(b["reviewed"])
        form.addRow("Project", file_row)
        form.addRow(b["export"])
        units_row = QHBoxLayout()
        units_row.addWidget(QLabel("µm/px"))
        units_row.addWidget(self.um_per_px)
        units_row.addWidget(QLabel("min/frame"))
        units_row.addWidget(self.minutes)
        form.addRow(units_row)
        form.addRow(b["measure"])
        labels_row = QHBoxLayout()
        labels_row.addWidget(b["labels"])
        labels_row.addWidget(b["label_tiff"])
        form.addRow(labels_row)
        form.addRow(self.status)

        self.timer = QTimer(self)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.autosave)
        self.timer.start()

        self.cells.currentTextChanged.connect(self._connect_layer)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        follow_renames(self.viewer, lambda layer, old: keep_choice_on_rename([self.cells, self.image], old,
                                                                             layer.name, self.refresh_layers))
        self.refresh_layers()

    def _bind_keys(self) -> None:
        """Keyboard shortcuts in the viewer (with the canvas focused), shown in the tooltips."""
        for key, name in SHORTCUTS.items():
            slot = {"next": self.next_frame, "reviewed": self.mark_reviewed, "delete": self.delete_selected,
                    "undo": self.undo, "accept_offer": self.accept_offer, "reject_offer": self.reject_offer}[name]
            self.viewer.bind_key(key, lambda viewer, s=reported(slot): s(), overwrite=True)
            self.buttons[name].setToolTip(f"shortcut: {key}")
        viewer, keys = self.viewer, list(SHORTCUTS)
        self.destroyed.connect(lambda *_: _unbind(viewer, keys))  # no key may call a closed dock

    # -- layers -------------------------------------------------------------
    def refresh_layers(self, event=None) -> None:
        for combo, keep in ((self.cells, is_cell_layer), (self.image, lambda ly: isinstance(ly, Image))):
            current = combo.currentText()
            names = [ly.name for ly in self.viewer.layers if keep(ly)]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif combo is self.cells and names:
                combo.setCurrentText(names[-1])
            combo.blockSignals(False)
        src = self.layer.metadata.get(META_KEY, {}).get("source_image") if self.layer is not None else None
        if src and src in [self.image.itemText(i) for i in range(self.image.count())]:
            self.image.setCurrentText(src)
        self._fill_units()
        self._connect_layer()

    def _fill_units(self) -> None:
        fill_units(self._image_layer(), self.um_per_px, self.minutes)

    @property
    def layer(self):
        name = self.cells.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _image_layer(self):
        name = self.image.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _connect_layer(self, *args) -> None:
        layer = self.layer
        if layer is self._layer:
            return
        if self._layer is not None:
            self._layer.events.data.disconnect(self._on_data)
        self._layer = layer
        self.history.clear()
        self._last = snapshot(layer) if layer is not None else None
        if layer is not None:
            layer.events.data.connect(self._on_data)
            layer.feature_defaults = dict(NEW_CELL_DEFAULTS)
            project = layer.metadata.get(META_KEY, {}).get("project_path")
            if project:  # opened from a project file (File > Open): Save writes back to it
                self.project_path = Path(project)
                self.path.setText(project)

    def _require(self):
        if self.layer is None:
            raise ValueError("No amodal cell layer: run a segmentation or load a project first.")
        return self.layer

    @contextmanager
    def _edit(self):
        """One undoable edit made by the widget (layer events inside are not recorded again)."""
        layer = self._require()
        self.history.append(snapshot(layer))
        self._quiet += 1
        try:
            yield layer
        finally:
            self._quiet -= 1
        self._changed()

    def _changed(self) -> None:
        self.dirty = True
        self.edits += 1
        self._last = snapshot(self._layer) if self._layer is not None else None
        self._show_status()

    def _on_data(self, event) -> None:
        """Record an edit made with napari's own tools: the layer as it was before it (kept
        after every edit: a vertex drag sends no "changing" event) goes on the undo stack,
        new shapes are labelled, reshaped ones get their area again, and the edit is offered
        for the next frames."""
        if self._quiet:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith(("adding", "removing", "changing")):
            return
        if filling(self._layer):  # a run's results coming in: no edit to record or offer
            self._last = snapshot(self._layer)
            return
        before = self._last if self._last is not None else snapshot(self._layer)
        self.history.append(before)
        indices = self._indices(event)
        self._quiet += 1
        try:
            if action.endswith("added"):
                removed = []
                self._label_new_shapes()
            else:
                removed = [(np.array(before["data"][i], copy=True), before["types"][i])
                           for i in getattr(event, "data_indices", ()) or () if 0 <= i < len(before["data"])]
                if action.endswith("changed"):
                    self._measure_reshaped(indices)
        finally:
            self._quiet -= 1
        self._changed()
        self._offer(removed, [] if action.endswith("removed") else indices)

    def _measure_reshaped(self, indices) -> None:
        """The area of shapes reshaped in one frame (vertex edits, moves); a change of many
        frames at once is a relayout by code, which brings its own features."""
        from ..layers import _shape_mask

        layer = self._layer
        shape = tuple(layer.metadata.get(META_KEY, {}).get("image_shape", ()))
        frames = {int(round(np.asarray(layer.data[i])[0, 0])) for i in indices if 0 <= i < len(layer.data)}
        if len(shape) != 2 or not indices or (layer.ndim >= 3 and len(frames) != 1) or len(indices) > 64:
            return
        feats = layer.features.copy()
        for i in indices:
            verts = np.asarray(layer.data[i])
            feats.loc[i, "area"] = int(_shape_mask(verts[:, -2:], layer.shape_type[i], shape).sum())
        set_features(layer, feats)

    def _indices(self, event) -> list[int]:
        n = len(self._layer.data)
        return [i % n if n else i for i in getattr(event, "data_indices", ()) or ()]

    def _shapes(self, indices) -> list[tuple[np.ndarray, str]]:
        layer = self._layer
        return [(np.array(layer.data[i], copy=True), layer.shape_type[i]) for i in indices if 0 <= i < len(layer.data)]

    def _offer(self, removed, added_indices) -> None:
        """Offer the edit just made (``removed`` shapes as they were, the shapes now at
        ``added_indices``) for the frames after it, when it was made in one frame."""
        layer = self._layer
        added = self._shapes(added_indices)
        frames = {int(round(v[0, 0])) for v, _ in removed + added if v.shape[1] >= 3}
        if len(frames) != 1:
            self.offers.withdraw()
            return
        ids = [int(layer.features["cell_id"].iloc[i]) for i in added_indices if 0 <= i < len(layer.data)]
        self.offers.propose(frames.pop(), removed, added, ids)

    def accept_offer(self) -> None:
        """Carry the last fix to the frames it was offered for (one undoable edit)."""
        self.offers.accept()

    def reject_offer(self) -> None:
        self.offers.withdraw()
        self._show_status()

    def _label_new_shapes(self) -> None:
        """New shapes (cell_id -1 from the feature defaults) get a fresh id, score 1,
        their frame and area, and their track colour. A line (no inside) is no cell: it is
        said so at once, as saving refuses it."""
        from ..layers import _shape_mask

        layer = self._layer
        feats = layer.features.copy()
        ids = np.asarray(feats["cell_id"], np.int64)
        new = np.flatnonzero(ids < 0)
        if not len(new):
            return
        next_id = int(max(ids.max(initial=0), 0)) + 1
        shape = tuple(layer.metadata.get(META_KEY, {}).get("image_shape", ()))
        for i in new:
            verts = np.asarray(layer.data[i])
            feats.loc[i, "cell_id"] = next_id
            next_id += 1
            feats.loc[i, "score"] = 1.0
            feats.loc[i, "label"] = 1
            feats.loc[i, "parent_id"] = -1
            feats.loc[i, "frame"] = int(round(verts[0, 0])) if verts.shape[1] >= 3 else 0
            if layer.shape_type[i] == "line":
                report_error(f"A line is not a cell outline and cannot be saved in '{layer.name}': "
                             "undo or delete it, and draw the cell as a polygon or an ellipse.")
            elif len(shape) == 2:
                feats.loc[i, "area"] = int(_shape_mask(verts[:, -2:], layer.shape_type[i], shape).sum())
        set_features(layer, feats)
        recolour(layer)

    # -- editing --------------------------------------------------------------
    def _mode(self, mode: str) -> None:
        layer = self._require()
        self.viewer.layers.selection.active = layer
        layer.mode = mode

    def add_polygon(self) -> None:
        self._mode("add_polygon")

    def add_ellipse(self) -> None:
        self._mode("add_ellipse")

    def edit_outlines(self) -> None:
        self._mode("direct")

    def select_mode(self) -> None:
        self._mode("select")

    def delete_selected(self) -> None:
        layer = self._require()
        if not layer.selected_data:
            report_info("Select the cells to delete first.")
            return
        removed = self._shapes(sorted(layer.selected_data)) if layer is self._layer else []
        with self._edit():
            layer.remove_selected()
        self._offer(removed, [])

    def apply_id(self) -> None:
        """Give the selected shapes the id in the spin box (their colour follows)."""
        layer = self._require()
        selected = sorted(layer.selected_data)
        if not selected:
            report_info("Select the cells to renumber first.")
            return
        with self._edit():
            feats = layer.features.copy()
            feats.loc[selected, "cell_id"] = int(self.cell_id.value())
            set_features(layer, feats)
            recolour(layer)

    def undo(self) -> None:
        layer = self._require()
        if not self.history:
            report_info("Nothing to undo.")
            return
        self.offers.withdraw()
        self._quiet += 1
        try:
            restore(layer, self.history.pop())
        finally:
            self._quiet -= 1
        self._changed()

    # -- review -----------------------------------------------------------------
    def reviewed(self) -> set[int]:
        layer = self.layer
        return set() if layer is None else set(layer.metadata.get(META_KEY, {}).get("reviewed", []))

    def n_frames(self) -> int:
        image, layer = self._image_layer(), self._require()
        if layer.ndim >= 3 and image is not None and image.ndim >= 3:
            return int(image.data.shape[0])
        frames = np.asarray(layer.features["frame"], np.int64) if len(layer.data) else np.zeros(0, int)
        return int(frames.max(initial=0)) + 1

    def attention(self) -> dict[int, list[str]]:
        layer = self._require()
        f = layer.features
        cells = zip(f["frame"].astype(int), f["cell_id"].astype(int), f["score"].astype(float))
        return core.attention_reasons(cells, self.n_frames(), self.reviewed(), float(self.threshold.value()))

    def next_frame(self) -> int | None:
        """Jump to the next frame needing attention; returns it (None if all reviewed)."""
        layer = self._require()
        t = core.next_attention_frame(self.attention(), current_frame(self.viewer, layer), self.n_frames())
        if t is None:
            report_info("Every frame is reviewed.")
            return None
        go_to_frame(self.viewer, layer, t)
        self._show_status()
        return t

    def mark_reviewed(self) -> None:
        with self._edit() as layer:
            meta = layer.metadata.setdefault(META_KEY, {})
            meta["reviewed"] = sorted(set(meta.get("reviewed", [])) | {current_frame(self.viewer, layer)})

    def _show_status(self) -> None:
        layer = self.layer
        if layer is None:
            return
        t = current_frame(self.viewer, layer)
        reasons = self.attention().get(t, [])
        state = "reviewed" if t in self.reviewed() else ", ".join(reasons)
        dirty = " (unsaved edits)" if self.dirty else ""
        self.status.setText(f"frame {t}: {state}; {len(self.reviewed())} reviewed{dirty}")

    # -- project ----------------------------------------------------------------
    def current_project(self) -> core.AnnotationProject:
        """The chosen image and cell layer as an annotation project."""
        return self._project_job()()

    def autosave_target(self) -> Path:
        if self.project_path is not None:
            return core.autosave_path(self.project_path)
        image = self._image_layer()
        if image is None:
            return default_autosave_dir() / "cells.autosave.json"
        # the image's fingerprint in the name: two images called alike never share a file
        path, name = image_file(image)
        sig = core.image_signature(image.data, path=path, name=name)
        return default_autosave_dir() / f"{Path(name).stem}-{sig['hash'][:12]}.autosave.json"

    def autosave(self) -> Path | None:
        """Write the autosave file when there are unsaved edits (the timer calls this).

        Only a copy of the layer is taken here; rasterising the cells and writing
        the file happen in a worker thread, so a large project never freezes the
        viewer. Returns the file it will write (None: nothing to save)."""
        from ._common import new_worker

        if not self.dirty or self.layer is None or getattr(self, "_autosaving", False):
            return None
        try:
            target = self.autosave_target()
            job = self._project_job()
        except Exception as e:  # noqa: BLE001
            self.timer.stop()
            report_error(f"Autosave failed ({e}); autosave is off until the next save.")
            return None
        self.dirty = False
        self._autosaving = True

        def done(path):
            self._autosaving = False
            self.last_autosave = path

        def failed(e):
            self._autosaving = False
            self.dirty = True
            self.timer.stop()  # one notification, not one every 10 s
            report_error(f"Autosave failed ({e}); autosave is off until the next save.")

        worker = new_worker(lambda: core.save_project(target, job()), _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.start()
        return target

    def _project_job(self):
        """A copy of the chosen layers now, and a function that builds the project from
        it later (in any thread)."""
        from ..layers import cell_layer_to_frames

        layer = self._require()
        image = self._image_layer()
        if image is None:
            raise ValueError("Choose the image the cells belong to (an Image layer).")
        check_image_fits(image, layer)
        path, name = image_file(image)
        sig = core.image_signature(image.data, path=path, name=name)
        meta = dict(layer.metadata)
        data = [np.array(d, copy=True) for d in layer.data]
        features, types = layer.features.copy(), list(layer.shape_type)
        n_frames, reviewed = self.n_frames(), self.reviewed()
        shape = tuple(meta.get(META_KEY, {}).get("image_shape", ()))
        categories = meta.get(META_KEY, {}).get("categories")

        def build():
            frames = cell_layer_to_frames(data, features, meta, types)
            return core.AnnotationProject.from_frames(sig, frames, n_frames=n_frames, frame_shape=shape,
                                                      reviewed=reviewed, categories=categories)

        return build

    def _background(self, work, done, failed):
        """Run ``work()`` in a worker; ``done(result)`` or ``failed(error)`` on the GUI thread.
        The worker is held in ``jobs`` until it ends (:meth:`wait_idle` waits for them)."""
        from ._common import new_worker

        worker = new_worker(work, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        worker.finished.connect(lambda: self.jobs.remove(worker) if worker in self.jobs else None)
        self.jobs.append(worker)
        worker.start()
        return worker

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Process events until the saves, loads and exports started here have ended (for
        scripts and tests); False if some still run after ``timeout`` seconds."""
        import time

        from qtpy.QtWidgets import QApplication

        deadline = time.monotonic() + timeout
        while self.jobs and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.005)
        QApplication.processEvents()
        return not self.jobs

    def save(self, path=None, wait: bool = False) -> Path | None:
        """Save the project (to ``path``, the path field, or a file dialog). The cells are
        copied here and written by a worker; returns the file being written (None: refused
        at once; with ``wait``, the file once written, None if that failed). A failure is a
        notification and leaves the previous file unchanged."""
        path = path or self.path.text().strip() or None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save project", "", "Projects (*.json)")
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path.with_suffix(".json")
        try:
            job = self._project_job()
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not save the project to {path}: {describe_error(e)}. "
                         "The previous file is unchanged.")
            return None
        layer, edits, ok = self.layer, self.edits, []

        def done(_):
            ok.append(True)
            self.project_path = path
            self.path.setText(str(path))
            layer.metadata.setdefault(META_KEY, {})["project_path"] = str(path)
            if self.edits == edits:  # no edit came while it was written
                self.dirty = False
            core.autosave_path(path).unlink(missing_ok=True)
            self.timer.start()
            self._show_status()

        self._background(lambda: core.save_project(path, job()), done, lambda e: report_error(
            f"Could not save the project to {path}: {describe_error(e)}. The previous file is unchanged."))
        return path if not wait or (self.wait_idle() and ok) else None

    def load(self, path=None, wait: bool = False) -> bool:
        """Load a project onto the chosen image, in a worker; refused (a notification) if it
        was made for another image. Returns whether loading started (with ``wait``: whether
        the project was loaded)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load project", "", "Projects (*.json)")
            if not path:
                return False
        image = self._image_layer()
        if image is None:
            report_error("Open the image first, then load its project.")
            return False
        try:
            axes = image_axes(image)
        except ValueError as e:
            report_error(str(e))
            return False
        path = Path(path)
        source = core.newest_version(path)
        file_path, name = image_file(image)
        signature = core.image_signature(image.data, file_path, name)
        plane = None
        if "Z" in axes:  # the focal plane shown now (through the image's scale and translate)
            plane = int(round(float(image.world_to_data(self.viewer.dims.point)[axes.index("Z")])))

        def work():
            proj = core.load_project(source, signature=signature)
            data, kwargs, _ = cells_layer_tuple(proj.frames, stack="T" in axes, name=cells_name(image.name),
                                                plane=layer_plane(axes, plane), categories=proj.categories)
            return proj, data, kwargs

        ok = []

        def done(found):
            import pandas as pd

            ok.append(True)
            proj, data, kwargs = found
            if source != path:
                report_info(f"Loaded the newer autosave {source.name}.")
            kwargs["metadata"][META_KEY].update(source_image=image.name, reviewed=sorted(proj.reviewed),
                                                project_path=str(path))
            kwargs.update(placed_like(image, kwargs["ndim"]))
            old = self.viewer.layers[kwargs["name"]] if kwargs["name"] in self.viewer.layers else None
            if old is not None and is_cell_layer(old) and old.ndim == kwargs["ndim"]:
                # refilled in place: a new layer's first draw held napari for a second at 2,000 cells
                self._quiet += 1
                try:
                    set_shapes(old, data, ["polygon"] * len(data), pd.DataFrame(kwargs["features"]),
                               kwargs["edge_color"], kwargs["face_color"])
                    old.metadata = kwargs["metadata"]
                    old.scale, old.translate = kwargs["scale"], kwargs["translate"]
                finally:
                    self._quiet -= 1
            else:
                if old is not None:
                    self.viewer.layers.remove(old)
                self.viewer.add_shapes(data, **kwargs)
            self.cells.setCurrentText(kwargs["name"])
            self._connect_layer()
            self.history.clear()
            self._last = snapshot(self._layer) if self._layer is not None else None
            self.project_path = path
            self.path.setText(str(path))
            self.dirty = False
            self._show_status()

        self._background(work, done, lambda e: report_error(str(e)))
        return not wait or (self.wait_idle() and bool(ok))

    def export(self, path=None, wait: bool = False) -> Path | None:
        """Export the reviewed frames as COCO-amodal JSON for fine-tuning, in a worker;
        returns the file being written (None: refused at once; with ``wait``, the file once
        written, None if that failed)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export reviewed frames", "", "COCO-amodal (*.json)")
            if not path:
                return None
        try:
            job = self._project_job()
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not export to {path}: {describe_error(e)}")
            return None
        self.exported = None

        def done(written):
            self.exported = written
            report_info(f"Exported the reviewed frames to {written}")

        self._background(lambda: core.export_reviewed(job(), path), done,
                         lambda e: report_error(f"Could not export to {path}: {describe_error(e)}"))
        return Path(path) if not wait or (self.wait_idle() and self.exported) else None

    def show_labels(self, wait: bool = False):
        """Show the cell layer also as Labels layers, one per plane of overlapping cells, kept
        in step with it (napari's paint tools and Labels plugins work on them). Returns the
        :class:`~.label_view.LabelView` (with ``wait``, once its layers are shown)."""
        from .label_view import LabelView

        layer = self._require()
        if self.label_view is not None and self.label_view.cells is layer and self.label_view.layers:
            if all(ly in self.viewer.layers for ly in self.label_view.layers):
                report_info("The cells are shown as Labels already.")
                return self.label_view
        view = LabelView(self.viewer, layer, self.n_frames())
        view.start()
        self.label_view = view
        self.jobs.append(view.worker)
        view.worker.finished.connect(lambda: self.jobs.remove(view.worker) if view.worker in self.jobs else None)
        if wait:
            self.wait_idle()
        return view

    def export_labels(self, path=None, wait: bool = False) -> Path | None:
        """Write the cells as a multi-plane label TIFF (ImageJ hyperstack T, C, Y, X: a channel
        per plane of overlapping cells, cell ids as labels), in a worker; returns the file
        being written (None: refused at once; with ``wait``, None if writing failed)."""
        from ...label_planes import stack_planes, write_label_tiff
        from .offers import copy_layer

        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export label planes", "", "TIFF (*.tif *.tiff)")
            if not path:
                return None
        path = Path(path)
        layer = self._require()
        if layer.ndim > 3:
            report_error("Label planes are for (T, Y, X) or (Y, X) cells, not a focal plane of (T, Z, Y, X).")
            return None
        frames = copy_layer(layer, self.n_frames() if layer.ndim >= 3 else 1)
        ok = []

        def done(written):
            ok.append(written)
            report_info(f"Wrote the label planes to {written}")

        self._background(lambda: write_label_tiff(path, stack_planes([frames[t] for t in range(len(frames))],
                                                                     len(frames))[0]),
                         done, lambda e: report_error(f"Could not write {path}: {describe_error(e)}. "
                                                      "An earlier file there is unchanged."))
        return path if not wait or (self.wait_idle() and ok) else None

    def export_measurements(self, path=None):
        """Measure the cells as they stand (corrected) and write ``STEM_cells.csv``,
        ``STEM_frames.csv`` and ``STEM_cleavage.csv`` beside ``path`` (``STEM.csv``,
        or a file dialog), in a worker thread.

        Only frames with cells or marked reviewed are measured: a frame never
        segmented is not an empty embryo. Units come from the "µm/px" and
        "min/frame" boxes (0: pixels, frame indices). Returns the started
        worker (None when nothing was started); ``last_measurements`` holds the
        written paths when it is done.
        """
        from ._common import new_worker

        from ...measure import measure, write_measurements

        if path is None:
            # the three files written are STEM_*.csv, not the chosen name: no overwrite prompt for it
            path, _ = QFileDialog.getSaveFileName(self, "Export measurements (STEM_cells/_frames/_cleavage.csv)",
                                                  "", "CSV tables (*.csv)",
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
            if not path:
                return None
        path = Path(path)
        stem = path.name[:-4] if path.name.lower().endswith(".csv") else path.name
        for table in ("_cells", "_frames", "_cleavage"):  # picking an earlier STEM_cells.csv means STEM
            if stem.endswith(table):
                stem = stem[: -len(table)]
        um = float(self.um_per_px.value()) or None
        minutes = float(self.minutes.value()) or None
        try:
            job = self._project_job()
        except Exception as e:  # noqa: BLE001
            report_error(f"Could not measure: {e}")
            return None

        def work():
            project = job()
            frames = [f for f in project.frames if len(f) or f.frame in project.reviewed]
            if not frames:
                raise ValueError("no frame has cells or is reviewed: segment or annotate first")
            m = measure(frames, um_per_px=um, hours_per_frame=minutes / 60.0 if minutes else None)
            return write_measurements(m, path.parent, stem)

        def done(paths):
            self.last_measurements = paths
            report_info("Wrote " + ", ".join(p.name for p in paths) + f" in {path.parent}")

        worker = new_worker(work, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(lambda e: report_error(f"Could not export measurements to {path.parent}: "
                                                      f"{describe_error(e)}"))
        worker.start()
        return worker

    def closeEvent(self, event) -> None:
        self.autosave()
        self.timer.stop()
        super().closeEvent(event)
