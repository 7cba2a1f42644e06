"""Decoding a time-lapse consistently: cell counts that respect the lineage (numpy).

An embryo's cells persist and divide; they do not vanish or appear from nothing. Frame by
frame the detector misses a hidden cell here and invents one there, but over time that
shows. :class:`TemporalDecoder` reads a stack's frames in time order and

1. decides each frame's cell count by Viterbi decoding of the count sequence: the
   detections' scores say how likely each count is in a frame (each detection taken as
   an independent cell with probability = its score); a count may grow (divisions, at
   a cost per cell), and only rarely fall (a cell leaving the field, the embryo
   compacting, the dish emptying, each at a higher cost);
2. keeps that many cells, ranked by score plus temporal support (overlap with the cells
   of the frame before and the detections of the frame after), dropping duplicates;
3. where the detections fall short, carries the missing cell's mask from the frame
   before (``inferred`` = True in the result).

A frame is decided once ``lag`` later frames have been seen, so memory holds lag + 2
frames whatever the stack length. Frames without contrast (``state == "blank"``) say
nothing about the count and keep no cells. Track ids are set afterwards by
:class:`~napari_amodal.track.Tracker`, on the decided frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import numpy as np

from .instances import FrameInstances, instance_overlaps

__all__ = ["CountModel", "TemporalDecoder", "count_costs", "decode_counts", "decode_time_lapse"]


@dataclass(frozen=True)
class CountModel:
    """Costs (negative log probabilities) of the count sequence.

    Attributes:
        division_cost: per cell added between two consecutive frames.
        loss_cost: per cell lost between two frames while some remain (one leaves the field).
        vanish_cost: all cells gone at once (compaction, an empty or defocused dish), or
            cells appearing after a frame with none.
        miss_cost: per cell counted beyond the frame's detections (a cell nothing saw).
        floor: detection scores are clipped to ``[floor, 1 - floor]`` (no certainty).
        max_cells: the largest count considered.
    """

    division_cost: float = 3.0
    loss_cost: float = 8.0
    vanish_cost: float = 12.0
    miss_cost: float = 4.0
    floor: float = 0.02
    max_cells: int = 24

    def transitions(self) -> np.ndarray:
        """``(K, K)`` cost of going from count ``i`` (row) to count ``j`` (column), K = max_cells + 1."""
        k = np.arange(self.max_cells + 1)
        step = k[None, :] - k[:, None]
        cost = np.where(step > 0, step * self.division_cost, -step * self.loss_cost).astype(np.float64)
        cost[1:, 0] = self.vanish_cost
        cost[0, 1:] = self.vanish_cost
        return cost


def count_costs(scores: np.ndarray, model: CountModel = CountModel(), threshold: float = 0.5) -> np.ndarray:
    """``(K,)`` cost of each count ``0..max_cells`` for one frame's detection ``scores`` (N,).

    The count ``n`` means the ``n`` best detections are cells and the rest are not:
    cost = -sum log p (kept) - sum log (1 - p) (dropped), p the score's odds divided by
    the odds of ``threshold`` (so that a lone frame keeps exactly the detections scored
    above the threshold); counts beyond the detections add ``miss_cost`` per cell. The
    minimum is 0.
    """
    s = np.clip(np.sort(np.asarray(scores, np.float64))[::-1], 1e-6, 1 - 1e-6)
    if threshold != 0.5:
        t = float(np.clip(threshold, 1e-6, 1 - 1e-6))
        s = 1.0 / (1.0 + (1 - s) / s * t / (1 - t))
    s = np.clip(s, model.floor, 1 - model.floor)
    keep, drop = np.concatenate([[0.0], np.cumsum(-np.log(s))]), np.concatenate([[0.0], np.cumsum(-np.log1p(-s))])
    cost = keep + (drop[-1] - drop)  # (N + 1,): n = 0..N
    k = model.max_cells + 1
    if len(cost) < k:
        cost = np.concatenate([cost, cost[-1] + model.miss_cost * np.arange(1, k - len(cost) + 1)])
    cost = cost[:k]
    return cost - cost.min()


def decode_counts(costs: np.ndarray, model: CountModel = CountModel(), start: int | None = None) -> np.ndarray:
    """The cheapest count sequence (Viterbi) for per-frame ``costs`` (T, K).

    ``start`` fixes the count before the first frame (a decided earlier frame); None
    leaves it free. Returns ``(T,) int64`` counts.
    """
    costs = np.asarray(costs, np.float64)
    trans = model.transitions()
    if start is None:
        total = costs[0].copy()
    else:
        total = trans[start] + costs[0]
    back = np.zeros(costs.shape, np.int64)
    for t in range(1, len(costs)):
        step = total[:, None] + trans  # (from, to)
        back[t] = np.argmin(step, axis=0)
        total = step[back[t], np.arange(len(total))] + costs[t]
    path = np.zeros(len(costs), np.int64)
    path[-1] = int(np.argmin(total))
    for t in range(len(costs) - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _support(candidates: FrameInstances, others: FrameInstances | None) -> np.ndarray:
    """(N,) best score-weighted amodal IoU of each candidate cell with ``others``' cells."""
    if others is None or not len(others) or not len(candidates):
        return np.zeros(len(candidates))
    return (instance_overlaps(candidates, others)[0] * others.scores[None, :]).max(axis=1)


