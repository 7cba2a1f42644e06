"""The one data type for amodal cell instances, and its conversions.

Every part of napari-amodal speaks :class:`FrameInstances`: the synthetic data
generators produce it, the COCO-amodal reader and writer translate it, the model
returns it, the napari layers are built from it and the proofreading edits end
in it again.

Conventions (all arrays are numpy):

- Pixel ``(row, col) = (y, x)``; pixel centres sit on integer coordinates, as in
  napari and scikit-image.
- ``masks``: ``(N, H, W) bool``, the *complete* (amodal) mask of each cell,
  including the parts hidden behind other cells, so masks may overlap.
- ``boxes``: ``(N, 4) float32`` as ``(x1, y1, x2, y2)`` in pixels, the tight box
  of each amodal mask with ``x2, y2`` exclusive (a one-pixel mask at ``(y, x)``
  has box ``(x, y, x + 1, y + 1)``); COCO's ``[x, y, w, h]`` is
  ``(x1, y1, x2 - x1, y2 - y1)``.
- ``scores``: ``(N,) float32`` in ``[0, 1]``; ground truth uses 1.
- ``labels``: ``(N,) int64`` category ids (>= 1).
- ``track_ids``: ``(N,) int64``, the cell's identity through time, -1 unknown.
- ``parent_ids``: ``(N,) int64``, the track id of the mother cell for a cell
  born in a division, -1 otherwise.
- ``visible``: optional ``(N, H, W) bool``, the part of each cell not hidden
  behind another one.
- ``occlusion``: optional ``(H, W) float32`` in ``[0, 1]``, the probability that
  a pixel is covered by two or more cells (predicted), or the exact 0/1 map.
- ``inferred``: optional ``(N,) bool``, True for a cell the detector did not see in
  this frame but the time-lapse implies (carried from a neighbouring frame by
  :mod:`napari_amodal.temporal`).

Polygons are ``(K, 2) float`` arrays of ``(row, col)`` vertices (napari's Shapes
convention), closed implicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "FrameInstances",
    "masks_to_boxes",
    "masks_to_rles",
    "rles_to_masks",
    "mask_to_polygons",
    "polygons_to_mask",
    "masks_to_layers",
    "layers_to_masks",
    "occlusion_from_masks",
    "mask_iou",
]


def _as_masks(masks, shape: tuple[int, int] | None) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2 and masks.size == 0 and shape is not None:
        masks = masks.reshape(0, *shape)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {masks.shape}")
    return masks.astype(bool, copy=False)


@dataclass
class FrameInstances:
    """Amodal instances of one 2D frame; see the module docstring for conventions.

    Build it with :meth:`from_masks` unless you already hold every field.
    ``file_name`` and ``frame`` identify the image: the stack file's name and the
    0-based index of this frame in it.
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray
    parent_ids: np.ndarray
    visible: np.ndarray | None = None
    occlusion: np.ndarray | None = None
    file_name: str = ""
    frame: int = 0
    meta: dict = field(default_factory=dict)
    inferred: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be (N, H, W) bool, got {self.masks.shape} {self.masks.dtype}")
        for name in ("boxes", "scores", "labels", "track_ids", "parent_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} masks")
        if self.boxes.shape != (n, 4):
            raise ValueError(f"boxes must be (N, 4), got {self.boxes.shape}")
        if self.visible is not None and self.visible.shape != self.masks.shape:
            raise ValueError(f"visible {self.visible.shape} does not match masks {self.masks.shape}")
        if self.occlusion is not None and self.occlusion.shape != self.shape:
            raise ValueError(f"occlusion {self.occlusion.shape} does not match frame {self.shape}")
        if self.inferred is not None and self.inferred.shape != (n,):
            raise ValueError(f"inferred has shape {self.inferred.shape} for {n} masks")

    # -- construction -------------------------------------------------------
    @classmethod
    def from_masks(
        cls,
        masks,
        *,
        shape: tuple[int, int] | None = None,
        scores=None,
        labels=None,
        track_ids=None,
        parent_ids=None,
        visible=None,
        occlusion=None,
        file_name: str = "",
        frame: int = 0,
        meta: dict | None = None,
        inferred=None,
    ) -> "FrameInstances":
        """Instances from ``(N, H, W)`` masks; boxes are computed, the rest defaults.

        ``shape`` (H, W) is needed only when ``masks`` is an empty list.
        """
        if isinstance(masks, (list, tuple)) and len(masks) == 0:
            if shape is None:
                raise ValueError("shape is required for a frame without instances")
            masks = np.zeros((0, *shape), bool)
        masks = _as_masks(masks, shape)
        n = len(masks)

        def col(name, values, dtype, default):
            if values is None:
                return np.full(n, default, dtype)
            values = np.asarray(values, dtype).reshape(-1)
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} values for {n} masks")
            return values

        return cls(
            masks=masks,
            boxes=masks_to_boxes(masks),
            scores=col("scores", scores, np.float32, 1.0),
            labels=col("labels", labels, np.int64, 1),
            track_ids=col("track_ids", track_ids, np.int64, -1),
            parent_ids=col("parent_ids", parent_ids, np.int64, -1),
            visible=None if visible is None else _as_masks(visible, masks.shape[1:]),
            occlusion=None if occlusion is None else np.asarray(occlusion, np.float32),
            file_name=file_name,
            frame=int(frame),
            meta=dict(meta or {}),
            inferred=None if inferred is None else col("inferred", inferred, bool, False),
        )

    @classmethod
    def empty(cls, shape: tuple[int, int], **kwargs) -> "FrameInstances":
        """A frame of ``shape`` (H, W) with no instances."""
        return cls.from_masks(np.zeros((0, *shape), bool), **kwargs)

    # -- views ---------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.masks)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the frame."""
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 amodal areas in pixels."""
        return self.masks.sum((1, 2), dtype=np.int64)

    def select(self, keep) -> "FrameInstances":
        """A new frame holding the instances picked by a boolean or index array."""
        keep = np.asarray(keep)
        if keep.size == 0 and keep.dtype != bool:  # [] selects nothing (numpy reads it as float)
            keep = keep.astype(np.int64)
        if keep.dtype == bool and keep.shape != (len(self),):
            raise ValueError(f"boolean selector must have shape ({len(self)},)")
        return replace(
            self,
            masks=self.masks[keep],
            boxes=self.boxes[keep],
            scores=self.scores[keep],
            labels=self.labels[keep],
            track_ids=self.track_ids[keep],
            parent_ids=self.parent_ids[keep],
            visible=None if self.visible is None else self.visible[keep],
            meta=dict(self.meta),
            inferred=None if self.inferred is None else self.inferred[keep],
        )

    def occlusion_map(self) -> np.ndarray:
        """(H, W) float32: the stored occlusion map, else the exact one from the masks."""
        if self.occlusion is not None:
            return self.occlusion
        return occlusion_from_masks(self.masks).astype(np.float32)

    # -- conversions ---------------------------------------------------------
    def to_rles(self) -> list[dict]:
        """COCO compressed RLEs (``counts`` as str) of the amodal masks."""
        return masks_to_rles(self.masks)

    @classmethod
    def from_rles(cls, rles: Sequence[dict], shape: tuple[int, int], **kwargs) -> "FrameInstances":
        return cls.from_masks(rles_to_masks(rles, shape), shape=shape, **kwargs)

    def to_polygons(self) -> list[list[np.ndarray]]:
        """For each instance, its outline polygons ((K, 2) row/col arrays)."""
        return [mask_to_polygons(m) for m in self.masks]

    @classmethod
    def from_polygons(
        cls, polygons: Sequence[Sequence[np.ndarray] | np.ndarray], shape: tuple[int, int], **kwargs
    ) -> "FrameInstances":
        """Instances from one polygon (or list of polygons) per instance."""
        masks = np.zeros((len(polygons), *shape), bool)
        for i, poly in enumerate(polygons):
            masks[i] = polygons_to_mask(poly, shape)
        return cls.from_masks(masks, shape=shape, **kwargs)

    def to_layers(self, values: np.ndarray | None = None) -> np.ndarray:
        """A layered label stack ``(P, H, W)``; see :func:`masks_to_layers`.

        ``values`` are the label written for each instance (default ``1..N``).
        """
        return masks_to_layers(self.masks, values)

    @classmethod
    def from_layers(cls, layers: np.ndarray, **kwargs) -> "FrameInstances":
        """Instances from a layered label stack, ordered by label value; label
        values become ``track_ids`` unless those are given."""
        values, masks = layers_to_masks(layers)
        kwargs.setdefault("track_ids", values)
        return cls.from_masks(masks, shape=layers.shape[1:], **kwargs)


# ---------------------------------------------------------------------------
# mask helpers


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 ``x1, y1, x2, y2`` (x2, y2 exclusive).

    Empty masks get an all-zero box.
    """
    masks = np.asarray(masks, bool)
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows = masks.any(2)
    cols = masks.any(1)
    for i in range(n):
        ys = np.flatnonzero(rows[i])
        xs = np.flatnonzero(cols[i])
        if len(ys):
            boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> COCO compressed RLE dicts ``{size: [H, W], counts: str}``."""
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, bool)
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def rles_to_masks(rles: Sequence[dict], shape: tuple[int, int]) -> np.ndarray:
    """COCO RLEs (compressed or not) -> (N, H, W) bool; ``shape`` is (H, W)."""
    from pycocotools import mask as mask_utils

    if len(rles) == 0:
        return np.zeros((0, *shape), bool)
    out = np.zeros((len(rles), *shape), bool)
    for i, rle in enumerate(rles):
        rle = dict(rle)
        if tuple(rle["size"]) != tuple(shape):
            raise ValueError(f"RLE size {rle['size']} does not match image shape {list(shape)}")
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, *shape)
        elif isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
        out[i] = mask_utils.decode(rle).astype(bool)
    return out


def mask_to_polygons(mask: np.ndarray, min_vertices: int = 3, tolerance: float = 0.0) -> list[np.ndarray]:
    """Sub-pixel outline(s) of a 2D mask as ``(K, 2)`` (row, col) float arrays.

    The contours pass half-way between inside and outside pixel centres
    (marching squares at level 0.5), so :func:`polygons_to_mask` gives back the
    same pixels up to the rare corner case. ``tolerance`` > 0 (pixels) drops
    vertices that lie within that distance of the simplified outline
    (Douglas-Peucker), for lighter napari Shapes.
    """
    from skimage import measure

    mask = np.asarray(mask, bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return []
    # marching squares only sees the mask's neighbourhood: trace it in the box, not the frame
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    contours = measure.find_contours(np.pad(box, 1).astype(np.float32), 0.5)
    offset = np.array([rows[0] - 1.0, cols[0] - 1.0])  # the box's origin, less the padding
    out = []
    for c in contours:
        c = c + offset
        if tolerance > 0:
            c = simplify_outline(c, tolerance)
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= min_vertices:
            out.append(c.astype(np.float32))
    return out


def simplify_outline(coords: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker simplification of a ``(K, 2)`` chain: the vertices scikit-image's
    ``approximate_polygon`` keeps (the same distances: perpendicular to a segment where the
    point projects inside it, else to the nearer end), found for every open segment at once,
    level by level, instead of one segment per step (10-20x faster on cell outlines)."""
    n = len(coords)
    if tolerance <= 0 or n < 3:
        return coords
    keep = np.zeros(n, bool)
    keep[[0, -1]] = True
    segments = np.array([[0, n - 1]])
    while len(segments):
        segments = segments[segments[:, 1] - segments[:, 0] > 1]  # only those with points between
        if not len(segments):
            break
        inner = segments[:, 1] - segments[:, 0] - 1
        owner = np.repeat(np.arange(len(segments)), inner)
        first = np.cumsum(inner) - inner  # where each segment's points start in the flat arrays
        index = segments[owner, 0] + 1 + np.arange(len(owner)) - first[owner]
        d = _segment_distances(coords[index], coords[segments[owner, 0]], coords[segments[owner, 1]])
        far = np.maximum.reduceat(d, first)
        split = far > tolerance
        at_max = np.where(d == far[owner], np.arange(len(d)), len(d))
        new = index[np.minimum.reduceat(at_max, first)[split]]  # the first farthest point, as argmax
        keep[new] = True
        segments = np.concatenate([np.stack([segments[split, 0], new], 1), np.stack([new, segments[split, 1]], 1)])
    return coords[keep]


