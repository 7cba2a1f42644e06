"""Linking cells over time: track ids and divisions (numpy + scipy).

Cells of consecutive frames are matched one to one by amodal-mask IoU
(Hungarian assignment). A cell left unmatched starts a new track; if it lies
mostly inside a cell of the previous frame, that cell divided: both daughters
start new tracks with ``parent_ids`` = the mother's track id, and the mother's
track ends (the convention of the synthetic ground truth).
"""

from __future__ import annotations

import numpy as np

from .instances import FrameInstances, instance_overlaps


class Tracker:
    """Streaming linker: call :meth:`update` on frames in time order.

    Args:
        min_iou: smallest IoU that links a cell to the previous frame's cell.
        daughter_overlap: share of a new unmatched cell's area that must lie
            inside a previous cell for it to count as that cell's daughter.
        split_iou: the mother's match counts as her other daughter only below
            this IoU (a cell that did not divide keeps a high IoU frame to frame).
    """

    def __init__(self, min_iou: float = 0.3, daughter_overlap: float = 0.5, split_iou: float = 0.75):
        self.min_iou, self.daughter_overlap, self.split_iou = min_iou, daughter_overlap, split_iou
        self.prev: FrameInstances | None = None
        self.next_id = 1
        self.parents: dict[int, int] = {}

    def continue_from(self, prev: FrameInstances | None, next_id: int) -> "Tracker":
        """Link the next frame to ``prev`` (an already tracked frame, e.g. the one before a
        re-segmented range) and number new tracks from ``next_id``, so ids stay those of
        the cells already shown. Returns self."""
        self.prev = prev
        self.next_id = max(int(next_id), 1)
        if prev is not None:
            self.parents.update({int(t): int(p) for t, p in zip(prev.track_ids, prev.parent_ids)})
        return self

    def update(self, inst: FrameInstances) -> FrameInstances:
        """Set ``track_ids`` / ``parent_ids`` of ``inst`` (in place) and return it.
        A frame that does not follow the previous one (a gap) starts new tracks."""
        from scipy.optimize import linear_sum_assignment

        n = len(inst)
        ids = np.full(n, -1, np.int64)
        parents = np.full(n, -1, np.int64)
        prev = self.prev if self.prev is not None and inst.frame == self.prev.frame + 1 else None
        if prev is not None and n and len(prev):
            iou, inter = instance_overlaps(inst, prev)
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    ids[r] = prev.track_ids[c]
                    parents[r] = self.parents.get(int(ids[r]), -1)
            # an unmatched cell lying mostly inside a previous cell is a daughter of it;
            # at a division both daughters start new tracks (the mother's track ends)
            area = inst.masks.sum((1, 2)).astype(np.float64)
            match_of = {int(c): int(r) for r, c in zip(rows, cols) if iou[r, c] >= self.min_iou}
            for r in np.flatnonzero(ids < 0):
                c = int(np.argmax(inter[r]))
                if area[r] and inter[r, c] / area[r] >= self.daughter_overlap:
                    parents[r] = prev.track_ids[c]
                    sister = match_of.get(c)
                    # a cell that merely kept its place (high IoU) did not divide
                    if sister is not None and ids[sister] == prev.track_ids[c] and iou[sister, c] < self.split_iou:
                        ids[sister] = -1
                        parents[sister] = prev.track_ids[c]
        for r in np.flatnonzero(ids < 0):
            ids[r] = self.next_id
            self.next_id += 1
            self.parents[int(ids[r])] = int(parents[r])
        inst.track_ids, inst.parent_ids = ids, parents
        self.prev = inst
        return inst


def link_tracks(frames: list[FrameInstances], **kwargs) -> list[FrameInstances]:
    """Track ids and divisions for frames of one stack (sorted by ``frame``, in place)."""
    tracker = Tracker(**kwargs)
    for f in sorted(frames, key=lambda f: f.frame):
        tracker.update(f)
    return frames


