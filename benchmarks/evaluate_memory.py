"""Peak memory of ``napari-amodal evaluate`` on a large file against itself.

    python benchmarks/evaluate_memory.py [--frames 13500] [--cells 8] [--size 500]

Writes a synthetic COCO-amodal file (discs of random sizes: ``--frames`` frames
of ``--cells`` cells, ``--size`` px), then runs ``napari-amodal evaluate`` on it
against itself in a fresh process and prints the file size, the wall time and
the peak resident memory of that process (``ru_maxrss`` of the child). Target:
a 50 MB file in <= 1 GB.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_file(path: Path, frames: int, cells: int, size: int) -> None:
    from napari_amodal.data.coco import write_coco
    from napari_amodal.instances import FrameInstances

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]

    def gen():
        for t in range(frames):
            c = rng.uniform(0.2 * size, 0.8 * size, (cells, 2))
            r = rng.uniform(0.08 * size, 0.16 * size, cells)
            masks = (yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2 <= r[:, None, None] ** 2
            yield FrameInstances.from_masks(masks, scores=rng.uniform(0.5, 1, cells), file_name="big.tif", frame=t)

    write_coco(path, gen(), [{"id": 1, "name": "blastomere"}], predictions=True, info={"model": "x", "source": "x"})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=13500)  # ~50 MB of JSON
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--size", type=int, default=500)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        write_file(path, args.frames, args.cells, args.size)
        mb = path.stat().st_size / 1e6
        t0 = time.time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        out = subprocess.run([sys.executable, "-m", "napari_amodal.cli", "evaluate", str(path), str(path), "--json"],
                             capture_output=True, text=True, check=True)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"file {mb:.1f} MB ({args.frames} frames x {args.cells} cells, {args.size} px): evaluate in "
              f"{time.time() - t0:.0f} s, peak memory {peak_mb:.0f} MB (child max RSS; before {before / 1024:.0f} MB)")
        print(out.stdout.strip())


if __name__ == "__main__":
    main()