def _segment_distances(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M,) distances of (M, 2) ``points`` to the segments ``a -> b`` (each (M, 2), row/col)."""
    dr, dc = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    angle = -np.arctan2(dr, dc)
    offset = a[:, 1] * np.sin(angle) + a[:, 0] * np.cos(angle)
    dr0, dc0 = points[:, 0] - a[:, 0], points[:, 1] - a[:, 1]
    dr1, dc1 = points[:, 0] - b[:, 0], points[:, 1] - b[:, 1]
    inside = (dr0 * dr + dc0 * dc > 0) & (-dr1 * dr - dc1 * dc > 0)
    perpendicular = np.abs(points[:, 0] * np.cos(angle) + points[:, 1] * np.sin(angle) - offset)
    ends = np.minimum(np.sqrt(dc0**2 + dr0**2), np.sqrt(dc1**2 + dr1**2))
    return np.where(inside, perpendicular, ends)


def polygons_to_mask(polygons, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygon(s) of (row, col) vertices; pixels whose centre is inside
    are set.  Several polygons combine by even-odd rule, so a ring-shaped cell's
    hole stays open."""
    from skimage.draw import polygon as draw_polygon

    if isinstance(polygons, np.ndarray) and polygons.ndim == 2:
        polygons = [polygons]
    mask = np.zeros(shape, bool)
    for poly in polygons:
        poly = np.asarray(poly, float)
        if len(poly) < 3:
            continue
        rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=shape)
        part = np.zeros(shape, bool)
        part[rr, cc] = True
        mask ^= part
    return mask


