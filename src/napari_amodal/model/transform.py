"""torchvision's ``GeneralizedRCNNTransform`` extended with the occlusion map.

Training targets may carry ``occlusion (H, W)`` in {0, 1}; it is resized with the
image (nearest neighbour). In eval, a result's ``occlusion`` (probabilities at the
resized image size) is resized back to the original image size (bilinear).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class AmodalRCNNTransform(GeneralizedRCNNTransform):
    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        occlusion = target.pop("occlusion", None) if target is not None else None
        image, target = super().resize(image, target)
        if occlusion is not None and target is not None:
            size = image.shape[-2:]
            target["occlusion"] = F.interpolate(occlusion[None, None].float(), size=size, mode="nearest")[0, 0]
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for pred, size in zip(result, original_image_sizes):
            if "occlusion" in pred:
                occ = pred["occlusion"][None, None]
                pred["occlusion"] = F.interpolate(occ, size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
        return result
