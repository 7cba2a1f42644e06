"""Corrections offered for the neighbouring frames, in napari (over :mod:`napari_amodal.propagate`).

After an edit in the Proofread dock, :class:`CorrectionOffers` works out where the same fix
applies in the following frames (in a worker thread: the frames are rasterised there from a
copy of the layer), shows it in an ``offer: <cells>`` Shapes layer (yellow: outlines it adds, red:
outlines it removes; emptied, not removed, when the offer goes) and waits for one key: accept or reject. Any other edit withdraws it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...instances import FrameInstances, mask_to_polygons
from ..layers import META_KEY, _shape_mask, cell_layer_to_frames

ADD_COLOUR, REMOVE_COLOUR = "yellow", "red"


class LayerFrames(Sequence):
    """The frames of a copied cell layer, each rasterised when first read (FrameInstances
    whose ``track_ids`` are the shapes' cell ids)."""

    def __init__(self, data, types, features, metadata, n_frames: int, shape: tuple[int, int]):
        self.data, self.types, self.features, self.metadata = data, types, features, metadata
        self.frame_of = np.asarray(features["frame"], np.int64) if len(data) else np.zeros(0, np.int64)
        self.n_frames, self.shape, self._cache = int(n_frames), tuple(shape), {}

    def __len__(self) -> int:
        return self.n_frames

    def __getitem__(self, t: int) -> FrameInstances:
        if not 0 <= t < self.n_frames:
            raise IndexError(t)
        if t not in self._cache:
            keep = np.flatnonzero(self.frame_of == t)
            frames = cell_layer_to_frames([self.data[i] for i in keep], self.features.iloc[keep].reset_index(drop=True),
                                          self.metadata, [self.types[i] for i in keep], image_shape=self.shape)
            self._cache[t] = frames[t] if len(keep) else FrameInstances.empty(self.shape, frame=t)
        return self._cache[t]


def shape_masks(shapes: list[tuple[np.ndarray, str]], shape: tuple[int, int]) -> np.ndarray:
    """(N, Y, X) bool masks of ``(vertices, shape_type)`` pairs (vertices (K, 3): t, y, x)."""
    masks = [_shape_mask(np.asarray(v)[:, -2:], kind, shape) for v, kind in shapes]
    return np.array(masks, bool).reshape(len(masks), *shape)


def compute_offer(frames: LayerFrames, images, frame: int, removed, added, added_ids):
    """The core's offer for an edit in ``frame`` (removed / added: ``(vertices, type)`` pairs);
    None when the edit cannot be carried (nothing left after it)."""
    from ...propagate import Edit, offer

    removed_masks, added_masks = shape_masks(removed, frames.shape), shape_masks(added, frames.shape)
    if not len(removed_masks) and not len(added_masks):
        return None
    result = offer(frames, images, Edit(frame, removed_masks, added_masks, tuple(int(i) for i in added_ids)))
    return result if len(result) else None


def offer_shapes(frames: LayerFrames, result, z: float | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Outlines for the ``offer`` layer: the masks the offer adds and the cells it removes,
    as (K, 3) (t, y, x) or (K, 4) with a ``z`` column, and their colours."""
    data, colours = [], []
    for t in result.frames:
        frame = frames[t]
        for masks, colour in ((result.masks[t], ADD_COLOUR), (frame.masks[result.remove[t]], REMOVE_COLOUR)):
            for m in masks:
                outlines = _outlines(m, t, z)
                data += outlines
                colours += [colour] * len(outlines)
    return data, colours


def _outlines(mask: np.ndarray, t: int, z: float | None) -> list[np.ndarray]:
    """The polygons of ``mask`` (Y, X) as shape vertices of frame ``t``: (K, 3) (t, y, x), or
    (K, 4) with the layer's ``z`` column."""
    lead = [t] if z is None else [t, z]
    return [np.column_stack([np.full((len(poly), len(lead)), lead, np.float32), poly])
            for poly in mask_to_polygons(mask, tolerance=0.4)]


def _offer_and_outlines(frames: LayerFrames, images, frame: int, removed, added, added_ids, z):
    """In the worker: the offer and its outlines for the offer layer (tracing them took 0.2 s of
    the GUI thread for 60 frames), or None."""
    result = compute_offer(frames, images, frame, removed, added, added_ids)
    return None if result is None else (result, *offer_shapes(frames, result, z))


def offer_changes(layer, frames: LayerFrames, result, z: float | None = None) -> tuple[np.ndarray, list, list]:
    """What accepting the offer does to the cell layer: ``(drop, vertices, features)`` -- the
    indices of the shapes to remove (the offer's removed cells: their frame and cell id), and
    the polygons to add for its masks with their feature rows (the edit's cell ids, score 1,
    their area)."""
    feats = layer.features
    frame_col, id_col = np.asarray(feats["frame"], np.int64), np.asarray(feats["cell_id"], np.int64)
    drop = np.zeros(len(layer.data), bool)
    vertices, rows = [], []
    for t in result.frames:
        drop |= (frame_col == t) & np.isin(id_col, frames[t].track_ids[result.remove[t]])
        for m, cid in zip(result.masks[t], result.ids[t]):
            outlines = _outlines(m, t, z)
            vertices += outlines
            rows += [{"cell_id": int(cid), "score": 1.0, "area": int(m.sum()), "frame": int(t), "label": 1,
                      "parent_id": -1}] * len(outlines)
    return np.flatnonzero(drop), vertices, rows


def copy_layer(layer, n_frames: int) -> LayerFrames:
    """A LayerFrames over a copy of ``layer`` (safe to read from a worker thread)."""
    shape = tuple(layer.metadata.get(META_KEY, {}).get("image_shape", ()))
    return LayerFrames([np.array(d, copy=True) for d in layer.data], list(layer.shape_type), layer.features.copy(),
                       dict(layer.metadata), n_frames, shape)


def layer_plane_coordinate(layer) -> float | None:
    """The Z coordinate the shapes of a (t, z, y, x) cell layer carry; None for (t, y, x)."""
    if layer.ndim < 4 or not len(layer.data):
        return None
    return float(np.asarray(layer.data[0])[0, 1])


class CorrectionOffers:
    """The offer after an edit in the Proofread dock ``widget`` (which has ``viewer``,
    ``status``, ``layer``, ``_image_layer()`` and the ``_edit()`` context): computed in a
    worker, shown as a layer, accepted or rejected with one key."""

    def __init__(self, widget):
        self.widget = widget
        self.result = None
        self.frames: LayerFrames | None = None
        self.generation = 0  # an offer computed for an older edit is dropped
        self.worker = None

    @property
    def layer_name(self) -> str:
        return f"offer: {self.widget.cells.currentText()}"

    def propose(self, frame: int, removed, added, added_ids) -> None:
        """Work out, in a worker, where the edit in ``frame`` applies next (``removed`` /
        ``added``: (vertices, shape type) pairs; ``added_ids``: the added cells' ids)."""
        from ._common import new_worker

        from ...segment import frames_view
        from ._common import image_axes, report_error

        self.withdraw()
        layer, image = self.widget.layer, self.widget._image_layer()
        if layer is None or image is None or layer.ndim < 3:
            return  # a single frame has no neighbours
        z = layer_plane_coordinate(layer)
        images, _ = frames_view(image.data, image_axes(image), plane=None if z is None else int(round(z)))
        frames = copy_layer(layer, len(images))
        generation = self.generation
        worker = new_worker(_offer_and_outlines, frames, images, frame, removed, added, added_ids, z,
                               _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda found: self._show(generation, layer, frames, found, z))
        worker.errored.connect(report_error)
        self.worker = worker  # held: a worker nobody references can be collected while it runs
        worker.start()

    def _show(self, generation: int, layer, frames: LayerFrames, found, z) -> None:
        viewer = self.widget.viewer
        if generation != self.generation or found is None or layer not in viewer.layers:
            return  # another edit came first, nothing to offer, or the layer (or viewer) is gone
        result, data, colours = found
        self.result, self.frames, self.z = result, frames, z
        if self.layer_name in viewer.layers:  # reused: adding and removing layers costs the GUI 0.15 s each
            viewer.layers[self.layer_name].add(data, shape_type="polygon", edge_color=colours,
                                               face_color="transparent", edge_width=2)
        else:
            active = viewer.layers.selection.active
            viewer.add_shapes(data, shape_type="polygon", edge_color=colours, face_color="transparent", edge_width=2,
                              name=self.layer_name, metadata={"offer": True}, scale=layer.scale,
                              translate=layer.translate)
            viewer.layers.selection.active = active  # the user goes on editing the cells
        first, last = result.frames[0], result.frames[-1]
        self.widget.status.setText(
            f"The same fix fits frames {first}-{last} ({len(result)} frames): Shift-A accepts it, Shift-X rejects it.")

    def accept(self) -> None:
        from ._common import FILL_ALPHA, report_info, set_features, track_colour

        if self.result is None:
            report_info("No correction is on offer: edit a cell in one frame first.")
            return
        result, frames, z = self.result, self.frames, self.z
        self.withdraw()
        with self.widget._edit() as layer:
            drop, vertices, rows = offer_changes(layer, frames, result, z)
            # in place: rebuilding a layer of 1,600 shapes took 1 s of the GUI thread
            if len(drop):
                layer.selected_data = set(drop.tolist())
                layer.remove_selected()
            if vertices:  # coloured by their track as recolour() would, without recolouring every shape
                ids = [row["cell_id"] for row in rows]
                layer.add(vertices, shape_type="polygon", edge_color=[track_colour(i) for i in ids],
                          face_color=[track_colour(i, FILL_ALPHA) for i in ids])
                feats = layer.features.copy()
                for k, row in enumerate(rows, start=len(feats) - len(rows)):
                    for key, value in row.items():
                        if key in feats.columns:
                            feats.loc[k, key] = value
                set_features(layer, feats)
        self.widget.status.setText(f"Fix carried to frames {result.frames[0]}-{result.frames[-1]}.")

    def withdraw(self) -> None:
        """Drop the offer (rejected, or overtaken by another edit)."""
        self.generation += 1
        self.result = None
        viewer = self.widget.viewer
        if self.layer_name in viewer.layers and len(viewer.layers[self.layer_name].data):
            viewer.layers[self.layer_name].data = []  # emptied, kept for the next offer
