"""Render a few synthetic embryo sequences and write docs/images/embryo_montage.png.

Each row is one sequence (its own seed, so its own random style); each pair of
columns is one stage: the frame as rendered, then the same frame with the
ground-truth amodal outlines drawn in one colour per cell.

    python docs/scripts/make_embryo_montage.py [--out PATH] [--seeds 0 1 2 3 4 5] [--tile 240]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PALETTE = np.array(
    [
        (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
    ],
    np.uint8,
)


def _tile(image: np.ndarray, tile: int) -> np.ndarray:
    from skimage.transform import resize

    small = resize(image.astype(np.float32), (tile, tile), order=1, anti_aliasing=True, preserve_range=True)
    return np.repeat(np.clip(small, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _outlined(image: np.ndarray, frame, tile: int) -> np.ndarray:
    from skimage.segmentation import find_boundaries
    from skimage.transform import resize

    out = _tile(image, tile)
    for mask, tid in zip(frame.masks, frame.track_ids):
        small = resize(mask.astype(np.float32), (tile, tile), order=1, anti_aliasing=False) > 0.5
        out[find_boundaries(small, mode="inner")] = PALETTE[(int(tid) - 1) % len(PALETTE)]
    return out


def main(argv=None) -> Path:
    from imageio import v3 as iio

    from napari_amodal.data.embryo import render_sequence

    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=root / "docs" / "images" / "embryo_montage.png")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--stages", type=int, nargs="+", default=[2, 4, 6, 8], help="cell counts to show")
    p.add_argument("--tile", type=int, default=220, help="tile size in pixels")
    args = p.parse_args(argv)

    rows = []
    for seed in args.seeds:
        images, frames = render_sequence(seed, n_frames=30, size=500, start_cells=1, end_cells=8)
        counts = np.array([len(f) for f in frames])
        cells = []
        for n in args.stages:
            # the middle frame of the stage (or the closest stage shown)
            t_all = np.flatnonzero(counts == n)
            if len(t_all) == 0:
                t_all = np.flatnonzero(np.abs(counts - n) == np.abs(counts - n).min())
            t = int(t_all[len(t_all) // 2])
            cells += [_tile(images[t], args.tile), _outlined(images[t], frames[t], args.tile)]
        gap = np.full((args.tile, 4, 3), 255, np.uint8)
        rows.append(np.concatenate(sum(([c, gap] for c in cells), [])[:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    montage = np.concatenate(sum(([r, hgap] for r in rows), [])[:-1], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, montage, optimize=True)
    print(f"wrote {args.out} ({montage.shape[1]}x{montage.shape[0]}, {args.out.stat().st_size / 1e6:.2f} MB)")
    return args.out


if __name__ == "__main__":
    main()
