"""Throughput and peak memory of segmentation on 500 x 500 embryo frames.

    python benchmarks/throughput.py heads   [--frames 6]
        lean config with the vq_refine head vs the same config with torchvision's
        fcn head vs the paper config, in one run (untrained weights, every model
        made to keep its full detection budget so the heads do equal work).
        Targets: vq_refine costs <= 15 % over fcn; lean >= 10x the paper's frames/s.

    python benchmarks/throughput.py stack   [--model bundled] [--frames 500] [--device cpu|cuda]
        whole-stack `segment` of a T-frame 500 x 500 stack with reading and writing
        included (TIFF in; COCO-amodal JSON, occlusion TIFF, overlay out).
        Targets (bundled model, 2-core CPU): >= 4 frames/s, peak memory <= 3 GB.

Both parts run on the CPU unless --device names another (cuda also reports
the GPU's peak allocated memory). Each measurement runs in a fresh subprocess so peak memory (ru_maxrss) is its own.
Figures are printed; compare ratios from one run, the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _frames(n: int):
    """n 500x500 uint8 frames cycling through the bundled sample time-lapse."""
    import numpy as np
    import tifffile

    from napari_amodal.data.sample import EMBRYO_STACK, sample_path

    sample = tifffile.imread(sample_path(EMBRYO_STACK))
    return np.stack([sample[i % len(sample)] for i in range(n)])


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def run_config(name: str, head: str, frames: int, device: str = "cpu") -> dict:
    """(in a subprocess) frames/s of one config on ``frames`` frames after one warm-up."""
    import torch

    from napari_amodal.model import build_model, get_config
    from napari_amodal.segment import Segmenter

    torch.manual_seed(0)
    config = get_config(name).replace(mask_head=head, box_score_thresh=0.0)
    seg = Segmenter(build_model(config), device=device, score_threshold=0.0)
    stack = _frames(frames + 1)
    seg(stack[:1])  # warm-up
    t = time.perf_counter()
    out = seg(stack[1:])
    dt = time.perf_counter() - t
    return {"config": name, "head": head, "frames": frames, "seconds": dt, "fps": frames / dt,
            "cells_per_frame": sum(len(f) for f in out) / frames, "peak_mb": _peak_mb(),
            "gpu_peak_mb": _gpu_peak_mb(device)}


def run_stack(model: str, frames: int, device: str = "cpu") -> dict:
    """(in a subprocess) segment a T-frame TIFF end to end with the CLI's writer."""
    import tifffile

    from napari_amodal.segment import Segmenter
    from napari_amodal.write import segment_files

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.tif"
        tifffile.imwrite(path, _frames(frames), compression="zlib", metadata={"axes": "TYX"})
        del_base = _peak_mb()
        seg = Segmenter.load(model, device=device)
        t = time.perf_counter()
        segment_files(seg, path, Path(tmp) / "out")
        dt = time.perf_counter() - t
    return {"model": model, "frames": frames, "seconds": dt, "fps": frames / dt, "peak_mb": _peak_mb(),
            "peak_mb_before_model": del_base, "gpu_peak_mb": _gpu_peak_mb(device)}


def _sub(kind: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "_child", kind, *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gpu(r: dict) -> str:
    return f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r.get("gpu_peak_mb") is not None else ""


def machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        kind = argv[1]
        res = (run_config(argv[2], argv[3], int(argv[4]), argv[5]) if kind == "config"
               else run_stack(argv[2], int(argv[3]), argv[4]))
        print(json.dumps(res))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["heads", "stack"])
    ap.add_argument("--frames", type=int)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--device", default="cpu", help="cpu (the targets' device), cuda, cuda:1, mps")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}, device {args.device}")
    if args.part == "heads":
        n = args.frames or 6
        d = args.device
        rows = [_sub("config", "lean", "vq_refine", n, d), _sub("config", "lean", "fcn", n, d),
                _sub("config", "paper", "vq_refine", max(2, n // 3), d)]
        for r in rows:
            print(f"{r['config']:6s} {r['head']:10s} {r['fps']:6.2f} frames/s  "
                  f"({r['cells_per_frame']:.0f} cells/frame, peak {r['peak_mb']:.0f} MB{_gpu(r)})")
        vq, fcn, paper = rows
        print(f"shape-code head cost over fcn: {100 * (fcn['fps'] / vq['fps'] - 1):+.1f} %  (target <= +15 %)")
        print(f"lean / paper frames/s: {vq['fps'] / paper['fps']:.1f}x  (target >= 10x)")
    else:
        n = args.frames or 500
        r = _sub("stack", args.model, n, args.device)
        print(f"{args.model}: {n} frames of 500x500 in {r['seconds']:.1f} s = {r['fps']:.2f} frames/s "
              f"(reading and writing included; target >= 4), peak memory {r['peak_mb']:.0f} MB (target <= 3072)"
              f"{_gpu(r)}")


if __name__ == "__main__":
    main()
