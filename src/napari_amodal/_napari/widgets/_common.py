"""Helpers shared by the widgets: layer lookup, frames <-> layers, snapshots, notifications.

Everything here works on napari layers; the computation lives in the core
(:mod:`napari_amodal.segment`, :mod:`napari_amodal.project`, :mod:`..layers`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from napari.layers import Shapes
from napari.utils.notifications import show_error, show_info, show_warning

from ...overlay import track_colour
from ..layers import (
    CELL_LAYER_KIND,
    FEATURES,
    META_KEY,
    cell_layer_data,
    cell_layer_to_frames,
    track_points,
)

FILL_ALPHA = 0.12


def scroll_body(widget):
    """Lay ``widget`` out as a vertical scroll area and return the inner widget to fill, so
    a dock taller than the screen scrolls instead of pushing napari's own controls (the
    time slider) off-screen. The area is ``widget.scroll_area``."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    body = QWidget()
    area.setWidget(body)
    outer.addWidget(area)
    widget.scroll_area = area
    return body


def image_meta(layer) -> dict:
    """The napari-amodal metadata of an Image layer (axes, ``um_per_px``, ``hours_per_frame``,
    ``source_file``): what our own code stored, or, for an image napari's reader opened from a
    TIFF, the same read once from the file's header and kept in the layer's metadata."""
    meta = layer.metadata.get(META_KEY)
    if meta is not None:
        return meta
    from ...io_images import is_tiff, physical_scale, stack_axes

    path = getattr(getattr(layer, "source", None), "path", None)
    meta = {}
    try:
        if path and Path(path).is_file() and is_tiff(path):
            meta = {"source_file": Path(path).name, "axes": stack_axes(path, tuple(layer.data.shape)),
                    **physical_scale(path)}
    except (OSError, ValueError):
        meta = {}  # unreadable now: the layer's shape decides, as for an array added in code
    layer.metadata = {**layer.metadata, META_KEY: meta}
    return meta


def fill_units(image, um_per_px, minutes) -> None:
    """Fill the pixel-size (µm) and frame-interval (min) boxes from ``image``'s file metadata
    (ImageJ, OME: kept by the reader), leaving boxes the user has set (non-zero) alone.
    A value the box cannot hold (a spin box would silently clamp or round it) is left
    out with a warning naming the file, so the user types the right one."""
    meta = image_meta(image) if image is not None else {}
    for box, key, factor, what in ((um_per_px, "um_per_px", 1.0, "µm/px"),
                                   (minutes, "hours_per_frame", 60.0, "min/frame")):
        if box.value() or not meta.get(key):
            continue
        value = float(meta[key]) * factor
        if 0 < round(value, box.decimals()) <= box.maximum():
            box.setValue(value)
        else:
            source = meta.get("source_file") or image.name
            report_warning(f"{source}: its metadata says {value:g} {what}, outside {10 ** -box.decimals():g}.."
                           f"{box.maximum():g}; type the {what} in the box (0 = {box.specialValueText()}).")


def report_error(error) -> None:
    """Show an error as a napari notification (never only a console traceback)."""
    show_error(str(error) if not isinstance(error, str) else error)


def report_warning(message: str) -> None:
    show_warning(message)


def report_info(message: str) -> None:
    show_info(message)


