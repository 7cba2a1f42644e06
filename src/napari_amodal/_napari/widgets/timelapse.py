"""The "Time-lapse" dock: the embryo's story from its cell layer.

A plot of the cell count (left scale) and size evenness (``area_cv``, right scale, 0..1)
over the frames, with frames whose count is uncertain shaded (clicking the plot moves
napari's time slider there), and a table of the morphokinetic parameters (t2 ... t8, cc2,
s2, s3, direct and reverse cleavage, evenness at 2/4/8 cells). The figures come from
:func:`napari_amodal.measure.measure` in a worker thread; the widget only draws them.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QPointF, QRectF, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..layers import META_KEY
from ._common import (
    fill_units,
    follow_renames,
    go_to_frame,
    is_cell_layer,
    keep_choice_on_rename,
    report_error,
    scroll_body,
)

KINETIC_ROWS = ("t2", "t3", "t4", "t5", "t6", "t7", "t8", "cc2", "s2", "s3", "direct_cleavage",
                "reverse_cleavage", "evenness_2", "evenness_4", "evenness_8")


def timelapse_figures(layer_data: dict, um_per_px: float | None, hours_per_frame: float | None) -> dict:
    """(In the worker.) The plot's and the table's figures for a cell layer's data
    (``data``, ``features``, ``metadata``, ``shape_type`` as a dict)."""
    from ...measure import measure, uncertain_frames
    from ..layers import cell_layer_to_frames

    frames = [f for f in cell_layer_to_frames(layer_data["data"], layer_data["features"], layer_data["metadata"],
                                              layer_data["shape_type"]) if f is not None]
    reviewed = set(layer_data["metadata"].get(META_KEY, {}).get("reviewed", []))
    frames = [f for f in frames if len(f) or f.frame in reviewed]
    if not frames:
        raise ValueError("the cell layer has no cells yet: segment first")
    m = measure(frames, um_per_px=um_per_px, hours_per_frame=hours_per_frame)
    counts = [r["cells"] for r in m.frames]
    lowest = [float(f.scores.min()) if len(f) else 1.0 for f in sorted(frames, key=lambda f: f.frame)]
    uncertain = uncertain_frames(counts, lowest)
    ts = [r["frame"] for r in m.frames]
    return {"frames": ts, "counts": counts, "evenness": [r["area_cv"] for r in m.frames],
            "uncertain": [ts[i] for i in uncertain], "kinetics": m.morphokinetics[0] if m.morphokinetics else {}}


class TimelinePlot(QWidget):
    """Cell count (blue, left scale) and size evenness (orange, right scale 0..1) per frame,
    uncertain frames shaded; a click emits the nearest frame (``frame_clicked``)."""

    frame_clicked = Signal(int)
    COUNT, EVEN, SHADE = QColor(70, 160, 230), QColor(240, 150, 40), QColor(230, 60, 60, 70)
    MARGIN = 26

    def __init__(self, parent=None):
        super().__init__(parent)
        self.figures: dict[str, Any] = {"frames": [], "counts": [], "evenness": [], "uncertain": []}
        self.setMinimumHeight(150)
        self.setToolTip("cell count (blue, left), size evenness area CV (orange, right 0..1); red: uncertain "
                        "frames; click to go to a frame")

    def show_figures(self, figures: dict) -> None:
        self.figures = figures
        self.update()

    def _box(self) -> QRectF:
        m = self.MARGIN
        return QRectF(m, 8, max(1, self.width() - 2 * m), max(1, self.height() - 8 - m))

    def _span(self) -> tuple[int, int]:
        ts = self.figures["frames"]
        return (min(ts), max(max(ts), min(ts) + 1)) if ts else (0, 1)

    def x_of(self, t: float) -> float:
        lo, hi = self._span()
        box = self._box()
        return box.left() + box.width() * (t - lo) / (hi - lo)

    def frame_at(self, x: float) -> int | None:
        ts = self.figures["frames"]
        return min(ts, key=lambda t: abs(self.x_of(t) - x)) if ts else None

    def mousePressEvent(self, event) -> None:
        t = self.frame_at(event.pos().x())
        if t is not None:
            self.frame_clicked.emit(int(t))

    def paintEvent(self, event) -> None:
        f, box = self.figures, self._box()
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        top = max(max(f["counts"], default=1), 1)
        lo, hi = self._span()
        step = box.width() / max(hi - lo, 1)
        for t in f["uncertain"]:
            p.fillRect(QRectF(self.x_of(t) - step / 2, box.top(), max(step, 2.0), box.height()), self.SHADE)
        p.setPen(QPen(QColor(128, 128, 128)))
        p.drawRect(box)
        text = QPen(self.palette().color(self.foregroundRole()))
        p.setPen(text)
        p.drawText(QPointF(2, box.top() + 10), str(top))
        p.drawText(QPointF(2, box.bottom()), "0")
        p.drawText(QPointF(box.right() + 3, box.top() + 10), "1")
        p.drawText(QPointF(box.left(), self.height() - 4), f"frame {lo}")
        p.drawText(QPointF(box.right() - 60, self.height() - 4), f"frame {hi}")
        series = ((f["counts"], top, self.COUNT), ([v if v is not None else None for v in f["evenness"]], 1.0, self.EVEN))
        for values, scale, colour in series:
            p.setPen(QPen(colour, 2))
            last = None
            for t, v in zip(f["frames"], values):
                q = None if v is None else QPointF(self.x_of(t), box.bottom() - box.height() * min(v / scale, 1.0))
                if q is not None and last is not None:
                    p.drawLine(last, q)
                last = q
        p.end()


class TimelapseWidget(QWidget):
    """Cell count, size evenness and morphokinetics of a cell layer, over time."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.figures: dict | None = None
        self.cells = QComboBox()
        self.cells.currentTextChanged.connect(lambda *_: self._fill_units())
        self.um_per_px = QDoubleSpinBox()
        self.um_per_px.setRange(0.0, 1000.0)
        self.um_per_px.setDecimals(4)
        self.um_per_px.setSpecialValueText("pixels")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 10_000.0)
        self.minutes.setSpecialValueText("frames")
        self.minutes.setToolTip("frame interval in minutes (0: times in frames); filled from the image file "
                                "when it says")
        self.update_button = QPushButton("Update")
        self.update_button.clicked.connect(self.refresh)
        self.plot = TimelinePlot()
        self.plot.frame_clicked.connect(self.go_to)
        self.table = QTableWidget(len(KINETIC_ROWS), 1)
        self.table.setHorizontalHeaderLabels(["value"])
        self.table.setVerticalHeaderLabels(list(KINETIC_ROWS))
        self.table.setMaximumHeight(240)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Cells", self.cells)
        form.addRow("µm / px", self.um_per_px)
        form.addRow("min / frame", self.minutes)
        layout = QVBoxLayout(scroll_body(self))
        layout.addLayout(form)
        layout.addWidget(self.update_button)
        layout.addWidget(self.plot)
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)
        follow_renames(self.viewer, lambda layer, old: keep_choice_on_rename([self.cells], old, layer.name,
                                                                             self.refresh_layers))
        self.refresh_layers()

    def refresh_layers(self, event=None) -> None:
        current = self.cells.currentText()
        names = [ly.name for ly in self.viewer.layers if is_cell_layer(ly)]
        self.cells.blockSignals(True)
        self.cells.clear()
        self.cells.addItems(names)
        if current in names:
            self.cells.setCurrentText(current)
        elif names:
            self.cells.setCurrentText(names[-1])
        self.cells.blockSignals(False)
        self._fill_units()

    def _fill_units(self) -> None:
        layer = self.layer
        src = layer.metadata.get(META_KEY, {}).get("source_image") if layer is not None else None
        fill_units(self.viewer.layers[src] if src and src in self.viewer.layers else None, self.um_per_px, self.minutes)

    @property
    def layer(self):
        name = self.cells.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def refresh(self):
        """Measure the cell layer as it stands, in a worker; returns the worker (None if none started)."""
        from ._common import new_worker

        layer = self.layer
        if layer is None:
            report_error("No amodal cell layer: run a segmentation or load a project first.")
            return None
        if self.worker is not None:
            return self.worker
        # a copy of the layer's state, so the worker never reads a layer the user is editing
        data = {"data": [d.copy() for d in layer.data], "features": layer.features.copy(),
                "metadata": dict(layer.metadata), "shape_type": list(layer.shape_type)}
        um = float(self.um_per_px.value()) or None
        hours = float(self.minutes.value()) / 60.0 or None
        self.status.setText("measuring...")
        self.update_button.setEnabled(False)
        worker = new_worker(timelapse_figures, data, um, hours, _ignore_errors=True)
        worker.returned.connect(self._show)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()
        return worker

    def _failed(self, error) -> None:
        self.status.setText("not measured (see the notification)")
        report_error(f"Could not measure the time-lapse: {error}")

    def _finished(self) -> None:
        self.worker = None
        self.update_button.setEnabled(True)

    def _show(self, figures: dict) -> None:
        self.figures = figures
        self.plot.show_figures(figures)
        k = figures["kinetics"]
        unit = " h" if k.get("time_unit") == "h" else ""
        for row, name in enumerate(KINETIC_ROWS):
            v = k.get(name)
            if isinstance(v, bool):
                text = "yes" if v else "no"
            elif isinstance(v, float):
                text = f"{v:.3g}" if name.startswith("evenness") else f"{v:g}{unit}"
            else:
                text = "-" if v is None else str(v)
            self.table.setItem(row, 0, QTableWidgetItem(text))
        n = len(figures["uncertain"])
        self.status.setText(f"{len(figures['frames'])} frames; {n} with an uncertain count (shaded)"
                            + (f": {', '.join(map(str, figures['uncertain'][:12]))}" if n else ""))

    def go_to(self, t: int) -> None:
        """Move napari's time slider to frame ``t``."""
        layer = self.layer
        if layer is not None:
            go_to_frame(self.viewer, layer, int(t))
