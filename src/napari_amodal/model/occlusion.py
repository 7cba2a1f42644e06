"""Occlusion branch: per-pixel probability that a pixel is covered by two or more cells.

Four 3x3 convolutions run on every FPN level with shared weights (like the RPN
head): conv1-conv3 (ReLU) and conv4 -> 1 logit. The output of conv3 (the
second-to-last conv) is concatenated to that level's feature map and a 1x1 conv
maps the ``C + channels`` channels back to ``C``, so the torchvision RPN and RoI
heads keep working on fused features. The 1x1 fusion starts as ``[identity | 0]``,
i.e. the fused features initially equal the backbone's.

The occlusion *prediction* and its loss use the finest level (``"0"``, stride 4):
its logits are upsampled bilinearly to the padded batch size and compared with the
ground-truth map (resized like the image by the transform) with BCE on the valid
(non-padding) pixels of images that have a map. Weighted by ``loss_weight``
(paper: 0.01).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def occlusion_loss(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean BCE over valid pixels.

    Args:
        logits: ``(B, 1, H, W)`` occlusion logits.
        target: ``(B, 1, H, W)`` ground truth in {0, 1}.
        valid: ``(B, 1, H, W)`` bool, pixels that count (inside the image, map given).

    Returns:
        scalar; ``logits.sum() * 0`` when no pixel is valid.
    """
    n = valid.sum()
    if n == 0:
        return logits.sum() * 0
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return (bce * valid).sum() / n


class OcclusionBranch(nn.Module):
    """Args:
    in_channels: FPN channels C.
    channels: width of the four convs.
    loss_weight: weight of ``loss_occlusion``.
    level: the FPN level whose logits are the prediction.
    """

    def __init__(self, in_channels: int, channels: int = 256, loss_weight: float = 0.01, level: str = "0") -> None:
        super().__init__()
        self.level = level
        self.loss_weight = loss_weight
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.predictor = nn.Conv2d(channels, 1, 3, padding=1)
        self.fuse = nn.Conv2d(in_channels + channels, in_channels, 1)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[:, :in_channels, 0, 0] = torch.eye(in_channels)
            self.fuse.bias.zero_()

    def forward(self, features: "OrderedDict[str, Tensor]") -> tuple["OrderedDict[str, Tensor]", Tensor]:
        """Returns the fused features (same keys and shapes) and the ``(B, 1, h, w)``
        occlusion logits of level ``self.level``."""
        fused: OrderedDict[str, Tensor] = OrderedDict()
        logits = None
        for name, x in features.items():
            hidden = self.convs(x)
            fused[name] = self.fuse(torch.cat([x, hidden], dim=1))
            if name == self.level:
                logits = self.predictor(hidden)
        if logits is None:
            raise KeyError(f"occlusion level {self.level!r} not in features {list(features)}")
        return fused, logits

    def loss(
        self,
        logits: Tensor,
        padded_size: tuple[int, int],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """``loss_occlusion`` (weighted) for logits ``(B, 1, h, w)`` of a batch padded to ``padded_size``.

        ``targets[i]["occlusion"]`` is ``(H_i, W_i)`` at the resized image size
        ``image_sizes[i]``; images without that key do not count.
        """
        b = logits.shape[0]
        hp, wp = padded_size
        up = F.interpolate(logits, size=(hp, wp), mode="bilinear", align_corners=False)
        target = up.new_zeros((b, 1, hp, wp))
        valid = torch.zeros((b, 1, hp, wp), dtype=torch.bool, device=logits.device)
        for i, ((h, w), t) in enumerate(zip(image_sizes, targets)):
            if "occlusion" in t:
                target[i, 0, :h, :w] = t["occlusion"][:h, :w]
                valid[i, 0, :h, :w] = True
        return {"loss_occlusion": self.loss_weight * occlusion_loss(up, target, valid)}

    @staticmethod
    def probabilities(logits: Tensor, padded_size: tuple[int, int], image_sizes: list[tuple[int, int]]) -> list[Tensor]:
        """Per image ``(H_i, W_i)`` probabilities at the resized image size."""
        up = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False).sigmoid()
        return [up[i, 0, :h, :w] for i, (h, w) in enumerate(image_sizes)]
