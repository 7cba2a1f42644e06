"""Which box NMS and score threshold give the right cell counts, on both embryo families?

    python benchmarks/nms_sweep.py [--model bundled] [--split val] [--sequences 6] [--frames 15]

Segments the time-lapses of ``generalization.py`` (validation seeds by default: choose settings
there, never on held-out ones) once with box NMS at 0.95 (almost none), then re-applies box NMS at
several thresholds, optionally followed by a mask-IoU NMS, and prints per family the amodal mask
AP, the per-frame count accuracy at several score thresholds and the false-positive share at each.
The per-image cap on detections is lifted to 1,000 for the unsuppressed run (at the
shipped cap, near-duplicates of the first cells crowded the others out). ``--json`` writes
every row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

SCORES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def mask_nms(p, threshold: float):
    """Keep detections (highest score first) whose mask IoU with every kept one is <= threshold."""
    from napari_amodal.instances import mask_iou

    if not len(p):
        return p
    iou = mask_iou(p.masks, p.masks)
    keep: list[int] = []
    for i in np.argsort(-p.scores):
        if all(iou[i, j] <= threshold for j in keep):
            keep.append(int(i))
    return p.select(np.sort(np.array(keep, int)))


def box_nms(p, threshold: float):
    """Box NMS of one frame's detections at IoU ``threshold``."""
    import torch
    from torchvision.ops import nms

    if not len(p):
        return p
    keep = nms(torch.as_tensor(p.boxes, dtype=torch.float32), torch.as_tensor(p.scores, dtype=torch.float32),
               threshold)
    return p.select(np.sort(keep.numpy()))


def segment_family(seg, family: str, args):
    """Ground truth and nearly unsuppressed predictions of one family's time-lapses."""
    from generalization import VAL_SEED, heldout

    seed = VAL_SEED[family] if args.split == "val" else None
    gts, preds = [], []
    for images, gt in heldout(family, args.sequences, args.frames, seed=seed):
        preds += seg(images, axes="TYX", file_name=gt[0].file_name, track=False)
        gts += gt
    return gts, preds


def rows_for(family: str, gts, preds) -> list[dict]:
    """One row per (box NMS, mask NMS): AP and, per score threshold, count accuracy and FP share."""
    from napari_amodal.evaluate import evaluate_frames
    from napari_amodal.evaluate.frame_scores import frame_scores

    rows = []
    for box_t in (0.4, 0.5, 0.6, 0.7):
        for mask_t in (None, 0.5, 0.7):
            ps = [box_nms(p, box_t) for p in preds]
            if mask_t is not None:
                ps = [mask_nms(p, mask_t) for p in ps]
            r = evaluate_frames(gts, ps)
            at = {s: frame_scores(gts, ps, score_threshold=s) for s in SCORES}
            rows.append({"family": family, "box_nms": box_t, "mask_nms": mask_t, "AP": r["AP"], "AP50": r["AP50"],
                         "count_exact": {s: at[s]["count_exact"] for s in SCORES},
                         "false_positive_share": {s: at[s]["false_positive_share"] for s in SCORES}})
    return rows


def print_rows(rows: list[dict]) -> None:
    print(f"{'family':>8s} {'box':>5s} {'mask':>5s} {'AP':>6s} {'AP50':>6s}   count exact / FP share at score "
          + " ".join(f"{s:.1f}" for s in SCORES))
    for r in rows:
        cells = "  ".join(f"{r['count_exact'][s]:.2f}/{r['false_positive_share'][s]:.2f}" for s in SCORES)
        print(f"{r['family']:>8s} {r['box_nms']:5.2f} {r['mask_nms'] if r['mask_nms'] is not None else '-':>5} "
              f"{r['AP']:6.3f} {r['AP50']:6.3f}   {cells}", flush=True)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--split", choices=("heldout", "val"), default="val")
    ap.add_argument("--families", nargs="*", default=["hoffman", "volume"], choices=("hoffman", "volume"))
    ap.add_argument("--sequences", type=int, default=6)
    ap.add_argument("--frames", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from napari_amodal.segment import Segmenter

    seg = Segmenter.load(args.model, device=args.device, score_threshold=0.05)
    seg.model.roi_heads.nms_thresh = 0.95
    seg.model.roi_heads.detections_per_img = 1000
    rows = []
    for family in args.families:
        gts, preds = segment_family(seg, family, args)
        print(f"model {args.model}, {family}: {len(gts)} {args.split} frames", flush=True)
        rows += rows_for(family, gts, preds)
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
