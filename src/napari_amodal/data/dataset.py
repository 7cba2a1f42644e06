"""Training data: COCO-amodal files -> (image, target) pairs for the model.

``file_name`` in the JSON points (relative to the JSON's folder) to a TIFF stack
(``frame`` indexes it) or a single image (PNG, TIFF). Stacks are read once and
kept in memory as uint8/uint16 (a 500 x 500 frame is 250 kB).

Sample contract (torchvision detection style):

- image: ``(3, H, W) float32`` in ``[0, 1]`` (:func:`~napari_amodal.normalize.to_model_input`).
- target: ``boxes (N, 4) float32`` xyxy pixels (x2, y2 exclusive), ``labels (N,)
  int64``, ``masks (N, H, W) uint8`` amodal, ``occlusion (H, W) float32`` in
  {0, 1} (pixels inside two or more amodal masks), ``image_id`` int.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..instances import FrameInstances, masks_to_boxes, occlusion_from_masks
from ..normalize import to_model_input
from .coco import FrameRecord

log = logging.getLogger(__name__)


@dataclass
class Augment:
    """Augmentations suited to microscopy, applied to image and masks together.

    Geometric: random flips and 90-degree rotations (exact on masks).
    Photometric: gain, offset and gamma, Gaussian blur, Gaussian noise, and a
    polarity flip (Hoffman relief lit from the other side looks inverted).
    Probabilities and ranges are per sample.
    """

    flip: bool = True
    rot90: bool = True
    gain: tuple[float, float] = (0.7, 1.3)
    offset: tuple[float, float] = (-0.1, 0.1)
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_sigma: tuple[float, float] = (0.0, 1.5)
    blur_p: float = 0.3
    noise_sigma: tuple[float, float] = (0.0, 0.06)
    noise_p: float = 0.5
    invert_p: float = 0.0

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator):
        """image (3, H, W) float32 [0, 1], masks (N, H, W) bool -> augmented copies."""
        from scipy import ndimage as ndi

        if self.flip and rng.random() < 0.5:
            image, masks = image[:, :, ::-1], masks[:, :, ::-1]
        if self.flip and rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, ::-1]
        if self.rot90:
            k = int(rng.integers(4))
            if k:
                image, masks = np.rot90(image, k, (1, 2)), np.rot90(masks, k, (1, 2))
        image = np.ascontiguousarray(image, np.float32)
        masks = np.ascontiguousarray(masks)
        if self.invert_p and rng.random() < self.invert_p:
            image = 1.0 - image
        image = np.clip(image * rng.uniform(*self.gain) + rng.uniform(*self.offset), 0, 1)
        image = image ** rng.uniform(*self.gamma)
        if rng.random() < self.blur_p:
            s = rng.uniform(*self.blur_sigma)
            if s > 0.1:
                image = ndi.gaussian_filter(image, (0, s, s))
        if rng.random() < self.noise_p:
            image = image + rng.normal(0, rng.uniform(*self.noise_sigma), image.shape).astype(np.float32)
        return np.clip(image, 0, 1).astype(np.float32), masks


class AmodalDataset:
    """A map-style dataset over the frames of one or more COCO-amodal files.

    Args:
        sources: JSON paths (COCO-amodal, KINS or COCOA).
        augment: an :class:`Augment` (training) or None (evaluation).
        plane: for (T, Z, Y, X) stacks, the focal plane to use; ``None`` picks a
            random plane per sample when augmenting, else the middle one.
        seed: seeds the augmentation stream (per-sample generators are derived
            from ``(seed, epoch, index)`` so workers and resumes agree).
        frames: restrict to these ``(file_name, frame)`` keys (e.g. reviewed frames).
    """

    def __init__(
        self,
        sources: Sequence,
        augment: Augment | None = None,
        plane: int | None = None,
        seed: int = 0,
        frames: set[tuple[str, int]] | None = None,
        min_area: int = 4,
    ):
        from .coco import read_amodal

        self.augment, self.plane, self.seed, self.epoch = augment, plane, seed, 0
        self.min_area = min_area
        self.items: list[tuple[Path, FrameRecord]] = []
        self.categories: list[dict] = []
        for src in sources:
            src = Path(src)
            records, cats = read_amodal(src, lazy=True)
            for c in cats:
                if c not in self.categories:
                    self.categories.append(c)
            for r in records:
                if frames is not None and (r.file_name, r.frame) not in frames:
                    continue
                self.items.append((src.parent, r))
        if not self.items:
            raise ValueError(f"no frames found in {', '.join(map(str, sources))}")
        self._stacks: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def instances(self, index: int) -> FrameInstances:
        """Ground truth of item ``index`` (decoded now; cells under ``min_area`` px dropped)."""
        f = self.items[index][1].load()
        keep = f.areas >= self.min_area
        return f if keep.all() else f.select(keep)

    def frame_image(self, index: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """The raw frame (Y, X[, C]) of item ``index``."""
        from ..io_images import read_stack

        base, f = self.items[index]
        path = (base / f.file_name).resolve()
        if path in self._stacks:
            data, axes = self._stacks[path]
        else:
            if not path.exists():
                raise FileNotFoundError(f"image {path} named by the annotations does not exist")
            data, axes = read_stack(path)
            if not axes.startswith("T"):
                data, axes = data[None], "T" + axes
            if len(data) > 1:  # stacks are kept; single images (e.g. 5,000 PNG frames) are read each time
                self._stacks[path] = (data, axes)
        if f.frame >= len(data):
            raise ValueError(f"{path} has {len(data)} frames; the annotations ask for frame {f.frame}")
        frame = data[f.frame]
        if "Z" in axes:
            if self.plane is not None:
                z = self.plane
            elif rng is not None and self.augment is not None:
                z = int(rng.integers(frame.shape[0]))
            else:
                z = frame.shape[0] // 2
            frame = frame[z]
        return frame

    def __getitem__(self, index: int):
        import torch

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))
        f = self.instances(index)
        image = to_model_input(self.frame_image(index, rng))
        masks = f.masks
        if self.augment is not None:
            image, masks = self.augment(image, masks, rng)
        keep = masks.any((1, 2))
        masks, labels = masks[keep], f.labels[keep]
        target = {
            "boxes": torch.from_numpy(masks_to_boxes(masks)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "masks": torch.from_numpy(masks.astype(np.uint8)),
            "occlusion": torch.from_numpy(occlusion_from_masks(masks).astype(np.float32)),
            "image_id": index,
        }
        return torch.from_numpy(image), target


def collate(batch):
    """Lists of images and targets, as torchvision detection models take them."""
    images, targets = zip(*batch)
    return list(images), list(targets)
