"""torchvision's ``GeneralizedRCNNTransform`` extended with the occlusion map and binary masks.

Training targets may carry ``occlusion (H, W)`` in {0, 1}; it is resized with the
image (nearest neighbour). In eval, a result's ``occlusion`` (probabilities at the
resized image size) is resized back to the original image size (bilinear).

With ``binary_mask_threshold`` set (inference that only wants masks, not probabilities:
:class:`~napari_amodal.segment.Segmenter`), masks are pasted as booleans, each resized only
inside its box: the same pixels as torchvision's pasting followed by ``>= threshold``, without
a float32 frame per cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.transform import GeneralizedRCNNTransform


class AmodalRCNNTransform(GeneralizedRCNNTransform):
    binary_mask_threshold: float | None = None

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        occlusion = target.pop("occlusion", None) if target is not None else None
        image, target = super().resize(image, target)
        if occlusion is not None and target is not None:
            size = image.shape[-2:]
            target["occlusion"] = F.interpolate(occlusion[None, None].float(), size=size, mode="nearest")[0, 0]
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        binary = self.binary_mask_threshold is not None and not self.training
        box_masks = [pred.pop("masks", None) for pred in result] if binary else []
        result = super().postprocess(result, image_shapes, original_image_sizes)
        if self.training:
            return result
        for pred, masks, size in zip(result, box_masks, original_image_sizes):
            if masks is not None:  # boxes are in the original image's pixels by now
                pred["masks"] = paste_binary_masks(masks, pred["boxes"], tuple(size), self.binary_mask_threshold)[:, None]
        for pred, size in zip(result, original_image_sizes):
            if "occlusion" in pred:
                occ = pred["occlusion"][None, None]
                pred["occlusion"] = F.interpolate(occ, size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
        return result


def paste_binary_masks(masks: Tensor, boxes: Tensor, shape: tuple[int, int], threshold: float) -> Tensor:
    """Box-aligned mask probabilities -> boolean masks of the whole image.

    Args:
        masks: ``(N, 1, M, M)`` probabilities, each covering its box.
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in image pixels.
        shape: the image's ``(H, W)``.
        threshold: probability at or above which a pixel is in the mask.
    Returns:
        ``(N, H, W)`` bool. Pixel for pixel what torchvision's ``paste_masks_in_image`` gives
        after ``>= threshold``: the mask is padded by one pixel of zeros and its box grown by the
        same ratio, the box's corners truncated to integers, the mask resized bilinearly to
        the box (corners inclusive) and cut where the box leaves the image.
    """
    n, (h, w) = len(masks), shape
    out = torch.zeros((n, h, w), dtype=torch.bool, device=masks.device)
    if n == 0:
        return out
    m = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))
    grow = (m + 2) / m
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * grow
    corners = torch.cat([centre - half, centre + half], 1).to(torch.int64).tolist()
    for i, (x1, y1, x2, y2) in enumerate(corners):
        bw, bh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        cx0, cy0, cx1, cy1 = max(x1, 0), max(y1, 0), min(x2 + 1, w), min(y2 + 1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue  # the box lies outside the image
        resized = F.interpolate(padded[i : i + 1], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
        out[i, cy0:cy1, cx0:cx1] = resized[cy0 - y1 : cy1 - y1, cx0 - x1 : cx1 - x1] >= threshold
    return out
