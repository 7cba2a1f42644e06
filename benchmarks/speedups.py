"""Each speed-up of ``segment`` against the pipeline without it, in one run, outputs checked equal.

    python benchmarks/speedups.py [--frames 200] [--sequences 6] [--heldout-frames 15]

Speed: a 500 x 500 uint8 TIFF of ``--frames`` frames (the bundled sample, cycled) segmented end
to end as ``segment`` does it (``write.segment_files``: read, network, decoding over time,
JSON, occlusion TIFF, overlay PNG), once per variant, each in a fresh process (its own peak
memory), in this order:

    baseline       one frame per forward pass, NCHW, float32 (the pipeline before these changes)
    batch 4        four frames per forward pass
    channels last  the network on NHWC tensors
    binary masks   masks pasted as booleans, each resized in its box only (not a float32 frame
                   per cell, thresholded afterwards)
    default        all three (what ``segment`` does on a CPU)
    + bfloat16     and the backbone + occlusion branch in bfloat16 (``--precision bfloat16``;
                   boxes and masks decoded in float32)

The overlay (drawing each cell's outline in its box instead of over the whole frame, PNG at
zlib level 1) is timed on its own against the former way, pixels compared.

Equality: the held-out time-lapses of both synthetic families (benchmarks/generalization.py,
seeds 9000 / 9500) segmented by every variant: amodal mask AP per family, and for each cell
of the baseline the IoU of the variant's best-matching mask in the same frame (mean, and the
share >= 0.99). Targets (issue 19): AP within 0.005, masks IoU >= 0.99.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stacks import sample_stack

# frames per pass, precision, NHWC, masks pasted as booleans in their boxes
VARIANTS = {"baseline": (1, "float32", False, False), "batch 4": (4, "float32", False, False),
            "channels last": (1, "float32", True, False), "binary masks": (1, "float32", False, True),
            "default": (4, "float32", True, True), "+ bfloat16": (4, "bfloat16", True, True)}


def _segmenter(variant: str, **kwargs):
    """The bundled model's Segmenter set up as ``variant`` says."""
    from napari_amodal.segment import Segmenter

    batch, precision, nhwc, binary = VARIANTS[variant]
    seg = Segmenter.load("bundled", device="cpu", batch_size=batch, precision=precision, channels_last=nhwc, **kwargs)
    if not binary:  # float32 masks at full resolution, thresholded afterwards (torchvision's pasting)
        set_model = seg._set_model

        def _float_masks(size, running):
            set_model(size, running)
            seg.model.transform.binary_mask_threshold = None

        seg._set_model = _float_masks
    return seg


