"""Does a different non-maximum suppression fix the bundled model's cell counts?

    python benchmarks/nms_sweep.py [--model bundled] [--sequences 10] [--frames 20] [--seed 9000]

Segments the held-out set of ``bundled_accuracy.py`` once with box NMS at 0.95
(almost none), then re-applies box NMS at several thresholds, optionally
followed by a mask-IoU NMS, and prints amodal mask AP and per-frame cell-count
accuracy for each. Note: detections are capped per image (config
``box_detections_per_img``), so the re-applied NMS sees the top detections of
the nearly unsuppressed run, not exactly what a run at that threshold keeps.
"""

from __future__ import annotations

import argparse

import numpy as np


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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--sequences", type=int, default=10)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)

    import torch
    from torchvision.ops import nms

    from napari_amodal.data.embryo import render_sequence
    from napari_amodal.evaluate import evaluate_frames
    from napari_amodal.segment import Segmenter

    seg = Segmenter.load(args.model, device=args.device, score_threshold=0.05)
    seg.model.roi_heads.nms_thresh = 0.95
    gts, preds = [], []
    for i in range(args.sequences):
        name = f"heldout_{i:03d}.tif"
        images, frames = render_sequence(np.random.SeedSequence([args.seed, i]), n_frames=args.frames, size=500,
                                         start_cells=2, end_cells=8, file_name=name)
        for f in frames:
            f.meta = {}
        preds += seg(images, axes="TYX", file_name=name, track=False)
        gts += frames

    def box_nms(p, t):
        if not len(p):
            return p
        keep = nms(torch.as_tensor(p.boxes, dtype=torch.float32), torch.as_tensor(p.scores, dtype=torch.float32), t)
        return p.select(np.sort(keep.numpy()))

    print(f"model {args.model}, {len(gts)} held-out frames (seed {args.seed})")
    print(f"{'box NMS':>8s} {'mask NMS':>9s} {'AP':>6s} {'AP50':>6s}   count accuracy at score 0.3/0.5/0.7/0.8"
          "   over/under-count at 0.5")
    for box_t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        for mask_t in (None, 0.5, 0.6):
            ps = [box_nms(p, box_t) for p in preds]
            if mask_t is not None:
                ps = [mask_nms(p, mask_t) for p in ps]
            r = evaluate_frames(gts, ps)
            counts = [[int((p.scores >= s).sum()) for p in ps] for s in (0.3, 0.5, 0.7, 0.8)]
            acc = [np.mean([c == len(g) for c, g in zip(cs, gts)]) for cs in counts]
            over = np.mean([c > len(g) for c, g in zip(counts[1], gts)])
            under = np.mean([c < len(g) for c, g in zip(counts[1], gts)])
            print(f"{box_t:8.2f} {mask_t if mask_t is not None else '-':>9} {r['AP']:6.3f} {r['AP50']:6.3f}   "
                  + " / ".join(f"{a:.2f}" for a in acc) + f"   {over:.2f} / {under:.2f}", flush=True)


if __name__ == "__main__":
    main()
