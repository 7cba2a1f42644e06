"""Overlapping cells of a time-lapse as planes of ordinary label images (no Qt, no napari).

A label image holds one label per pixel, so overlapping amodal cells cannot share one. Here
each cell (its id: the track id, stable over time) gets one *plane* for the whole time-lapse,
chosen so that no two cells that overlap in any frame share a plane (a colouring of the
cells' overlap graph with as few planes as can be found). Each plane is then a plain label
stack ``(T, H, W)`` with the cell ids as labels: napari's paint tools, Labels-based plugins and
ImageJ read it. :func:`frame_from_planes` turns the planes of one frame back into cells, with
one cell per id whatever plane its pixels were painted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .instances import FrameInstances, _colour_fewest


def plane_of_cells(frames: Sequence[FrameInstances]) -> dict[int, int]:
    """The plane (0, 1, ...) of every cell id in ``frames``: cells overlapping in any frame
    get different planes; planes are as few as the colouring search finds."""
    ids = sorted({int(i) for f in frames for i in f.track_ids})
    index = {cid: k for k, cid in enumerate(ids)}
    adj: list[set[int]] = [set() for _ in ids]
    for f in frames:
        if len(f) < 2:
            continue
        flat = f.masks.reshape(len(f), -1).astype(np.float32)
        touching = (flat @ flat.T) > 0
        for a, b in zip(*np.nonzero(np.triu(touching, 1))):
            i, j = index[int(f.track_ids[a])], index[int(f.track_ids[b])]
            if i != j:
                adj[i].add(j)
                adj[j].add(i)
    return {cid: int(c) for cid, c in zip(ids, _colour_fewest(adj))}


def label_dtype(max_id: int) -> np.dtype:
    """uint16 while the ids fit (what ImageJ reads as labels), else int32."""
    return np.dtype(np.uint16) if max_id < 2**16 else np.dtype(np.int32)


def render_frame(frame: FrameInstances, planes: dict[int, int], out: np.ndarray) -> None:
    """Write ``frame``'s cells into ``out`` (P, H, W), cleared first: cell id ``c`` on plane
    ``planes[c]``. Where two cells of one plane overlap (a plane met an overlap it was not
    chosen for) the later cell wins there."""
    out[...] = 0
    for m, cid in zip(frame.masks, frame.track_ids):
        out[planes[int(cid)]][m] = int(cid)


def stack_planes(frames: Sequence[FrameInstances], n_frames: int,
                 planes: dict[int, int] | None = None) -> tuple[np.ndarray, dict[int, int]]:
    """``(P, T, H, W)`` label planes of a time-lapse (frames missing from ``frames`` stay 0)
    and the plane of each cell id (:func:`plane_of_cells` unless given)."""
    if not frames:
        raise ValueError("no frames to put on label planes")
    planes = plane_of_cells(frames) if planes is None else planes
    h, w = frames[0].shape
    max_id = max(planes, default=0)
    stack = np.zeros((max(planes.values(), default=0) + 1, n_frames, h, w), label_dtype(max_id))
    for f in frames:
        render_frame(f, planes, stack[:, f.frame])
    return stack, planes


def frame_from_planes(planes: np.ndarray, frame: int, like: FrameInstances | None = None) -> FrameInstances:
    """The cells of one frame's planes ``(P, H, W)``: one cell per id (the union of its
    pixels on every plane). Scores, labels and parents come from the cell of the same id in
    ``like`` (the frame as it was), else score 1 (drawn by hand), label 1, no parent."""
    values = np.unique(planes)
    values = values[values != 0].astype(np.int64)
    masks = np.zeros((len(values), *planes.shape[1:]), bool)
    for i, v in enumerate(values):
        masks[i] = (planes == v).any(0)
    old = {int(c): i for i, c in enumerate(like.track_ids)} if like is not None else {}
    pick = [old.get(int(v)) for v in values]

    def column(name: str, default, dtype):
        source = getattr(like, name) if like is not None else None
        return np.array([source[i] if i is not None else default for i in pick], dtype)

    return FrameInstances.from_masks(
        masks, shape=planes.shape[1:], track_ids=values, scores=column("scores", 1.0, np.float32),
        labels=column("labels", 1, np.int64), parent_ids=column("parent_ids", -1, np.int64),
        file_name=like.file_name if like is not None else "", frame=frame)


def write_label_tiff(path, planes: np.ndarray) -> Path:
    """Write ``(P, T, H, W)`` label planes as one ImageJ hyperstack TIFF, axes T, C, Y, X (a
    channel per plane; uint16 labels; int32 with tifffile's own axes entry when ids exceed
    65,535). Atomic: a failure leaves an earlier file at ``path`` unchanged."""
    import tifffile

    from .atomic import atomic_path

    planes = np.asarray(planes)
    if planes.ndim != 4:
        raise ValueError(f"label planes must be (P, T, H, W), got {planes.shape}")
    data = np.ascontiguousarray(planes.transpose(1, 0, 2, 3))
    with atomic_path(path, suffix=".tif") as tmp:
        if data.dtype == np.uint16:
            tifffile.imwrite(tmp, data, imagej=True, metadata={"axes": "TCYX"})
        else:
            tifffile.imwrite(tmp, data.astype(np.int32), metadata={"axes": "TCYX"})
    return Path(path)