def occlusion_from_masks(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (H, W) bool: pixels covered by two or more masks."""
    masks = np.asarray(masks, bool)
    if len(masks) < 2:
        return np.zeros(masks.shape[1:], bool)
    return masks.sum(0, dtype=np.int32) >= 2


def mask_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise overlap in pixels of (N, H, W) and (M, H, W) bool masks -> (N, M) float32."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    a = a.reshape(len(a), -1 if len(a) else int(np.prod(a.shape[1:]))).astype(np.float32)
    b = b.reshape(len(b), -1 if len(b) else int(np.prod(b.shape[1:]))).astype(np.float32)
    return a @ b.T


def instance_overlaps(a: "FrameInstances", b: "FrameInstances") -> tuple[np.ndarray, np.ndarray]:
    """Pairwise amodal IoU and intersection (pixels) of the cells of two frames -> two (N, M)
    float64 arrays. The same figures as :func:`mask_iou` / :func:`mask_intersection`, but
    only pixels inside both boxes are read: a few ms for 1024 x 1024 frames, not 100."""
    inter = np.zeros((len(a), len(b)))
    ba, bb = np.round(a.boxes).astype(np.int64), np.round(b.boxes).astype(np.int64)
    for i in range(len(a)):
        x1, y1 = np.maximum(ba[i, 0], bb[:, 0]), np.maximum(ba[i, 1], bb[:, 1])
        x2, y2 = np.minimum(ba[i, 2], bb[:, 2]), np.minimum(ba[i, 3], bb[:, 3])
        for j in np.flatnonzero((x2 > x1) & (y2 > y1)):
            sl = (slice(y1[j], y2[j]), slice(x1[j], x2[j]))
            inter[i, j] = np.count_nonzero(a.masks[i][sl] & b.masks[j][sl])
    area_a = np.array([np.count_nonzero(m[y1:y2, x1:x2]) for m, (x1, y1, x2, y2) in zip(a.masks, ba)], np.float64)
    area_b = np.array([np.count_nonzero(m[y1:y2, x1:x2]) for m, (x1, y1, x2, y2) in zip(b.masks, bb)], np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0), inter


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, H, W) and (M, H, W) bool masks -> (N, M) float64."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    inter = mask_intersection(a, b)
    union = a.sum((1, 2))[:, None] + b.sum((1, 2))[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou.astype(np.float64)


# ---------------------------------------------------------------------------
# layered label stacks


def _overlap_graph(masks: np.ndarray) -> list[set[int]]:
    n = len(masks)
    flat = masks.reshape(n, -1).astype(np.float32)
    inter = flat @ flat.T
    return [set(np.flatnonzero(inter[i] > 0).tolist()) - {i} for i in range(n)]


def _colour_exact(adj: list[set[int]], limit: int, budget: int = 200_000) -> list[int] | None:
    """Try to colour the overlap graph with at most ``limit`` colours
    (backtracking, most constrained vertex first); None if impossible or the
    search budget ran out."""
    n = len(adj)
    colour = [-1] * n
    steps = 0

    def pick() -> int:
        best, key = -1, None
        for v in range(n):
            if colour[v] >= 0:
                continue
            sat = len({colour[u] for u in adj[v] if colour[u] >= 0})
            k = (sat, len(adj[v]))
            if key is None or k > key:
                best, key = v, k
        return best

    def solve(done: int) -> bool:
        nonlocal steps
        steps += 1
        if steps > budget:
            raise TimeoutError
        if done == n:
            return True
        v = pick()
        used = {colour[u] for u in adj[v] if colour[u] >= 0}
        highest = max(colour) + 1
        for c in range(min(limit, highest + 1)):  # symmetry: at most one new colour
            if c in used:
                continue
            colour[v] = c
            if solve(done + 1):
                return True
        colour[v] = -1
        return False

    try:
        return list(colour) if solve(0) else None
    except TimeoutError:
        return None


def _colour_fewest(adj: list[set[int]]) -> list[int]:
    """Colour the overlap graph with as few colours as we can prove: greedy
    DSATUR first, then exact search for one colour less until it fails."""
    n = len(adj)
    if n == 0:
        return []
    best = _colour_exact(adj, limit=n, budget=10**9)
    assert best is not None  # n colours always suffice
    while max(best) > 0:
        fewer = _colour_exact(adj, limit=max(best))
        if fewer is None:
            break
        best = fewer
    return best


def masks_to_layers(masks: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """Put overlapping masks on the fewest label planes with no two on one pixel.

    Args:
        masks: (N, H, W) bool amodal masks.
        values: (N,) positive ints written for each mask (default ``1..N``).
    Returns:
        (P, H, W) int32 label planes, 0 = background, ``P >= 1`` (one empty
        plane when N == 0). Planes are filled in instance order and the plane
        count is the overlap graph's chromatic number (exact search, falling
        back to greedy colouring only for very large tangled graphs).
    """
    masks = np.asarray(masks, bool)
    n = len(masks)
    if values is None:
        values = np.arange(1, n + 1)
    values = np.asarray(values, np.int64)
    if len(values) != n or (n and values.min() < 1):
        raise ValueError("values must hold one positive label per mask")
    if n and len(np.unique(values)) != n:
        raise ValueError("label values must be unique")
    colours = _colour_fewest(_overlap_graph(masks)) if n else []
    planes = np.zeros((max(colours, default=0) + 1, *masks.shape[1:]), np.int32)
    for i, c in enumerate(colours):
        planes[c][masks[i]] = values[i]
    return planes


def layers_to_masks(layers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`masks_to_layers`.

    Args:
        layers: (P, H, W) or (H, W) integer labels, 0 background. A label that
            appears on several planes is one instance (union of its pixels).
    Returns:
        ``(values, masks)``: sorted (N,) int64 labels and (N, H, W) bool masks.
    """
    layers = np.asarray(layers)
    if layers.ndim == 2:
        layers = layers[None]
    if layers.ndim != 3:
        raise ValueError(f"layers must be (P, H, W), got {layers.shape}")
    values = np.unique(layers)
    values = values[values != 0].astype(np.int64)
    masks = np.zeros((len(values), *layers.shape[1:]), bool)
    for i, v in enumerate(values):
        masks[i] = (layers == v).any(0)
    return values, masks


def stack_by_frame(frames: Iterable[FrameInstances]) -> dict[tuple[str, int], FrameInstances]:
    """Index frames by ``(file_name, frame)``; duplicates raise ValueError."""
    out: dict[tuple[str, int], FrameInstances] = {}
    for f in frames:
        key = (f.file_name, f.frame)
        if key in out:
            raise ValueError(f"two frames share file_name={f.file_name!r}, frame={f.frame}")
        out[key] = f
    return out