def reported(slot):
    """``slot`` for a button or key: an error it raises becomes a notification
    (a Qt slot that raises would reach the user as a traceback)."""

    @functools.wraps(slot)
    def run(*args, **kwargs):
        try:
            return slot(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - every bad input becomes a notification
            report_error(e)
            return None

    return run


def compact(container):
    """A magicgui Container's Qt widget, kept at its natural height and without margins, to
    sit in a dock's layout among Qt widgets (it would share out the spare height)."""
    from qtpy.QtWidgets import QSizePolicy

    native = container.native
    native.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
    native.layout().setContentsMargins(0, 0, 0, 0)
    return native


def set_choices(combo, choices) -> None:
    """Give magicgui ComboBox ``combo`` exactly ``choices``, in this order (magicgui keeps the
    items it has where they are and appends new ones), keeping its value when still offered;
    no change signal is sent."""
    values = [c[1] if isinstance(c, tuple) else c for c in choices]
    current = combo.value if len(combo.choices) else None
    combo.native.blockSignals(True)
    try:
        combo.native.clear()
        combo.choices = choices
        if any(v is current for v in values):
            combo.value = current
    finally:
        combo.native.blockSignals(False)


def check_model(name_or_path) -> Path:
    """The checkpoint of a model name or file, checked before a worker starts (its
    header only): ModelNotFoundError or ValueError naming the file when it is missing,
    a folder, not a napari-amodal checkpoint, or not a segmentation model."""
    from ...checkpoint import read_metadata
    from ...models import resolve_model

    path = resolve_model(name_or_path)  # a folder is refused there
    kind = read_metadata(path)["config"].get("kind", "detector")
    if kind != "detector":
        raise ValueError(f"{path} holds a {kind} model, not a segmentation model")
    return path


def check_output_folder(path) -> Path:
    """A folder a run will write into, checked without creating it: ValueError naming it
    when it (or a part of its path) is a file or it cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output folder {path} is a file, not a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"output folder {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {path}: {parent} is not writable")
    return path


def check_image_fits(image, cells) -> None:
    """ValueError when Image layer ``image`` is not the size the cells of ``cells`` were drawn on."""
    shape = tuple(cells.metadata.get(META_KEY, {}).get("image_shape", ()))
    axes = image_axes(image)
    size = (image.data.shape[axes.index("Y")], image.data.shape[axes.index("X")])
    if len(shape) == 2 and size != shape:
        raise ValueError(f"image '{image.name}' is {size[0]}x{size[1]} px, but the cells of '{cells.name}' were "
                         f"drawn on {shape[0]}x{shape[1]} px: choose the image they belong to")


def is_cell_layer(layer) -> bool:
    meta = getattr(layer, "metadata", {}).get(META_KEY, {})
    return isinstance(layer, Shapes) and meta.get("kind") == CELL_LAYER_KIND


def follow_renames(viewer, on_renamed) -> None:
    """Call ``on_renamed(layer, old_name)`` whenever a layer of ``viewer`` is renamed; first,
    layers that name the renamed image as theirs (``source_image``: cells, occlusion map,
    lineage) take its new name, so the link survives (the docks' layer pickers hold names)."""
    names: dict[int, str] = {}

    def renamed(layer) -> None:
        old, names[id(layer)] = names.get(id(layer), layer.name), layer.name
        if old == layer.name:
            return
        for other in viewer.layers:
            meta = other.metadata.get(META_KEY, {}) if other is not layer else {}
            if isinstance(meta, dict) and meta.get("source_image") == old:
                meta["source_image"] = layer.name
        on_renamed(layer, old)

    def watch(layer) -> None:
        names[id(layer)] = layer.name
        layer.events.name.connect(lambda event, ly=layer: renamed(ly))

    for layer in viewer.layers:
        watch(layer)
    viewer.layers.events.inserted.connect(lambda event: watch(event.value))


def keep_choice_on_rename(combos, old: str, new: str, refresh) -> None:
    """``refresh()`` the layer pickers ``combos`` after a rename, keeping a picker that showed
    the renamed layer on it."""
    chosen = [c.currentText() for c in combos]
    refresh()
    for combo, text in zip(combos, chosen):
        if text == old:
            combo.setCurrentText(new)


def derived_layer(viewer, image, kind: str, name: str):
    """The layer of ``kind`` (``is_cell_layer``, ``occlusion``, ``amodal_tracks``) made for Image
    layer ``image``: found by the image it names (which follows renames), else by ``name``."""
    for layer in viewer.layers:
        meta = layer.metadata.get(META_KEY, {})
        if isinstance(meta, dict) and meta.get("source_image") == image.name and meta.get("kind") == kind:
            return layer
    return viewer.layers[name] if name in viewer.layers else None


def cells_name(image_name: str) -> str:
    return f"{image_name} amodal cells"


def tracks_name(image_name: str) -> str:
    return f"{image_name} lineage"


def occlusion_name(image_name: str) -> str:
    return f"{image_name} occlusion"


def image_axes(layer) -> str:
    """Axes of an Image layer's data: (T)(Z)YX(S)."""
    data = layer.data
    ndim = data.ndim - (1 if layer.rgb else 0)
    meta_axes = image_meta(layer).get("axes", "")
    if meta_axes and len(meta_axes) == data.ndim:
        return meta_axes.upper()
    axes = {2: "YX", 3: "TYX", 4: "TZYX"}.get(ndim)
    if axes is None:
        raise ValueError(
            f"image layer {layer.name!r} has shape {tuple(data.shape)}: expected (Y, X), (T, Y, X) or "
            "(T, Z, Y, X), grey or RGB"
        )
    return axes + ("S" if layer.rgb else "")


def layer_plane(axes: str, plane: int | None) -> int | None:
    """The Z coordinate the cell and occlusion layers carry: the focal plane for
    (T, Z, Y, X) images; None otherwise. For a single (Z, Y, X) focal stack the
    layers stay 2D, so napari shows the outlines of the chosen plane on every plane."""
    return plane if "Z" in axes and "T" in axes else None


def image_file(layer) -> tuple[str, str]:
    """``(path, name)`` of the file behind an Image layer (name falls back to the layer name).
    An image opened with its project has the project as napari's source: its own path is in
    the metadata."""
    meta = layer.metadata.get(META_KEY, {})
    path = meta.get("source_path") or getattr(getattr(layer, "source", None), "path", None) or ""
    name = Path(path).name if path else meta.get("source_file") or layer.name
    return str(path), str(name)


def frame_axis(viewer, layer) -> int | None:
    """The world (dims) axis of a layer's first (time) axis; None for a 2D layer."""
    if layer.ndim < 3:
        return None
    return viewer.dims.ndim - layer.ndim


def current_frame(viewer, layer) -> int:
    """The frame of ``layer`` napari shows now (through the layer's scale and translate)."""
    if frame_axis(viewer, layer) is None:
        return 0
    return int(round(float(layer.world_to_data(viewer.dims.point)[0])))


def go_to_frame(viewer, layer, t: int) -> None:
    """Move napari's time slider to frame ``t`` of ``layer`` (through its scale and translate)."""
    axis = frame_axis(viewer, layer)
    if axis is not None:
        index = [0.0] * layer.ndim
        index[0] = float(t)
        viewer.dims.set_point(axis, float(layer.data_to_world(index)[0]))


def placed_like(image, ndim: int) -> dict:
    """``scale`` and ``translate`` for a layer of ``ndim`` dimensions over Image layer ``image``:
    its last ``ndim`` axes, so outlines and maps lie on the image in world units."""
    return {"scale": tuple(image.scale[-ndim:]), "translate": tuple(image.translate[-ndim:])}


def cells_layer_tuple(frames, *, stack: bool, name: str, plane: int | None = None, categories=None):
    """cell_layer_data, with a Z coordinate inserted for (T, Z, Y, X) images."""
    data, kwargs, kind = cell_layer_data(frames, stack=stack, name=name, categories=categories,
                                         fill_alpha=FILL_ALPHA)
    if plane is not None:
        data = [np.insert(d, 1, plane, axis=1) for d in data]
        kwargs["ndim"] = 4
        kwargs["metadata"][META_KEY]["plane"] = int(plane)
    return data, kwargs, kind


class SegmentationResult:
    """A segmentation run's output for the widgets, built one frame at a time.

    Holds what the layers need, not the dense masks (a 500 x 500 frame of 8 cells
    is 2 MB of masks, a 500-frame run 1 GB): each frame's cell polygons with
    their features and colours, and its occlusion map as float16 (H, W), 0..1.
    ``add`` runs in the worker; the GUI thread only hands the result to napari.

    Args:
        stack: cell vertices get a leading frame coordinate.
        name: the cell layer's name.
        plane: for (T, Z, Y, X) images, the Z plane the cells are drawn in.
    """

    def __init__(self, *, stack: bool, name: str, plane: int | None = None):
        self.stack, self.name, self.plane = stack, name, plane
        self.frames: list[int] = []
        self.occlusion: list[np.ndarray] = []
        self.n_cells = 0
        self._data: list[np.ndarray] = []
        self._features: list[dict] = []
        self._edge: list[np.ndarray] = []
        self._face: list[np.ndarray] = []
        self._kwargs: dict | None = None
        self.track_rows: list[np.ndarray] = []  # per frame (K, 4) (track_id, t, row, col)
        self.graph: dict[int, list[int]] = {}  # daughter track id -> [mother track id]
        self._stacked: np.ndarray | None = None
        self._stacked_frames = 0
        self._ends: list[int] = []  # per frame added: the number of cell outlines up to its end

    @classmethod
    def from_frames(cls, frames, **kwargs) -> "SegmentationResult":
        result = cls(**kwargs)
        for f in frames:
            result.add(f)
        return result

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, frame) -> None:
        """Keep one FrameInstances' polygons, features and occlusion map."""
        data, kwargs, _ = cells_layer_tuple([frame], stack=self.stack, name=self.name, plane=self.plane)
        self._data += data
        self._ends.append(len(self._data))
        self._features.append(kwargs.pop("features"))
        self._edge.append(kwargs.pop("edge_color"))
        self._face.append(kwargs.pop("face_color"))
        self._kwargs = self._kwargs or kwargs
        self.frames.append(int(frame.frame))
        self.occlusion.append(frame.occlusion_map().astype(np.float16))
        self.n_cells += len(frame)
        rows, graph = track_points(frame)
        self.track_rows.append(rows)
        self.graph.update(graph)

    def piece(self, start: int, stop: int) -> dict:
        """What frames ``start..stop-1`` (in the order added) show: ``data`` (outlines),
        ``features`` (column -> array), ``edge`` / ``face`` (K, 4) colours, ``frames`` and
        their ``occlusion`` maps. Safe to read from the GUI thread while the worker adds
        later frames: only frames added before are read."""
        lo = self._ends[start - 1] if start else 0
        hi = self._ends[stop - 1] if stop else 0
        feats = self._features[start:stop]
        keys = list(feats[0]) if feats else []
        return {"data": self._data[lo:hi], "features": {k: np.concatenate([f[k] for f in feats]) for k in keys},
                "edge": np.concatenate(self._edge[start:stop]).reshape(-1, 4) if feats else np.zeros((0, 4)),
                "face": np.concatenate(self._face[start:stop]).reshape(-1, 4) if feats else np.zeros((0, 4)),
                "frames": self.frames[start:stop], "occlusion": self.occlusion[start:stop]}

    def occlusion_stack(self, n_t: int) -> np.ndarray:
        """(n_t, H, W) float32: the occlusion maps of the frames added, zeros elsewhere. Kept
        once built, so the worker builds it (:func:`segment_job`) and the GUI thread only
        shows it (200 frames of 500 x 500 take ~0.4 s to assemble)."""
        if self._stacked is None or len(self._stacked) != n_t or self._stacked_frames != len(self.frames):
            h, w = self.occlusion[0].shape
            self._stacked = np.zeros((n_t, h, w), np.float32)
            for t, m in zip(self.frames, self.occlusion):
                self._stacked[t] = m
            self._stacked_frames = len(self.frames)
        return self._stacked

    def layer_kwargs(self) -> dict:
        """The cell layer's keyword arguments other than its shapes' features and colours
        (name, ndim, text, metadata...); a fresh copy of the metadata."""
        if self._kwargs is None:
            raise ValueError("no frames to show")
        return {**self._kwargs, "metadata": {META_KEY: dict(self._kwargs["metadata"][META_KEY])}}

    def layer_tuple(self) -> tuple[list[np.ndarray], dict, str]:
        """The cell layer data tuple of all frames added (as :func:`cells_layer_tuple`)."""
        kwargs = self.layer_kwargs()
        kwargs["features"] = {k: np.concatenate([f[k] for f in self._features]) for k in self._features[0]}
        kwargs["edge_color"] = np.concatenate(self._edge).reshape(-1, 4)
        kwargs["face_color"] = np.concatenate(self._face).reshape(-1, 4)
        return list(self._data), kwargs, "shapes"


FILLING = "filling"  # cell-layer metadata flag: code is adding a run's results, not the user editing


def filling(layer) -> bool:
    return bool(layer.metadata.get(META_KEY, {}).get(FILLING))


def layer_frames(layer):
    """The cells of a cell layer as one FrameInstances per frame (a Z column is ignored)."""
    return cell_layer_to_frames(layer.data, layer.features, layer.metadata, list(layer.shape_type))


def layer_frame(layer, t: int):
    """The cells of frame ``t`` of a stacked cell layer as FrameInstances (only that
    frame's shapes are rasterised), or None when the layer has no shapes there."""
    if not len(layer.data) or layer.ndim < 3:
        return None
    frames = np.asarray(layer.features["frame"], np.int64)
    keep = np.flatnonzero(frames == t)
    if not len(keep):
        return None
    feats = layer.features.iloc[keep].reset_index(drop=True)
    types = [layer.shape_type[i] for i in keep]
    out = cell_layer_to_frames([layer.data[i] for i in keep], feats, layer.metadata, types)
    return out[t] if t < len(out) else None


def continued_tracker(layer, first: int):
    """A Tracker that links a run starting at frame ``first`` to the cells the layer
    already shows in frame ``first - 1`` and numbers new tracks after the layer's
    largest id, so re-segmenting a range keeps ids (and colours) stable."""
    from ...track import Tracker

    if layer is None or not len(layer.data):
        return Tracker()
    next_id = int(np.asarray(layer.features["cell_id"], np.int64).max(initial=0)) + 1
    return Tracker().continue_from(layer_frame(layer, first - 1) if first > 0 else None, next_id)


def snapshot(layer) -> dict:
    """A copy of everything an edit may change on a cell layer."""
    return {
        "data": [np.array(d, copy=True) for d in layer.data],
        "types": list(layer.shape_type),
        "features": layer.features.copy(),
        "edge": np.array(layer.edge_color, copy=True),
        "face": np.array(layer.face_color, copy=True),
        "reviewed": list(layer.metadata.get(META_KEY, {}).get("reviewed", [])),
    }


def set_features(layer, features) -> None:
    """Assign a cell layer's features, keeping the defaults for hand-drawn shapes
    (napari resets ``feature_defaults`` to the last row on every assignment, so
    the next drawn cell would copy that row's id, frame and area)."""
    from ..layers import NEW_CELL_DEFAULTS

    layer.features = features.reset_index(drop=True) if hasattr(features, "reset_index") else features
    layer.feature_defaults = dict(NEW_CELL_DEFAULTS)


def set_shapes(layer, data, types, features, edge, face) -> None:
    """Replace all shapes of a layer with their features and colours."""
    layer.selected_data = set()
    if len(data):
        layer.data = list(zip(data, types))
    else:
        layer.data = []
    set_features(layer, features)
    if len(data):
        layer.edge_color = np.asarray(edge, np.float32).reshape(-1, 4)
        layer.face_color = np.asarray(face, np.float32).reshape(-1, 4)


def restore(layer, snap: dict) -> None:
    """Bring a cell layer back to a :func:`snapshot`, changing only the shapes that differ
    (removing and adding a few shapes in place; replacing all of a large layer's shapes
    froze napari for seconds). Shape order may differ from the snapshot's; each shape keeps
    its own features and colours."""
    current = [_shape_key(d, t) for d, t in zip(layer.data, layer.shape_type)]
    wanted: dict[tuple, list[int]] = {}
    for i, key in enumerate(_shape_key(d, t) for d, t in zip(snap["data"], snap["types"])):
        wanted.setdefault(key, []).append(i)
    kept, drop = [], []  # kept: (index now, index in the snapshot)
    for i, key in enumerate(current):
        if wanted.get(key):
            kept.append((i, wanted[key].pop(0)))
        else:
            drop.append(i)
    add = sorted(i for rest in wanted.values() for i in rest)
    layer.selected_data = set()
    if drop:
        layer.selected_data = set(drop)
        layer.remove_selected()
    edge, face = np.asarray(snap["edge"]).reshape(-1, 4), np.asarray(snap["face"]).reshape(-1, 4)
    if add:
        layer.add([snap["data"][i] for i in add], shape_type=[snap["types"][i] for i in add],
                  edge_color=edge[add], face_color=face[add])
    order = [j for _, j in kept] + add
    set_features(layer, snap["features"].iloc[order].reset_index(drop=True))
    if order and not (np.allclose(np.asarray(layer.edge_color), edge[order])
                      and np.allclose(np.asarray(layer.face_color), face[order])):
        layer.edge_color, layer.face_color = edge[order], face[order]  # e.g. an id change undone
    layer.metadata.setdefault(META_KEY, {})["reviewed"] = list(snap["reviewed"])
    layer.refresh()


def _shape_key(vertices, shape_type: str) -> tuple:
    """A shape as a hashable key: its type and vertex bytes."""
    v = np.ascontiguousarray(vertices, np.float64)
    return shape_type, v.shape, v.tobytes()


def recolour(layer) -> None:
    """Colour every shape by its cell_id (stable per track)."""
    if not len(layer.data):
        return
    ids = np.asarray(layer.features["cell_id"], np.int64)
    layer.edge_color = np.array([track_colour(int(i)) for i in ids], np.float32)
    layer.face_color = np.array([track_colour(int(i), FILL_ALPHA) for i in ids], np.float32)


def empty_features():
    import pandas as pd

    return pd.DataFrame({k: np.zeros(0, float if k == "score" else np.int64) for k in FEATURES})


def import_compute_stack() -> None:
    """Import torch, torchvision and the model code on the GUI thread.

    Their first import inside a worker thread, while Qt's event loop runs, crashed
    the process (segmentation fault in torchvision's operator registration); a
    widget that will start such workers imports them once when it is created.
    """
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    from ...model import build_model  # noqa: F401


POOL_SPARE_THREADS = 4


def new_worker(func, *args, **kwargs):
    """``napari.qt.threading.create_worker`` with room kept in Qt's global thread pool.

    napari's workers run in that pool, and so does Qt's own image scaling, which the GUI
    thread waits for while holding Python's lock (napari's progress animation scales a
    GIF). With as many threads as cores (2 here) and two of our workers waiting for that
    lock, the scaling never ran and the viewer hung for good (an offer being worked out
    while a segmentation started). The pool keeps spare threads beyond ours."""
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    pool.setMaxThreadCount(max(pool.maxThreadCount(), pool.activeThreadCount() + 1 + POOL_SPARE_THREADS))
    return create_worker(func, *args, **kwargs)


def start_worker(widget, func, kwargs: dict, *, status: str, on_yielded, on_returned, on_error, on_finished,
                 on_aborted=None, **worker_options):
    """Run ``func(**kwargs)`` (a generator) in a napari worker for ``widget``, which has
    ``worker``, ``run_button``, ``stop_button`` and ``status``: wire the signals,
    switch Run off and Stop on, show ``status``, start, and return the worker."""
    worker = new_worker(func, **kwargs, _start_thread=False, _ignore_errors=True, **worker_options)
    worker.yielded.connect(on_yielded)
    worker.returned.connect(on_returned)
    worker.errored.connect(on_error)
    if on_aborted is not None:
        worker.aborted.connect(on_aborted)
    worker.finished.connect(on_finished)
    widget.worker = worker
    widget.run_button.setEnabled(False)
    widget.stop_button.setEnabled(True)
    widget.status.setText(status)
    worker.start()
    return worker