def speed(variant: str, frames: int) -> dict:
    """(in a subprocess) seconds of one end-to-end ``segment_files`` after a 4-frame warm-up."""
    import tifffile

    from napari_amodal.write import segment_files

    seg = _segmenter(variant)
    stack = sample_stack(frames)
    with tempfile.TemporaryDirectory() as tmp:
        path, warm = Path(tmp) / "stack.tif", Path(tmp) / "warm.tif"
        tifffile.imwrite(path, stack, compression="zlib", metadata={"axes": "TYX"})
        tifffile.imwrite(warm, stack[:4], metadata={"axes": "TYX"})
        segment_files(seg, warm, Path(tmp) / "warm")
        t = time.perf_counter()
        segment_files(seg, path, Path(tmp) / "out")
        dt = time.perf_counter() - t
    return {"seconds": dt, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def overlay_speed(frames: int = 12) -> dict:
    """The overlay montage of ``frames`` segmented frames drawn and written the former way
    (outline over the whole frame, imageio's PNG) and the current way; pixels compared."""
    import imageio.v3 as iio
    import numpy as np
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    from napari_amodal.overlay import draw_instances, montage, to_rgb8, track_colour, write_png
    from napari_amodal.segment import Segmenter

    stack = sample_stack(frames)
    insts = Segmenter.load("bundled", device="cpu")(stack)

    def former(frame, inst, thickness=2):
        rgb = to_rgb8(frame).astype(np.float32)
        if len(inst):
            occ = inst.occlusion_map() >= 0.5
            rgb[occ] = 0.7 * rgb[occ] + 0.3 * np.array([255, 0, 255])
        for i in range(len(inst)):
            tid = int(inst.track_ids[i]) if inst.track_ids[i] >= 0 else i + 1
            edge = ndi.binary_dilation(find_boundaries(inst.masks[i], mode="inner"), iterations=thickness - 1)
            rgb[edge & inst.masks[i]] = track_colour(tid)[:3] * 255
        return rgb.astype(np.uint8)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, draw, write in (("former", former, lambda p, im: iio.imwrite(p, im)),
                                  ("current", lambda f, i: draw_instances(f, i, thickness=2), write_png)):
            t = time.perf_counter()
            picture = montage([draw(f, i) for f, i in zip(stack, insts)], columns=4)
            write(Path(tmp) / f"{name}.png", picture)
            out[name] = time.perf_counter() - t
            out[f"{name}_pixels"] = iio.imread(Path(tmp) / f"{name}.png")
    out["equal"] = bool(np.array_equal(out.pop("former_pixels"), out.pop("current_pixels")))
    return out


def equality(sequences: int, frames: int) -> dict:
    """(in a subprocess) held-out AP per variant and family, mask IoU of each variant against the baseline."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from generalization import FAMILIES, heldout

    from napari_amodal.evaluate import evaluate_frames

    segs = {v: _segmenter(v, score_threshold=0.05) for v in VARIANTS}
    out: dict = {}
    for family in FAMILIES:
        data = list(heldout(family, sequences, frames))
        gts = [f for _, gt in data for f in gt]
        preds = {v: [f for images, gt in data for f in seg(images, axes="TYX", file_name=gt[0].file_name)]
                 for v, seg in segs.items()}
        for v, frames_v in preds.items():
            ious = []
            for base, other in zip(preds["baseline"], frames_v):
                for m in base.masks:
                    inter = (other.masks & m).sum((1, 2)) if len(other) else np.zeros(1)
                    union = (other.masks | m).sum((1, 2)) if len(other) else np.ones(1)
                    ious.append(float((inter / np.maximum(union, 1)).max()))
            ious = np.array(ious)
            out.setdefault(v, {})[family] = {"AP": evaluate_frames(gts, frames_v)["AP"],
                                             "iou_mean": float(ious.mean()), "iou_099": float((ious >= 0.99).mean()),
                                             "cells": int(sum(len(f) for f in frames_v))}
    return out


def _child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        kind = argv[1]
        res = speed(argv[2], int(argv[3])) if kind == "speed" else (
            equality(int(argv[2]), int(argv[3])) if kind == "equality" else overlay_speed())
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--sequences", type=int, default=6, help="held-out time-lapses per family")
    ap.add_argument("--heldout-frames", type=int, default=15)
    args = ap.parse_args(argv)
    import torch

    from napari_amodal.segment import cpu_has_bfloat16

    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads, native bfloat16: {cpu_has_bfloat16()}")
    runs = {v: _child("speed", v, args.frames) for v in VARIANTS}
    base = runs["baseline"]["seconds"]
    print(f"{'variant':14s} {'frames/s':>9s} {'x baseline':>10s} {'peak MB':>8s}  ({args.frames} frames of 500 x 500, end to end)")
    for v, r in runs.items():
        print(f"{v:14s} {args.frames / r['seconds']:9.2f} {base / r['seconds']:10.2f} {r['peak_mb']:8.0f}")
    o = _child("overlay")
    print(f"overlay of 12 frames: former {o['former']:.2f} s, current {o['current']:.2f} s "
          f"({o['former'] / o['current']:.1f}x), pixels equal: {o['equal']}")
    eq = _child("equality", args.sequences, args.heldout_frames)
    print(f"held out ({args.sequences} x {args.heldout_frames} frames per family): AP, and the baseline's cells "
          "matched by the variant (mean IoU, share >= 0.99)")
    for v, fams in eq.items():
        print(f"{v:14s} " + "  ".join(f"{fam} AP {r['AP']:.4f} ({r['AP'] - eq['baseline'][fam]['AP']:+.4f}) "
                                      f"IoU {r['iou_mean']:.4f} / {r['iou_099']:.3f}, {r['cells']} cells"
                                      for fam, r in fams.items()))


if __name__ == "__main__":
    main()
