"""Accuracy of a model on a fresh held-out synthetic embryo set.

    python benchmarks/bundled_accuracy.py [--model bundled] [--sequences 10] [--frames 20] [--seed 9000]

Renders embryo time-lapses from seeds never used in training (the bundled
recipe uses 1000, 2000, 3000), 2 to 8 cells, segments every frame and prints:
amodal mask AP / AP50 / AP75 (pycocotools), AP by ground-truth cell count,
per-frame cell-count accuracy, and the occlusion-map IoU. ``--json`` writes
the figures to a file too.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--sequences", type=int, default=10)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--planes", type=int, default=1, help="render this many focal planes and segment the middle one")
    ap.add_argument("--score-threshold", type=float, default=0.5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)

    from napari_amodal.data.embryo import render_sequence
    from napari_amodal.evaluate import evaluate_frames
    from napari_amodal.measure import measure
    from napari_amodal.segment import Segmenter

    seg = Segmenter.load(args.model, device=args.device, score_threshold=0.05)
    gts, preds = [], []
    t0 = time.time()
    n_frames = 0
    for i in range(args.sequences):
        name = f"heldout_{i:03d}.tif"
        images, frames = render_sequence(np.random.SeedSequence([args.seed, i]), n_frames=args.frames, size=500,
                                         n_planes=args.planes, start_cells=2, end_cells=8, file_name=name)
        for f in frames:
            f.meta = {}
        plane = args.planes // 2 if args.planes > 1 else None
        preds += seg(images, axes="TZYX" if args.planes > 1 else "TYX", plane=plane, file_name=name)
        gts += frames
        n_frames += len(frames)
    seconds = time.time() - t0
    overall = evaluate_frames(gts, preds)
    # AP by ground-truth cell count: evaluate the frames of each count on their own
    by_count = {}
    for n in sorted({len(g) for g in gts}):
        keep = [k for k, g in enumerate(gts) if len(g) == n]
        r = evaluate_frames([gts[k] for k in keep], [preds[k] for k in keep])
        by_count[n] = {"frames": len(keep), "AP": r["AP"], "AP50": r["AP50"]}
    def count_accuracy(threshold):
        return float(np.mean([int((p.scores >= threshold).sum()) == len(g) for p, g in zip(preds, gts)]))

    count_acc = count_accuracy(args.score_threshold)
    # cleavage times t3..t8 as napari-amodal measure gives them (counts held 2 frames) against the
    # truth (first frame with n cells), in frames; only divisions seen in the truth (t2 is at frame 0)
    truth = {(r["file"], r["cells"]): r["frame"] for r in measure(gts, persist=1).cleavage}
    errors, missed = [], 0
    for r in measure(preds, score_threshold=args.score_threshold).cleavage:
        t = truth[(r["file"], r["cells"])]
        if t is None or t == 0:
            continue
        if r["frame"] is None:
            missed += 1
        else:
            errors.append(abs(r["frame"] - t))
    errors = np.array(errors)
    cleavage = {"divisions": len(errors) + missed, "missed": missed,
                "within_1_frame": float(np.sum(errors <= 1) / max(len(errors) + missed, 1)),
                "median_abs_error_frames": float(np.median(errors)) if len(errors) else None}
    by_threshold = {round(t, 2): count_accuracy(t) for t in np.arange(0.3, 0.96, 0.05)}
    result = {
        "model": args.model,
        "machine": f"{platform.machine()} {platform.processor() or ''} ({__import__('os').cpu_count()} cores), device {seg.device}",
        "frames": n_frames,
        "AP": overall["AP"], "AP50": overall["AP50"], "AP75": overall["AP75"],
        "occlusion_iou": overall["occlusion_iou"],
        "count_accuracy": count_acc,
        "count_threshold": args.score_threshold,
        "count_accuracy_by_threshold": by_threshold,
        "AP_by_cell_count": by_count,
        "cleavage_times": cleavage,
        "seconds": round(seconds, 1),
        "seed": args.seed,
    }
    print(f"held-out synthetic embryos: {args.sequences} sequences x {args.frames} frames (seed {args.seed}), model {args.model}")
    print(f"amodal mask AP {overall['AP']:.3f}  AP50 {overall['AP50']:.3f}  AP75 {overall['AP75']:.3f}")
    print(f"occlusion-map IoU {overall['occlusion_iou']:.3f}")
    print(f"cell-count accuracy per frame (score >= {args.score_threshold}): {count_acc:.3f}")
    print("count accuracy by score threshold: " + "  ".join(f"{t:.2f}:{a:.2f}" for t, a in by_threshold.items()))
    print(f"cleavage times t3..t8 (napari-amodal measure, counts held 2 frames): {cleavage['within_1_frame']:.2f} of "
          f"{cleavage['divisions']} within 1 frame of the truth, median error "
          f"{cleavage['median_abs_error_frames']} frames, {cleavage['missed']} never reached")
    for n, r in by_count.items():
        print(f"  {n} cells: {r['frames']:4d} frames  AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}")
    print(f"{n_frames} frames segmented in {seconds:.0f} s on {seg.device}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
