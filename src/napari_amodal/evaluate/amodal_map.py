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
from typing import Callable, Iterable, Sequence

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
    gt: Iterable,
    pred: Iterable,
    categories: Sequence[dict] | None = None,
    occlusion_of: Callable[[FrameInstances], np.ndarray | None] | None = None,
) -> dict:
    """COCO-style amodal mask AP of ``pred`` against ``gt``, in one pass over the frames.

    ``gt`` and ``pred`` hold :class:`FrameInstances` or lazy
    :class:`~napari_amodal.data.coco.FrameRecord` s; records are decoded one
    frame at a time and only their RLE encodings are kept, so memory is bounded
    by one frame's dense masks, whatever the file's length. ``occlusion_of``
    gives a prediction's occlusion map when the frame does not carry one (e.g.
    read page by page from the occlusion TIFF).

    Returns a dict with ``AP`` (mean over IoU 0.50:0.95), ``AP50``, ``AP75``,
    ``occlusion_iou`` (pooled over frames whose prediction has a map; NaN when
    none has), and counts ``n_images``, ``n_gt``, ``n_pred``,
    ``n_unmatched_pred_images``. AP is NaN when the ground truth holds no instance.
    """
    from ..data.coco import coco_dict

    pred_by = {(p.file_name, int(p.frame)): p for p in pred}
    images, gt_anns, results, labels = [], [], [], set()
    inter = union = used = 0
    for img_id, g in enumerate(gt, 1):
        g = g.load() if hasattr(g, "load") else g
        key = (g.file_name, int(g.frame))
        one = coco_dict([g], [], predictions=False)
        images.append({**one["images"][0], "id": img_id})
        gt_anns += [{**a, "id": len(gt_anns) + k + 1, "image_id": img_id} for k, a in enumerate(one["annotations"])]
        labels |= {int(v) for v in g.labels}
        p = pred_by.pop(key, None)
        if p is None:
            continue
        p = p.load() if hasattr(p, "load") else p
        if p.shape != g.shape:
            raise ValueError(f"prediction for {key} has shape {p.shape}, ground truth {g.shape}")
        labels |= {int(v) for v in p.labels}
        results += _results(p, img_id)
        occ = p.occlusion if p.occlusion is not None else (occlusion_of(p) if occlusion_of else None)
        if occ is not None:
            gm = g.occlusion >= 0.5 if g.occlusion is not None else occlusion_from_masks(g.masks)
            pm = np.asarray(occ) >= 0.5
            if pm.shape != gm.shape:
                raise ValueError(f"occlusion map of {key[0]!r} frame {key[1]} has shape {pm.shape}, expected {gm.shape}")
            used += 1
            inter += int(np.logical_and(gm, pm).sum())
            union += int(np.logical_or(gm, pm).sum())
    if pred_by:
        log.warning("%d predicted frames have no ground truth with the same (file_name, frame)", len(pred_by))
    if categories is None:
        categories = [{"id": i, "name": str(i)} for i in sorted(labels or {1})]
    report = {
        "AP": math.nan, "AP50": math.nan, "AP75": math.nan,
        "occlusion_iou": inter / union if used and union else math.nan,
        "n_images": len(images), "n_gt": len(gt_anns), "n_pred": len(results),
        "n_unmatched_pred_images": len(pred_by),
    }
    if not gt_anns:
        return report
    if not results:
        report.update(AP=0.0, AP50=0.0, AP75=0.0)
        return report
    gt_dict = {"images": images, "annotations": gt_anns, "categories": [dict(c) for c in categories]}
    report.update(_coco_ap(gt_dict, results))
    return report


def _results(p: FrameInstances, img_id: int) -> list[dict]:
    """A prediction frame as pycocotools result rows (RLE masks)."""
    out = []
    for rle, box, score, label, area in zip(p.to_rles(), p.boxes, p.scores, p.labels, p.areas):
        x1, y1, x2, y2 = (float(v) for v in box)
        out.append({"image_id": img_id, "category_id": int(label), "segmentation": dict(rle),
                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(area), "score": float(score)})
    return out


def _coco_ap(gt_dict: dict, results: list[dict]) -> dict:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": _clean(ev.stats[0]), "AP50": _clean(ev.stats[1]), "AP75": _clean(ev.stats[2])}


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
