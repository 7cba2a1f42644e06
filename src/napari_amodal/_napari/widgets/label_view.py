"""The cells of a cell layer also as napari Labels layers, one per plane, kept in step with it.

Overlapping cells cannot share one label image, so each cell gets a plane for the whole
time-lapse (:mod:`napari_amodal.label_planes`) and each plane is a Labels layer ``<cells>
labels k`` holding the cell ids. Painting, filling or erasing in one of them changes the cells
of that frame in the Shapes layer (a cell is the union of its id's pixels on every plane); an
edit of the Shapes layer (by hand, Undo, an accepted offer, a new run) redraws the planes of the
frames it changed. The Shapes layer stays the one the docks read and save.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer

from ...label_planes import frame_from_planes, render_frame, stack_planes
from ..layers import META_KEY
from .offers import _outlines, copy_layer

PLANE_KIND = "label_plane"


def plane_name(cells_name: str, k: int) -> str:
    return f"{cells_name} labels {k + 1}"


def _frame_signatures(layer) -> dict[int, tuple]:
    """Per frame, a cheap fingerprint of its shapes (ids, vertex counts and sums), to tell
    which frames an edit of the layer changed."""
    if not len(layer.data):
        return {}
    frames = np.asarray(layer.features["frame"], np.int64)
    ids = np.asarray(layer.features["cell_id"], np.int64)
    sums = np.array([float(np.asarray(d).sum()) for d in layer.data])
    counts = np.array([len(d) for d in layer.data])
    out: dict[int, list] = {}
    for t, cid, s, n in zip(frames, ids, sums, counts):
        out.setdefault(int(t), []).append((int(cid), int(n), round(float(s), 3)))
    return {t: tuple(sorted(v)) for t, v in out.items()}


class LabelView:
    """Labels layers for the cell layer ``cells`` (a (T, Y, X) or (Y, X) Shapes layer of
    ``n_frames`` frames), built in a worker by :meth:`start`; ``layers`` once shown."""

    def __init__(self, viewer, cells, n_frames: int):
        self.viewer, self.cells, self.n_frames = viewer, cells, int(n_frames)
        self.layers: list = []
        self.planes: dict[int, int] = {}
        self.worker = None
        self._writing = 0  # >0: the layers change because this view changes them
        self._signatures: dict[int, tuple] = {}

    @property
    def stacked(self) -> bool:
        return self.cells.ndim >= 3

    def start(self, on_shown=None):
        """Build the planes from a copy of the cell layer in a worker, then add the layers."""
        from ._common import new_worker, report_error

        if self.cells.ndim > 3:
            raise ValueError("label planes are for (T, Y, X) or (Y, X) cell layers, not a focal plane of a "
                             "(T, Z, Y, X) image")
        shape = tuple(self.cells.metadata.get(META_KEY, {}).get("image_shape", ()))
        if len(shape) != 2:
            raise ValueError(f"layer {self.cells.name!r} does not know its image size")
        frames = copy_layer(self.cells, self.n_frames if self.stacked else 1)

        def build():
            return stack_planes([frames[t] for t in range(len(frames))], len(frames))

        def shown(found):
            self._show(*found)
            if on_shown is not None:
                on_shown(self)

        self.worker = new_worker(build, _ignore_errors=True)
        self.worker.returned.connect(shown)
        self.worker.errored.connect(lambda e: report_error(f"Could not show the cells as labels: {e}"))
        self.worker.start()
        return self.worker

    def _show(self, stack: np.ndarray, planes: dict[int, int]) -> None:
        self.planes = planes
        active = self.viewer.layers.selection.active
        for k, plane in enumerate(stack):
            name = plane_name(self.cells.name, k)
            if name in self.viewer.layers:
                self.viewer.layers.remove(self.viewer.layers[name])
            layer = self.viewer.add_labels(
                plane if self.stacked else plane[0], name=name, opacity=0.5, scale=self.cells.scale,
                translate=self.cells.translate, metadata={META_KEY: {"kind": PLANE_KIND, "plane": k}})
            # napari announces a stroke before it writes its last pixels: read them a turn later
            layer.events.paint.connect(lambda event, k=k: QTimer.singleShot(0, lambda: self._painted(k)))
            self.layers.append(layer)
        self.viewer.layers.selection.active = active
        self._signatures = _frame_signatures(self.cells)
        self.cells.events.data.connect(self._cells_changed)
        self.cells.events.features.connect(self._cells_changed)

    # -- Labels -> cells ------------------------------------------------------------
    def _painted(self, k: int) -> None:
        """A stroke in plane ``k``: the cells of that frame whose pixels changed are redrawn
        in the Shapes layer, cells painted with a new id are added, erased ones removed."""
        from ._common import current_frame, layer_frame

        if self._writing:
            return
        t = current_frame(self.viewer, self.layers[k]) if self.stacked else 0
        now = np.stack([ly.data[t] if self.stacked else ly.data for ly in self.layers])
        like = layer_frame(self.cells, t) if self.stacked else _single_frame(self.cells)
        new = frame_from_planes(now, t, like)
        old = {int(c): m for c, m in zip(like.track_ids, like.masks)} if like is not None else {}
        fresh = {int(c): m for c, m in zip(new.track_ids, new.masks)}
        changed = sorted(c for c in fresh if c not in old or not np.array_equal(fresh[c], old[c]))
        gone = sorted(set(old) - set(fresh))
        for c in changed:
            self.planes.setdefault(c, k)
        if changed or gone:
            self._replace_cells(t, new, changed, gone)

    def _replace_cells(self, t: int, new, changed: list[int], gone: list[int]) -> None:
        """Remove the shapes of cells ``changed`` + ``gone`` in frame ``t``; add outlines of the
        ``changed`` cells of ``new`` with their features (area from their masks)."""
        import pandas as pd

        from ...overlay import track_colour
        from ._common import FILL_ALPHA, set_features

        layer = self.cells
        self._writing += 1
        try:
            if len(layer.data):
                frames = np.asarray(layer.features["frame"], np.int64) if self.stacked else np.zeros(len(layer.data))
                ids = np.asarray(layer.features["cell_id"], np.int64)
                drop = np.flatnonzero((frames == t) & np.isin(ids, changed + gone))
                if len(drop):
                    layer.selected_data = set(drop.tolist())
                    layer.remove_selected()
            vertices, rows = [], []
            for i in (int(np.flatnonzero(new.track_ids == c)[0]) for c in changed):
                m = new.masks[i]
                outlines = _outlines(m, t, None)
                if not self.stacked:
                    outlines = [v[:, 1:] for v in outlines]
                vertices += outlines
                rows += [{"cell_id": int(new.track_ids[i]), "score": float(new.scores[i]), "area": int(m.sum()),
                          "frame": t, "label": int(new.labels[i]), "parent_id": int(new.parent_ids[i])}] * len(outlines)
            if vertices:
                n = len(layer.data)
                cids = [r["cell_id"] for r in rows]
                layer.add(vertices, shape_type="polygon", edge_color=[track_colour(c) for c in cids],
                          face_color=[track_colour(c, FILL_ALPHA) for c in cids])
                set_features(layer, pd.concat([layer.features.iloc[:n], pd.DataFrame(rows)], ignore_index=True))
        finally:
            self._writing -= 1
        self._signatures = _frame_signatures(layer)

    # -- cells -> Labels ------------------------------------------------------------
    def _cells_changed(self, event=None) -> None:
        """The Shapes layer changed: redraw the planes of the frames whose shapes differ."""
        if self._writing or not self.layers:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith(("adding", "removing", "changing")):
            return
        now = _frame_signatures(self.cells)
        frames = sorted(t for t in set(now) | set(self._signatures) if now.get(t) != self._signatures.get(t))
        self._signatures = now
        for t in frames:
            self.redraw(t)

    def redraw(self, t: int) -> None:
        """Draw frame ``t``'s cells of the Shapes layer into the planes (a new cell goes on the
        first plane where it overlaps no other cell of that frame, else on the least crowded)."""
        from ...instances import FrameInstances
        from ._common import layer_frame

        shape = tuple(self.cells.metadata.get(META_KEY, {}).get("image_shape", ()))
        frame = layer_frame(self.cells, t) if self.stacked else _single_frame(self.cells)
        frame = frame if frame is not None else FrameInstances.empty(shape, frame=t)
        for cid, m in zip(frame.track_ids, frame.masks):
            if int(cid) not in self.planes:
                self.planes[int(cid)] = self._free_plane(frame, m, int(cid))
        out = np.zeros((len(self.layers), *shape), self.layers[0].data.dtype)
        render_frame(frame, self.planes, out)
        self._writing += 1
        try:
            for k, layer in enumerate(self.layers):
                if self.stacked:
                    layer.data[t] = out[k]
                else:
                    layer.data[...] = out[k]
                layer.refresh()
        finally:
            self._writing -= 1

    def _free_plane(self, frame, mask: np.ndarray, cid: int) -> int:
        crowd = np.zeros(len(self.layers))
        for other, m in zip(frame.track_ids, frame.masks):
            if int(other) != cid and int(other) in self.planes:
                crowd[min(self.planes[int(other)], len(crowd) - 1)] += (m & mask).sum()
        free = np.flatnonzero(crowd == 0)
        return int(free[0]) if len(free) else int(crowd.argmin())


def _single_frame(layer):
    """The cells of a 2D cell layer as one FrameInstances (None without shapes)."""
    from ._common import layer_frames

    if not len(layer.data):
        return None
    return layer_frames(layer)[0]

