"""Conversions between :class:`FrameInstances` and napari layer data.

napari's Labels layer holds one label per pixel (napari issue #269), so it
cannot hold two cells on one pixel. Amodal cells therefore live in a **Shapes**
layer: one polygon per cell outline, so every complete outline shows at once
over its neighbours, each editable with napari's own vertex tools, coloured by
track id so a cell keeps its colour through time. See docs/layers.md.

A stack's cells are 3D polygons with vertices ``(t, row, col)``; a single
frame's are 2D ``(row, col)``. Layer features hold one row per shape:
``cell_id`` (the track id, or a running id), ``score``, ``area`` (pixels),
``frame``, ``label``, ``parent_id``. The layer metadata key ``napari_amodal``
holds ``image_shape`` (H, W), ``file_name`` and ``categories``.

This module uses numpy only (layer data tuples), no Qt and no napari import.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..instances import FrameInstances, mask_to_polygons, polygons_to_mask
from ..overlay import track_colour

META_KEY = "napari_amodal"
ID_TEXT = {"string": "{cell_id}", "size": 9, "color": "white", "anchor": "center"}  # each cell's id at its centre
CELL_LAYER_KIND = "amodal_cells"
FEATURES = ("cell_id", "score", "area", "frame", "label", "parent_id")
FEATURE_DTYPES = {"cell_id": np.int64, "score": np.float64, "area": np.int64, "frame": np.int64, "label": np.int64,
                  "parent_id": np.int64}
# features of a shape drawn by hand: cell_id -1 marks it new (the proofread widget numbers it)
NEW_CELL_DEFAULTS = {"cell_id": -1, "score": 1.0, "area": 0, "frame": 0, "label": 1, "parent_id": -1}


def cell_layer_data(
    frames: Sequence[FrameInstances],
    *,
    stack: bool | None = None,
    name: str = "amodal cells",
    categories: Sequence[dict] | None = None,
    tolerance: float = 0.4,
    fill_alpha: float = 0.12,
) -> tuple[list[np.ndarray], dict[str, Any], str]:
    """A napari Shapes layer data tuple ``(data, kwargs, "shapes")`` for frames.

    Args:
        frames: one FrameInstances per frame of a stack (``frame`` = index) or
            a single frame. All frames must share one (H, W).
        stack: give vertices a leading frame coordinate (default: when more
            than one frame, or when the frame index is not 0).
        tolerance: polygon simplification in pixels (outline moves < 0.5 px).
    """
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to show")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"frames have different shapes: {sorted(shapes)}")
    if stack is None:
        stack = len(frames) > 1 or frames[0].frame != 0
    data: list[np.ndarray] = []
    feats: dict[str, list] = {k: [] for k in FEATURES}
    edge, face = [], []
    running = 0
    for f in frames:
        for i in range(len(f)):
            tid = int(f.track_ids[i])
            if tid < 0:
                running += 1
                tid = 10_000 + running  # untracked cells still get distinct ids
            for poly in mask_to_polygons(f.masks[i], tolerance=tolerance):
                if stack:
                    poly = np.column_stack([np.full(len(poly), f.frame, np.float32), poly])
                data.append(poly)
                feats["cell_id"].append(tid)
                feats["score"].append(float(f.scores[i]))
                feats["area"].append(int(f.masks[i].sum()))
                feats["frame"].append(int(f.frame))
                feats["label"].append(int(f.labels[i]))
                feats["parent_id"].append(int(f.parent_ids[i]))
                edge.append(track_colour(tid))
                face.append(track_colour(tid, fill_alpha))
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "polygon",
        "features": {k: np.asarray(v, FEATURE_DTYPES[k]) for k, v in feats.items()},
        # a shape drawn by hand must not inherit the last row's cell id (napari's default)
        "feature_defaults": dict(NEW_CELL_DEFAULTS),
        "edge_color": np.array(edge, np.float32).reshape(-1, 4),
        "face_color": np.array(face, np.float32).reshape(-1, 4),
        "edge_width": 1.5,
        "text": dict(ID_TEXT),
        "ndim": 3 if stack else 2,
        "metadata": {
            META_KEY: {
                "kind": CELL_LAYER_KIND,
                "image_shape": list(frames[0].shape),
                "file_name": frames[0].file_name,
                "categories": list(categories or [{"id": 1, "name": "blastomere"}]),
            }
        },
    }
    return data, kwargs, "shapes"


def _shape_mask(vertices: np.ndarray, shape_type: str, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise one napari shape's (row, col) vertices."""
    if shape_type == "ellipse":
        from skimage.draw import ellipse

        # napari stores an ellipse as the 4 corners of its (possibly rotated) box
        centre = vertices.mean(0)
        a = np.linalg.norm(vertices[1] - vertices[0]) / 2
        b = np.linalg.norm(vertices[2] - vertices[1]) / 2
        d = vertices[1] - vertices[0]
        angle = np.arctan2(d[1], d[0])  # direction of the first side in (row, col)
        rr, cc = ellipse(centre[0], centre[1], a, b, shape=shape, rotation=-angle)
        m = np.zeros(shape, bool)
        m[rr, cc] = True
        return m
    if shape_type in ("polygon", "rectangle", "path"):
        return polygons_to_mask(vertices, shape)
    raise ValueError(f"cannot turn a napari '{shape_type}' shape into a cell mask")