def select_cells(frame: FrameInstances, count: int, before: FrameInstances | None,
                 after: FrameInstances | None) -> FrameInstances:
    """Keep ``count`` cells of ``frame``: its detections and, if they fall short, cells of
    ``before`` carried over (``inferred``), best temporal support first.

    ``before`` is the decided previous frame, ``after`` the next frame's raw detections;
    their scores weight the support. Only cells of ``before`` that no detection covers
    (amodal IoU < 0.5) can be carried. No other duplicate test: sister cells just after a
    division may overlap by amodal IoU 0.8 and more, and the detector's own suppression
    has already run.
    """
    pool = replace(frame, visible=None, inferred=np.zeros(len(frame), bool))
    if before is not None and len(before):
        # cells of the frame before that no detection covers are the candidates to carry
        covered = instance_overlaps(before, frame)[0].max(axis=1) >= 0.5 if len(frame) else np.zeros(len(before), bool)
        pool = _append_carried(pool, before.select(~covered))
    own = np.where(pool.inferred, 0.0, pool.scores)
    support = own + 0.5 * _support(pool, before) + 0.5 * _support(pool, after)
    kept = np.sort(np.argsort(-support, kind="stable")[:count])
    return pool.select(kept)


def _append_carried(frame: FrameInstances, carried: FrameInstances) -> FrameInstances:
    """``frame`` with ``carried``'s cells added as inferred ones (their track ids cleared:
    the tracker links them to the cells they came from)."""
    if not len(carried):
        return frame
    join = lambda a, b: np.concatenate([a, b])  # noqa: E731
    return replace(
        frame, masks=join(frame.masks, carried.masks), boxes=join(frame.boxes, carried.boxes),
        scores=join(frame.scores, carried.scores), labels=join(frame.labels, carried.labels),
        track_ids=join(frame.track_ids, np.full(len(carried), -1, np.int64)),
        parent_ids=join(frame.parent_ids, np.full(len(carried), -1, np.int64)),
        inferred=join(frame.inferred, np.ones(len(carried), bool)),
    )


class TemporalDecoder:
    """Streaming decoder: :meth:`push` frames in time order, then :meth:`flush`.

    Each returns the frames decided so far (in order), with ``count`` cells each.

    Args:
        model: the count sequence's costs.
        lag: frames seen after a frame before it is decided (more = surer, later).
        tracker: a :class:`~napari_amodal.track.Tracker` run on the decided frames
            (None: no track ids); one continued from an earlier frame
            (:meth:`~napari_amodal.track.Tracker.continue_from`) also starts the count there.
        threshold: the score that counts as even odds of a cell (a lone frame keeps the
            detections scored above it).
    """

    def __init__(self, model: CountModel = CountModel(), lag: int = 4, tracker=None, threshold: float = 0.5):
        if lag < 1:
            raise ValueError(f"lag must be at least 1 frame, got {lag}")
        self.model, self.lag, self.tracker, self.threshold = model, int(lag), tracker, float(threshold)
        self.window: list[FrameInstances] = []
        self.costs: list[np.ndarray] = []
        # a tracker continued from an earlier frame (a re-segmented range) starts the count there
        self.decided: FrameInstances | None = getattr(tracker, "prev", None)
        self.last_count: int | None = None if self.decided is None else min(len(self.decided), model.max_cells)

    def push(self, frame: FrameInstances) -> list[FrameInstances]:
        """Add the next frame; returns the frames this decides (0 or 1)."""
        blank = frame.meta.get("state") == "blank"
        self.window.append(frame)
        self.costs.append(np.zeros(self.model.max_cells + 1) if blank else count_costs(frame.scores, self.model, self.threshold))
        return [self._decide()] if len(self.window) > self.lag else []

    def flush(self) -> list[FrameInstances]:
        """Decide every frame still waiting (the end of the stack)."""
        out = []
        while self.window:
            out.append(self._decide())
        return out

    def _decide(self) -> FrameInstances:
        counts = decode_counts(np.stack(self.costs), self.model, start=self.last_count)
        frame = self.window.pop(0)
        self.costs.pop(0)
        count = int(counts[0])
        self.last_count = count
        if frame.meta.get("state") == "blank":
            out = frame.select(np.zeros(len(frame), bool))
            out.inferred = np.zeros(0, bool)
        else:
            after = self.window[0] if self.window else None
            out = select_cells(frame, count, self.decided, after)
            if out.meta.get("state") == "no_cells" and len(out):
                out.meta["state"] = "cells"
            elif not len(out) and out.meta.get("state") == "cells":
                out.meta["state"] = "no_cells"
        if self.tracker is not None:
            out = self.tracker.update(out)
        # the decided frame is the next one's "before"; a blank frame breaks no chain
        if frame.meta.get("state") != "blank":
            self.decided = out
        return out


def decode_time_lapse(frames: Iterable[FrameInstances], model: CountModel = CountModel(), lag: int = 4,
                      tracker=None, threshold: float = 0.5) -> Iterator[FrameInstances]:
    """Decode frames of one stack (in time order) with :class:`TemporalDecoder`; yields each decided frame."""
    decoder = TemporalDecoder(model, lag, tracker, threshold)
    for f in frames:
        yield from decoder.push(f)
    yield from decoder.flush()
