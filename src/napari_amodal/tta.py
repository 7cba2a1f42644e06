"""Test-time augmentation: a frame segmented as it is and mirrored, the two answers merged.

A cell the model finds in both views is kept with the mean of its two scores; a cell only
one view finds keeps half its score, so a detection that depends on how the frame happens
to be oriented (a hallucinated cell, a duplicate) falls below the score threshold while a
real cell stays above it. Costs one more forward pass per frame.
"""

from __future__ import annotations

import numpy as np

from .instances import FrameInstances, instance_overlaps, masks_to_boxes

MATCH_IOU = 0.5  # amodal IoU at which a cell of the mirrored view is the same cell


def unflip(inst: FrameInstances) -> FrameInstances:
    """Instances found on a left-right mirrored frame, mirrored back onto the frame."""
    masks = np.ascontiguousarray(inst.masks[:, :, ::-1])
    occ = None if inst.occlusion is None else np.ascontiguousarray(inst.occlusion[:, ::-1])
    visible = None if inst.visible is None else np.ascontiguousarray(inst.visible[:, :, ::-1])
    return FrameInstances(masks=masks, boxes=masks_to_boxes(masks), scores=inst.scores, labels=inst.labels,
                          track_ids=inst.track_ids, parent_ids=inst.parent_ids, visible=visible,
                          occlusion=occ, file_name=inst.file_name, frame=inst.frame, meta=dict(inst.meta),
                          inferred=inst.inferred)


def merge_views(a: FrameInstances, b: FrameInstances, match_iou: float = MATCH_IOU) -> FrameInstances:
    """Merge two answers for one frame (``b`` already mapped back onto the frame).

    Cells are paired one to one by amodal IoU >= ``match_iou`` (highest IoU first). A pair
    keeps the mask of its higher-scored member and the mean score; an unpaired cell keeps its
    mask and half its score. Occlusion maps are averaged. Returns cells ordered by score
    (highest first), like the model's output.
    """
    from scipy.optimize import linear_sum_assignment

    if a.shape != b.shape:
        raise ValueError(f"views of different sizes: {a.shape} and {b.shape}")
    iou, _ = instance_overlaps(a, b) if len(a) and len(b) else (np.zeros((len(a), len(b))), None)
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    good = iou[rows, cols] >= match_iou
    rows, cols = rows[good], cols[good]
    pairs_a_wins = a.scores[rows] >= b.scores[cols]
    alone_a = np.setdiff1d(np.arange(len(a)), rows)
    alone_b = np.setdiff1d(np.arange(len(b)), cols)

    masks = np.concatenate([np.where(pairs_a_wins[:, None, None], a.masks[rows], b.masks[cols]),
                            a.masks[alone_a], b.masks[alone_b]]).reshape(-1, *a.shape)
    scores = np.concatenate([(a.scores[rows] + b.scores[cols]) / 2, a.scores[alone_a] / 2, b.scores[alone_b] / 2])
    labels = np.concatenate([np.where(pairs_a_wins, a.labels[rows], b.labels[cols]),
                             a.labels[alone_a], b.labels[alone_b]])
    order = np.argsort(-scores, kind="stable")
    occ = None
    if a.occlusion is not None and b.occlusion is not None:
        occ = ((a.occlusion + b.occlusion) / 2).astype(np.float32)
    return FrameInstances.from_masks(masks[order], shape=a.shape, scores=scores[order], labels=labels[order],
                                     occlusion=occ if occ is not None else a.occlusion,
                                     file_name=a.file_name, frame=a.frame, meta=dict(a.meta))
