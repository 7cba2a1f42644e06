"""Synthetic masks and images for the model tests (torch only, seeded generators)."""

from __future__ import annotations

import torch
from torch import Tensor


def ellipse_masks(n: int, size: int, generator: torch.Generator) -> Tensor:
    """``(n, 1, size, size)`` float masks of random ellipses roughly filling the frame,
    like amodal masks cropped to their box (random centre jitter, axes, rotation)."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = torch.rand(n, 5, generator=generator)
    cy = size / 2 + (r[:, 0] - 0.5) * size * 0.2
    cx = size / 2 + (r[:, 1] - 0.5) * size * 0.2
    a = size * (0.25 + 0.25 * r[:, 2])
    b = size * (0.25 + 0.25 * r[:, 3])
    t = r[:, 4] * torch.pi
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    u = dx * torch.cos(t)[:, None, None] + dy * torch.sin(t)[:, None, None]
    v = -dx * torch.sin(t)[:, None, None] + dy * torch.cos(t)[:, None, None]
    inside = (u / a[:, None, None]) ** 2 + (v / b[:, None, None]) ** 2 <= 1
    return inside.float()[:, None]


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> Tensor:
    """``(h, w) bool`` axis-aligned ellipse."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def two_cell_sample(size: int = 128) -> tuple[Tensor, dict[str, Tensor]]:
    """One greyscale-as-RGB image with two overlapping bright ellipses and its amodal target."""
    m1 = ellipse(size, size, size * 0.45, size * 0.38, size * 0.22, size * 0.18)
    m2 = ellipse(size, size, size * 0.55, size * 0.62, size * 0.20, size * 0.22)
    masks = torch.stack([m1, m2])
    img = 0.2 + 0.3 * m1.float() + 0.3 * m2.float()
    img = img + 0.02 * torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    image = img.clamp(0, 1)[None].repeat(3, 1, 1)
    boxes = []
    for m in masks:
        ys, xs = torch.where(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.ones(2, dtype=torch.int64),
        "masks": masks.to(torch.uint8),
        "occlusion": (masks.sum(0) >= 2).float(),
    }
    return image, target


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Mean IoU of binary masks ``a, b (B, ...)``."""
    a, b = a.flatten(1).bool(), b.flatten(1).bool()
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float().clamp_min(1)
    return (inter / union).mean()
