"""Stacks per second on a local Dask cluster against one process (issue 20).

    python benchmarks/scaleout.py [--stacks 4] [--frames 40] [--workers 1 2] [--threads 2]

Renders ``--stacks`` synthetic embryo time-lapses (500 x 500, hoffman family, seed 4242),
then segments them with the bundled model (a) in this process with ``--threads`` torch
threads, the way ``napari-amodal segment`` runs without ``--workers``, and (b) with
``segment --workers W --threads-per-worker (threads / W)`` for each W. Prints frames/s with
and without the cluster's start-up, the ratio to (a), and each worker's peak memory.
Outputs are checked equal to (a) (same cells in every frame).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def render(folder: Path, stacks: int, frames: int) -> list[Path]:
    import tifffile

    from napari_amodal.data.embryo import render_sequence

    paths = []
    for i in range(stacks):
        path = folder / f"embryo_{i:02d}.tif"
        if not path.exists():
            images, _ = render_sequence(np.random.SeedSequence([4242, i]), n_frames=frames, size=500,
                                        start_cells=1 + i % 4, end_cells=8)
            tifffile.imwrite(path, images)
        paths.append(path)
    return paths


def cells(out: Path, paths) -> list:
    return [[(a["image_id"], a["segmentation"]["counts"]) for a in json.loads((out / f"{p.stem}.json").read_text())
             ["annotations"]] for p in paths]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", type=int, default=4)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=2, help="cores to use in every configuration")
    ap.add_argument("--model", default="bundled")
    args = ap.parse_args(argv)

    import torch

    from napari_amodal.cluster import segment_many
    from napari_amodal.segment import Segmenter
    from napari_amodal.write import segment_files

    tmp = Path(tempfile.mkdtemp(prefix="scaleout-"))
    paths = render(tmp, args.stacks, args.frames)
    n = args.stacks * args.frames
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    seg = Segmenter.load(args.model, device="cpu")
    t1 = time.perf_counter()
    for p in paths:
        segment_files(seg, p, tmp / "one")
    t2 = time.perf_counter()
    base = n / (t2 - t0)
    print(f"one process, {args.threads} threads: {base:.2f} frames/s with start-up, {n / (t2 - t1):.2f} without "
          f"({n} frames)")
    reference = cells(tmp / "one", paths)
    for w in args.workers:
        threads = max(args.threads // w, 1)
        out = tmp / f"w{w}"
        t0 = time.perf_counter()
        first = None
        results = []
        for r in segment_many(paths, out, model=args.model, device="cpu", workers=w, threads_per_worker=threads):
            first = first or time.perf_counter()
            results.append(r)
        t2 = time.perf_counter()
        errors = [r.error for r in results if r.error]
        same = cells(out, paths) == reference if not errors else False
        peak = max(r.peak_mb for r in results)
        print(f"--workers {w} --threads-per-worker {threads}: {n / (t2 - t0):.2f} frames/s with the cluster's start-up "
              f"({n / (t2 - t0) / base:.2f}x one process), peak memory per worker {peak:.0f} MB, "
              f"outputs {'equal' if same else 'DIFFERENT'}{' errors: ' + '; '.join(errors) if errors else ''}")
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores), torch {torch.__version__}")


if __name__ == "__main__":
    main()