def centroid_rows(frame: FrameInstances) -> np.ndarray:
    """(N, 4) float ``(frame, row, col, diameter)`` of each cell: the centroid of its amodal
    mask and the diameter of the disk of its area (px), the input of :func:`laptrack_links`."""
    rows = np.zeros((len(frame), 4))
    for i in range(len(frame)):
        ys, xs = np.nonzero(frame.masks[i])
        rows[i] = (frame.frame, ys.mean() if len(ys) else 0.0, xs.mean() if len(xs) else 0.0,
                   2.0 * np.sqrt(len(ys) / np.pi))
    return rows


def laptrack_links(points: np.ndarray, max_move: float = 0.5, max_split: float = 0.75,
                   gap_frames: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Track ids and mother track ids of the cells of one time-lapse, linked by laptrack
    (linear-assignment tracking of centroids with gap closing and splitting, Jaqaman et al. 2008).

    Distances are in units of the median cell diameter of the time-lapse (cells of one embryo
    are of a size), so one setting serves any zoom and frame size.

    Args:
        points: (K, 4) ``(frame, row, col, diameter)`` per cell (:func:`centroid_rows`), any order.
        max_move: largest centroid step from one frame to the next (diameters).
        max_split: largest distance from a mother's last centroid to a daughter's first (diameters).
        gap_frames: frames a cell may be missed and still keep its track.

    Returns:
        ``(track_ids, parent_ids)``, (K,) int64 each: ids from 1 (a track spans a gap), the
        mother's track id for a cell born in a division, else -1.
    """
    import pandas as pd
    from laptrack import LapTrack

    points = np.asarray(points, np.float64).reshape(-1, 4)
    ids, parents = np.full(len(points), -1, np.int64), np.full(len(points), -1, np.int64)
    real = np.flatnonzero(points[:, 3] > 0)  # a cell with an empty mask has no place to be linked from
    if not len(real):
        return ids, parents
    pts = points[real]
    d = max(float(np.median(pts[:, 3])), 1.0)
    tracker = LapTrack(cutoff=(max_move * d) ** 2, gap_closing_cutoff=(max_move * d) ** 2,
                       gap_closing_max_frame_count=gap_frames, splitting_cutoff=(max_split * d) ** 2)
    # frames counted from the first (laptrack takes frames without cells as gaps); "row" carries each
    # cell through laptrack, which returns its rows in its own order
    coords = pd.DataFrame({"frame": (pts[:, 0] - pts[:, 0].min()).astype(np.int64), "y": pts[:, 1], "x": pts[:, 2],
                           "row": np.arange(len(pts))})
    tracks, splits, _ = tracker.predict_dataframe(coords, ["y", "x"], only_coordinate_cols=False)
    tracks = tracks.sort_values("row")
    if not np.array_equal(tracks["row"].to_numpy(), np.arange(len(pts))):
        raise RuntimeError("laptrack did not return one row per cell")
    mother = dict(zip(splits["child_track_id"] + 1, splits["parent_track_id"] + 1)) if len(splits) else {}
    ids[real] = tracks["track_id"].to_numpy(np.int64) + 1
    parents[real] = [mother.get(int(t), -1) for t in ids[real]]
    return ids, parents


def link_laptrack(frames: list[FrameInstances], **kwargs) -> list[FrameInstances]:
    """:func:`laptrack_links` on the cells of ``frames`` (one time-lapse): sets their
    ``track_ids`` / ``parent_ids`` in place and returns them; the alternative to :class:`Tracker`."""
    rows = [centroid_rows(f) for f in frames]
    ids, parents = laptrack_links(np.concatenate(rows) if rows else np.zeros((0, 4)), **kwargs)
    start = 0
    for f, r in zip(frames, rows):
        f.track_ids, f.parent_ids = ids[start:start + len(r)], parents[start:start + len(r)]
        start += len(r)
    return frames
