"""Amodal mask AP through pycocotools, and the occlusion-map score.

Images of ground truth and predictions are matched by ``(file_name, frame)``,
never by their ids, so predictions written by any tool line up with the
ground truth as long as they name the same stack and frame.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from typing import Sequence

import numpy as np

from ..instances import FrameInstances, occlusion_from_masks, stack_by_frame

log = logging.getLogger(__name__)

__all__ = ["evaluate_frames", "occlusion_iou", "format_report"]


def occlusion_iou(gt: Sequence[FrameInstances], pred: Sequence[FrameInstances], threshold: float = 0.5) -> float:
    """Pooled IoU of the occlusion maps over matched frames.

    Ground truth's map is the exact one (pixels in two or more amodal masks)
    unless it stores one; a prediction's map is its ``occlusion`` field,
    thresholded at ``threshold``. Frames whose prediction carries no map are
    skipped; NaN when none carries one or both maps are empty everywhere.
    """
    pred_by = stack_by_frame(pred)
    inter = union = 0
    used = 0
    for g in gt:
        p = pred_by.get((g.file_name, g.frame))
        if p is None or p.occlusion is None:
            continue
        used += 1
        gm = g.occlusion >= threshold if g.occlusion is not None else occlusion_from_masks(g.masks)
        pm = p.occlusion >= threshold
        if pm.shape != gm.shape:
            raise ValueError(f"occlusion map of {g.file_name!r} frame {g.frame} has shape {pm.shape}, expected {gm.shape}")
        inter += int(np.logical_and(gm, pm).sum())
        union += int(np.logical_or(gm, pm).sum())
    if used == 0 or union == 0:
        return math.nan
    return inter / union


def evaluate_frames(
    gt: Sequence[FrameInstances],
    pred: Sequence[FrameInstances],
    categories: Sequence[dict] | None = None,
) -> dict:
    """COCO-style amodal mask AP of ``pred`` against ``gt``.

    Returns a dict with ``AP`` (mean over IoU 0.50:0.05:0.95), ``AP50``,
    ``AP75``, ``occlusion_iou`` (NaN when predictions hold no occlusion map),
    and counts ``n_images``, ``n_gt``, ``n_pred``, ``n_unmatched_pred_images``.
    AP is NaN when the ground truth holds no instance at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ..data.coco import coco_dict

    gt = list(gt)
    if categories is None:
        ids = sorted({int(v) for f in gt for v in f.labels} | {int(v) for f in pred for v in f.labels}) or [1]
        categories = [{"id": i, "name": str(i)} for i in ids]
    gt_dict = coco_dict(gt, categories, predictions=False)
    image_id = {(im["file_name"], im["frame"]): im["id"] for im in gt_dict["images"]}
    results, unmatched = [], 0
    for p in pred:
        key = (p.file_name, int(p.frame))
        if key not in image_id:
            unmatched += 1
            continue
        if p.shape != gt[image_id[key] - 1].shape:
            raise ValueError(f"prediction for {key} has shape {p.shape}, ground truth {gt[image_id[key] - 1].shape}")
        for rle, box, score, label, area in zip(p.to_rles(), p.boxes, p.scores, p.labels, p.areas):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id[key],
                    "category_id": int(label),
                    "segmentation": rle,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": int(area),
                    "score": float(score),
                }
            )
    if unmatched:
        log.warning("%d predicted frames have no ground truth with the same (file_name, frame)", unmatched)
    n_gt = len(gt_dict["annotations"])
    report = {
        "AP": math.nan,
        "AP50": math.nan,
        "AP75": math.nan,
        "occlusion_iou": occlusion_iou(gt, pred),
        "n_images": len(gt),
        "n_gt": n_gt,
        "n_pred": len(results),
        "n_unmatched_pred_images": unmatched,
    }
    if n_gt == 0:
        return report
    if not results:
        report.update(AP=0.0, AP50=0.0, AP75=0.0)
        return report
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        for r in results:  # COCO.loadRes wants bytes-compatible RLE; str works for decode
            r["segmentation"] = dict(r["segmentation"])
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = ev.stats
    report.update(AP=_clean(stats[0]), AP50=_clean(stats[1]), AP75=_clean(stats[2]))
    return report


def _clean(v: float) -> float:
    # pycocotools writes -1 when a quantity is undefined (no ground truth)
    return math.nan if v < 0 else float(v)


def format_report(report: dict) -> str:
    """Human-readable lines for the evaluate command."""

    def f(v):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = [
        f"amodal mask AP (IoU 0.50:0.95): {f(report['AP'])}",
        f"AP50: {f(report['AP50'])}",
        f"AP75: {f(report['AP75'])}",
        f"occlusion map IoU: {f(report['occlusion_iou'])}",
        f"images: {report['n_images']}  ground-truth cells: {report['n_gt']}  predicted cells: {report['n_pred']}",
    ]
    if report.get("n_unmatched_pred_images"):
        lines.append(f"warning: {report['n_unmatched_pred_images']} predicted frames matched no ground-truth frame")
    return "\n".join(lines)
