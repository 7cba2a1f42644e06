"""Per-frame figures beside AP: counts, one-cell and empty frames, false positives, odd shapes.

AP rewards ranking; an embryologist reads the cells kept at the default score
threshold. These figures score exactly those: whether the count is right,
whether a one-cell zygote shows one cell and an empty dish none, how many kept
cells match no real one, and how many kept masks have shapes no cell has
(solidity = area / convex-hull area below 0.9: boxy or bitten shapes).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..instances import FrameInstances, mask_iou, stack_by_frame

__all__ = ["frame_scores", "solidity"]

LOW_SOLIDITY = 0.9


def solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area of a (H, W) bool mask (1 for convex shapes; NaN when empty)."""
    from skimage.morphology import convex_hull_image

    area = int(mask.sum())
    if area == 0:
        return float("nan")
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return area / int(convex_hull_image(crop).sum())


def _matched(gt: FrameInstances, pred: FrameInstances, iou: float) -> int:
    """Predictions matched one-to-one to ground truth at mask IoU >= ``iou`` (greedy by score)."""
    if len(gt) == 0 or len(pred) == 0:
        return 0
    ious = mask_iou(pred.masks, gt.masks)
    taken = np.zeros(len(gt), bool)
    hits = 0
    for i in np.argsort(-pred.scores, kind="stable"):
        cand = np.where(~taken & (ious[i] >= iou))[0]
        if len(cand):
            taken[cand[np.argmax(ious[i, cand])]] = True
            hits += 1
    return hits


def frame_scores(gts: Sequence[FrameInstances], preds: Sequence[FrameInstances], score_threshold: float = 0.5,
                 iou: float = 0.5) -> dict:
    """Figures over frames matched by ``(file_name, frame)``, of the predictions kept at ``score_threshold``.

    Returns ``count_exact`` and ``count_within_1`` (share of frames), ``one_cell_exact``
    (share of one-cell frames with exactly one cell; NaN without such frames),
    ``empty_none`` (share of frames without cells given none), ``false_positive_share``
    (kept cells matching no true cell at mask IoU >= ``iou``, over all kept cells),
    ``low_solidity_share`` (kept masks with solidity < 0.9) and the counts behind them.
    """
    by_key = stack_by_frame(preds)
    exact, within, one, one_n, empty, empty_n = [], [], 0, 0, 0, 0
    kept = fp = odd = 0
    for g in gts:
        p = by_key.get((g.file_name, int(g.frame)))
        p = FrameInstances.empty(g.shape) if p is None else p.select(p.scores >= score_threshold)
        n, m = len(g), len(p)
        exact.append(m == n)
        within.append(abs(m - n) <= 1)
        one_n += n == 1
        one += n == 1 and m == 1
        empty_n += n == 0
        empty += n == 0 and m == 0
        kept += m
        fp += m - _matched(g, p, iou)
        odd += sum(solidity(mask) < LOW_SOLIDITY for mask in p.masks)
    nan = float("nan")
    return {
        "frames": len(exact),
        "count_exact": float(np.mean(exact)) if exact else nan,
        "count_within_1": float(np.mean(within)) if within else nan,
        "one_cell_frames": one_n,
        "one_cell_exact": one / one_n if one_n else nan,
        "empty_frames": empty_n,
        "empty_none": empty / empty_n if empty_n else nan,
        "kept_cells": kept,
        "false_positive_share": fp / kept if kept else nan,
        "low_solidity_share": odd / kept if kept else nan,
    }
