"""Synthetic overlapping shapes: the seed paper's benchmark protocol.

Each image is 224 x 224 RGB with a random background colour and 1 to 9
triangles, rectangles and ellipses at random positions, sizes and
orientations, each in a random colour, painted in order so that later shapes
occlude earlier ones. The ground truth is every shape's complete (amodal) mask
and its class; the visible mask is what remains after the later shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..instances import FrameInstances

__all__ = ["SHAPE_CATEGORIES", "render_shapes_image", "write_shapes_dataset"]

SHAPE_CATEGORIES = [
    {"id": 1, "name": "triangle"},
    {"id": 2, "name": "rectangle"},
    {"id": 3, "name": "ellipse"},
]


def _shape_polygon(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """(K, 2) row/col vertices of one random shape of class ``kind``."""
    cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
    scale = rng.uniform(0.08, 0.25) * size  # half-extent in pixels
    angle = rng.uniform(0, np.pi)
    if kind == 1:  # triangle: three points on a jittered circle
        # angles spread round the circle so the triangle never degenerates
        t = np.array([0.0, rng.uniform(0.9, 2.4), rng.uniform(3.3, 5.3)]) + rng.uniform(0, 2 * np.pi)
        r = scale * rng.uniform(0.8, 1.0, 3)
        pts = np.stack([r * np.sin(t), r * np.cos(t)], 1)
    elif kind == 2:  # rectangle
        hh, hw = scale * rng.uniform(0.4, 1.0, 2)
        pts = np.array([[-hh, -hw], [-hh, hw], [hh, hw], [hh, -hw]])
    else:  # ellipse as a fine polygon
        a, b = scale * rng.uniform(0.4, 1.0, 2)
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([a * np.sin(t), b * np.cos(t)], 1)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + (cy, cx)


def render_shapes_image(
    rng: np.random.Generator, size: int = 224, max_shapes: int = 9, min_area: int = 30
) -> tuple[np.ndarray, FrameInstances]:
    """One image and its ground truth.

    Returns:
        image: (size, size, 3) uint8 RGB.
        instances: amodal masks (clipped to the image), labels 1 triangle /
            2 rectangle / 3 ellipse, visible masks, track ids = paint order.
    """
    from skimage.draw import polygon as draw_polygon

    background = rng.integers(0, 256, 3)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    n = int(rng.integers(1, max_shapes + 1))
    masks, labels = [], []
    attempts = 0
    while len(masks) < n and attempts < 20 * n:
        attempts += 1
        kind = int(rng.integers(1, 4))
        poly = _shape_polygon(kind, rng, size)
        rr, cc = draw_polygon(poly[:, 0], poly[:, 1], shape=(size, size))
        if len(rr) < min_area:
            continue
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - background).sum() < 60:  # keep shapes distinguishable from background
            colour = (background + 128) % 256
        m = np.zeros((size, size), bool)
        m[rr, cc] = True
        image[m] = colour
        masks.append(m)
        labels.append(kind)
    masks_arr = np.array(masks, bool).reshape(len(masks), size, size)
    # visible = not covered by any later shape
    visible = masks_arr.copy()
    covered = np.zeros((size, size), bool)
    for i in range(len(masks) - 1, -1, -1):
        visible[i] &= ~covered
        covered |= masks_arr[i]
    inst = FrameInstances.from_masks(
        masks_arr,
        shape=(size, size),
        labels=labels,
        track_ids=np.arange(1, len(masks) + 1),
        visible=visible,
    )
    return image, inst


def write_shapes_dataset(
    out_dir,
    n_train: int = 5000,
    n_test: int = 1000,
    seed: int = 0,
    size: int = 224,
    max_shapes: int = 9,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Write ``out_dir/{train,test}/NNNNN.png`` and ``out_dir/{train,test}.json``.

    Each split has its own seed stream (``SeedSequence([seed, split_index])``),
    so changing ``n_test`` never changes the training images. ``file_name`` in
    the JSON is relative to the JSON's folder; ``frame`` is 0.
    Returns ``{split: json_path}``.
    """
    from skimage.io import imsave

    from .coco import write_coco

    out_dir = Path(out_dir)
    total = n_train + n_test
    done = 0
    paths = {}
    for split_index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        if n == 0:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_index]))
        (out_dir / split).mkdir(parents=True, exist_ok=True)

        def frames(split=split, n=n, rng=rng):  # a generator: masks never pile up in memory
            nonlocal done
            for i in range(n):
                image, inst = render_shapes_image(rng, size=size, max_shapes=max_shapes)
                name = f"{split}/{i:05d}.png"
                imsave(out_dir / name, image, check_contrast=False)
                inst.file_name = name
                done += 1
                if progress is not None:
                    progress(done, total)
                yield inst

        paths[split] = out_dir / f"{split}.json"
        write_coco(paths[split], frames(), SHAPE_CATEGORIES, info={"generator": "shapes", "seed": seed})
    return paths
