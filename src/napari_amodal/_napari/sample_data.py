"""npe2 sample-data contributions: the bundled data with its ground truth as layers."""

from __future__ import annotations

from ..data.sample import EMBRYO_GT, EMBRYO_STACK, SHAPES_GT, SHAPES_STACK, sample_path
from .layers import cell_layer_data, occlusion_layer_data


def _sample(stack: str, gt: str, image_name: str, rgb: bool) -> list[tuple]:
    from ..data.coco import read_amodal
    from ..io_images import read_stack

    data, axes = read_stack(sample_path(stack))
    frames, categories = read_amodal(sample_path(gt))
    frames.sort(key=lambda f: f.frame)
    cells = cell_layer_data(frames, stack=True, name="ground truth cells", categories=categories)
    occ = occlusion_layer_data(frames, name="ground truth occlusion")
    occ[1]["visible"] = False
    return [(data, {"name": image_name, "rgb": rgb}, "image"), occ, cells]


def embryo_sample() -> list[tuple]:
    """Synthetic embryo time-lapse (T, Y, X) uint8 with ground-truth cells and occlusion."""
    return _sample(EMBRYO_STACK, EMBRYO_GT, "embryo (synthetic)", rgb=False)


def shapes_sample() -> list[tuple]:
    """Overlapping shapes (N, 224, 224, 3) with their complete masks."""
    return _sample(SHAPES_STACK, SHAPES_GT, "overlapping shapes", rgb=True)