def cell_layer_to_frames(
    data: Sequence[np.ndarray],
    features: Any = None,
    metadata: dict | None = None,
    shape_types: Sequence[str] | None = None,
    image_shape: tuple[int, int] | None = None,
    file_name: str | None = None,
) -> list[FrameInstances]:
    """Invert :func:`cell_layer_data`: Shapes layer data -> one FrameInstances per frame.

    Shapes sharing ``(frame, cell_id)`` are one cell (even-odd union, so holes
    stay holes). Frames are returned for 0..max frame, empty ones included, so
    a stack's frame indices are kept. Shapes without features (drawn by hand)
    get a new cell id and score 1.
    """
    meta = (metadata or {}).get(META_KEY, {})
    image_shape = tuple(image_shape or meta.get("image_shape") or ())
    if len(image_shape) != 2:
        raise ValueError("the layer does not say its image shape; pass image_shape=(H, W)")
    file_name = file_name if file_name is not None else meta.get("file_name", "")
    n = len(data)
    shape_types = list(shape_types or ["polygon"] * n)
    feats = _features_dict(features, n)
    ids = np.asarray(feats.get("cell_id", np.full(n, -1)), np.int64)
    next_id = int(max(ids.max(initial=0), 0)) + 1
    cells: dict[tuple[int, int], dict] = {}
    order: list[tuple[int, int]] = []
    for k, verts in enumerate(data):
        verts = np.asarray(verts, float)
        # (t, row, col) or (t, z, row, col): the frame is the first coordinate
        frame = int(round(verts[0, 0])) if verts.shape[1] >= 3 else 0
        yx = verts[:, -2:]
        cid = int(ids[k]) if k < len(ids) and ids[k] >= 0 else -1
        if cid < 0:
            cid, next_id = next_id, next_id + 1
        key = (frame, cid)
        m = _shape_mask(yx, shape_types[k], image_shape)
        if key not in cells:
            cells[key] = {
                "mask": m,
                "score": _feat(feats, "score", k, 1.0),
                "label": int(_feat(feats, "label", k, 1)),
                "parent": int(_feat(feats, "parent_id", k, -1)),
            }
            order.append(key)
        else:
            cells[key]["mask"] ^= m
    n_frames = max((f for f, _ in order), default=0) + 1
    out = []
    for t in range(n_frames):
        keys = [k for k in order if k[0] == t]
        masks = np.array([cells[k]["mask"] for k in keys], bool).reshape(len(keys), *image_shape)
        out.append(
            FrameInstances.from_masks(
                masks,
                shape=image_shape,
                scores=[cells[k]["score"] for k in keys],
                labels=[cells[k]["label"] for k in keys],
                track_ids=[k[1] for k in keys],
                parent_ids=[cells[k]["parent"] for k in keys],
                file_name=file_name,
                frame=t,
            )
        )
    return out


def _features_dict(features: Any, n: int) -> dict[str, np.ndarray]:
    if features is None:
        return {}
    if hasattr(features, "to_dict"):  # pandas DataFrame
        return {k: np.asarray(features[k]) for k in features.columns}
    return {k: np.asarray(v) for k, v in dict(features).items()}


def _feat(feats: dict, key: str, k: int, default):
    col = feats.get(key)
    if col is None or k >= len(col):
        return default
    v = col[k]
    try:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return default
    except TypeError:
        return default
    return v


OCCLUSION_STYLE = {"colormap": "magma", "blending": "additive", "opacity": 0.6, "contrast_limits": (0.0, 1.0)}


def occlusion_layer_data(frames: Sequence[FrameInstances], name: str = "occlusion") -> tuple[np.ndarray, dict, str]:
    """An Image layer data tuple of the occlusion maps: (T, H, W) or (H, W) float32."""
    maps = np.stack([f.occlusion_map() for f in frames]).astype(np.float32)
    if len(frames) == 1 and frames[0].frame == 0:
        maps = maps[0]
    return maps, {"name": name, **OCCLUSION_STYLE}, "image"


def track_points(frame: FrameInstances) -> tuple[np.ndarray, dict[int, list[int]]]:
    """The cells of one frame as napari Tracks rows, and their division links.

    Returns:
        ``rows`` (K, 4) float ``(track_id, t, row, col)``: the centroid of each cell that
        has a track id (K <= N); ``graph`` ``{track_id: [parent track id]}`` for the cells
        born in a division (napari's Tracks ``graph``, which napari-arboretum draws as a tree).
    """
    from ..track import centroid_rows

    points = centroid_rows(frame)  # (N, 4) frame, row, col, diameter
    keep = (frame.track_ids >= 0) & (points[:, 3] > 0)  # a track id and a non-empty mask
    rows = np.column_stack([frame.track_ids[keep], points[keep, :3]]).astype(np.float64)
    graph = {int(t): [int(p)] for t, p in zip(frame.track_ids[keep], frame.parent_ids[keep]) if p >= 0}
    return rows.reshape(-1, 4), graph


def tracks_layer_tuple(rows: np.ndarray, graph: dict[int, list[int]], name: str,
                       plane: int | None = None) -> tuple[np.ndarray, dict, str]:
    """A Tracks layer data tuple: ``rows`` (K, 4) ``(track_id, t, row, col)``, sorted by track
    and time; with ``plane`` (T, Z, Y, X images) a Z column is added so the tracks lie in it."""
    rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))] if len(rows) else rows.reshape(0, 4)
    if plane is not None:
        rows = np.insert(rows, 2, float(plane), axis=1)
    ids = {int(t) for t in rows[:, 0]}
    graph = {k: v for k, v in graph.items() if k in ids and all(p in ids for p in v)}
    kwargs = {"name": name, "graph": graph, "tail_length": 8, "tail_width": 3, "blending": "translucent",
              "metadata": {META_KEY: {"kind": "amodal_tracks"}}}
    return rows, kwargs, "tracks"
