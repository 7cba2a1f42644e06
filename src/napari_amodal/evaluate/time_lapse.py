"""Time-lapse figures against exact ground truth: counts, cleavage times, divisions (numpy).

Frames are :class:`~napari_amodal.instances.FrameInstances` of one or more stacks
(grouped by ``file_name``, ordered by ``frame``), predictions already tracked
(``track_ids`` / ``parent_ids`` set). Ground truth follows the synthetic convention: at a
division the mother's track ends and both daughters start new tracks whose
``parent_ids`` name her.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..instances import FrameInstances, mask_iou
from ..measure import cleavage_times


def _by_file(frames) -> dict[str, list[FrameInstances]]:
    groups: dict[str, list[FrameInstances]] = defaultdict(list)
    for f in frames:
        groups[f.file_name].append(f)
    return {k: sorted(v, key=lambda f: f.frame) for k, v in groups.items()}


def count_figures(gts, preds) -> dict:
    """Share of frames whose cell count is exact and within one; ``errors``: pred - truth per frame."""
    truth = {(g.file_name, g.frame): len(g) for g in gts}
    err = np.array([len(p) - truth[(p.file_name, p.frame)] for p in preds])
    return {"errors": err.tolist(), "frames": len(err), "count_exact": float(np.mean(err == 0)), "count_within_1": float(np.mean(np.abs(err) <= 1)),
            "over": float(np.mean(err > 0)), "under": float(np.mean(err < 0))}


def cleavage_figures(gts, preds, max_cells: int = 8, persist: int = 1) -> dict:
    """Cleavage times t2 ... t<max_cells> of the predictions (counts held ``persist`` frames)
    against the truth's (first frame with n cells), in frames; only divisions the truth shows
    after its first frame count. ``within_1``: share within one frame (a division never
    reached counts as wrong)."""
    g_by, p_by = _by_file(gts), _by_file(preds)
    errors, missed = [], 0
    for name, g in g_by.items():
        truth = cleavage_times([len(f) for f in g], [f.frame for f in g], max_cells, persist=1)
        p = p_by.get(name, [])
        pred = cleavage_times([len(f) for f in p], [f.frame for f in p], max_cells, persist=persist)
        for tr, pr in zip(truth, pred):
            if tr["frame"] in (None, 0):
                continue
            if pr["frame"] is None:
                missed += 1
            else:
                errors.append(abs(p[pr["frame"]].frame - g[tr["frame"]].frame))
    e = np.array(errors)
    n = len(e) + missed
    return {"divisions": n, "missed": missed, "within_1": float(np.sum(e <= 1) / max(n, 1)),
            "median_error": float(np.median(e)) if len(e) else None, "errors": e.tolist()}


def division_events(frames) -> list[dict]:
    """One row per division: ``file``, ``frame`` (the daughters' first), ``mother`` (track id)
    and ``mask`` (the mother's last mask before it, (H, W) bool; None if never seen)."""
    events = []
    for name, group in _by_file(frames).items():
        born: dict[int, int] = {}
        last_mask: dict[int, tuple[int, np.ndarray]] = {}
        mothers: dict[int, int] = {}
        for f in group:
            for tid, pid, m in zip(f.track_ids, f.parent_ids, f.masks):
                tid, pid = int(tid), int(pid)
                if pid >= 0 and tid not in born:
                    born[tid] = f.frame
                    mothers[tid] = pid
                last_mask[tid] = (f.frame, m)
        first: dict[int, int] = {}
        for tid, pid in mothers.items():
            first[pid] = min(first.get(pid, born[tid]), born[tid])
        for pid, frame in first.items():
            seen = last_mask.get(pid)
            events.append({"file": name, "frame": frame, "mother": pid, "mask": seen[1] if seen else None})
    return events


def division_figures(gts, preds, max_frames: int = 1, min_iou: float = 0.3) -> dict:
    """Precision and recall of predicted divisions: one matches a true one of the same file
    within ``max_frames`` frames whose mother's last mask it overlaps by IoU >= ``min_iou``
    (greedy, closest in time first)."""
    truth, pred = division_events(gts), division_events(preds)
    used = set()
    matched = 0
    for p in sorted(pred, key=lambda e: (e["file"], e["frame"])):
        best = None
        for k, t in enumerate(truth):
            if k in used or t["file"] != p["file"] or abs(t["frame"] - p["frame"]) > max_frames:
                continue
            if p["mask"] is None or t["mask"] is None:
                continue
            iou = float(mask_iou(p["mask"][None], t["mask"][None])[0, 0])
            if iou >= min_iou and (best is None or abs(t["frame"] - p["frame"]) < best[0]):
                best = (abs(t["frame"] - p["frame"]), k)
        if best is not None:
            used.add(best[1])
            matched += 1
    return {"true_divisions": len(truth), "predicted_divisions": len(pred), "matched": matched,
            "precision": matched / len(pred) if pred else float("nan"),
            "recall": matched / len(truth) if truth else float("nan")}
