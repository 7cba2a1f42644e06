"""Amodal Mask R-CNN: Mask R-CNN with an occlusion branch and a swappable amodal mask slot.

``forward`` reads like torchvision's ``GeneralizedRCNN``: transform -> backbone ->
occlusion branch (fuses its features into every FPN level) -> RPN -> RoI heads
(torchvision's box branch + the amodal mask branch) -> postprocess.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from .occlusion import OcclusionBranch
from .roi_heads import AmodalRoIHeads
from .transform import AmodalRCNNTransform


class AmodalMaskRCNN(nn.Module):
    """Args:
        transform: resizes/normalises/batches images and targets (:class:`AmodalRCNNTransform`).
        backbone: image -> ``OrderedDict`` of FPN levels with ``out_channels`` channels.
        rpn: torchvision ``RegionProposalNetwork``.
        roi_heads: :class:`AmodalRoIHeads`.
        occlusion: :class:`OcclusionBranch`, or ``None`` to switch it off (ablation).

    ``feature_dtype`` (attribute, default ``None``: float32 throughout): e.g. ``torch.bfloat16``
    to compute the backbone and the occlusion branch -- most of the arithmetic -- under
    autocast in that type; their outputs are cast back to float32, so boxes, proposals and
    masks are decoded in full precision (bfloat16 has 8 bits of mantissa: a box corner at
    300 px would move by a pixel).

    Training: ``model(images, targets)`` with

    - ``images``: list of ``(3, H, W)`` float tensors in [0, 1] (greyscale repeated to RGB);
    - ``targets``: list of dicts with ``boxes (N, 4) float32`` (x1, y1, x2, y2 pixels),
      ``labels (N,) int64 >= 1``, ``masks (N, H, W) uint8`` amodal masks, and optionally
      ``occlusion (H, W) float32`` in {0, 1}. ``N = 0`` (empty frame) is allowed.

    returns a dict of weighted losses whose sum is the total loss: ``loss_objectness``,
    ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``, the mask branch's
    (``loss_mask`` | ``loss_code`` [+ ``loss_refine``]) and, with the occlusion branch,
    ``loss_occlusion``.

    Eval: ``model(images)`` returns per image a dict with ``boxes (N, 4)``, ``labels (N,)``,
    ``scores (N,)``, ``masks (N, 1, H, W)`` amodal probabilities at the input resolution
    and, with the occlusion branch, ``occlusion (H, W)`` probabilities.
    """

    def __init__(
        self,
        transform: AmodalRCNNTransform,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: AmodalRoIHeads,
        occlusion: OcclusionBranch | None = None,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.occlusion = occlusion
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.feature_dtype: torch.dtype | None = None

    def features(self, x: Tensor) -> tuple["OrderedDict[str, Tensor]", Tensor | None]:
        """Batched images ``(B, 3, H, W)`` -> (FPN levels with the occlusion branch fused in, the
        occlusion logits or None); float32, computed in ``feature_dtype``."""
        low = self.feature_dtype is not None
        with torch.autocast(x.device.type, dtype=self.feature_dtype) if low else nullcontext():
            features = self.backbone(x)
            if isinstance(features, Tensor):
                features = OrderedDict([("0", features)])
            occlusion_logits = None
            if self.occlusion is not None:
                features, occlusion_logits = self.occlusion(features)
        if low:
            features = OrderedDict((k, v.float()) for k, v in features.items())
            occlusion_logits = None if occlusion_logits is None else occlusion_logits.float()
        return features, occlusion_logits

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            _check_targets(targets, len(images))
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]

        images, targets = self.transform(images, targets)
        features, occlusion_logits = self.features(images.tensors)
        proposals, proposal_losses = self.rpn(images, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, images.image_sizes, targets)

        if self.training:
            losses = {**proposal_losses, **detector_losses}
            if occlusion_logits is not None:
                padded = tuple(images.tensors.shape[-2:])
                losses.update(self.occlusion.loss(occlusion_logits, padded, images.image_sizes, targets))
            return losses

        if occlusion_logits is not None:
            padded = tuple(images.tensors.shape[-2:])
            probs = self.occlusion.probabilities(occlusion_logits, padded, images.image_sizes)
            for det, occ in zip(detections, probs):
                det["occlusion"] = occ
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)


@torch.no_grad()
def masks_for_boxes(model: AmodalMaskRCNN, image: Tensor, boxes: Tensor, labels: Tensor | None = None) -> Tensor:
    """Amodal masks for given boxes (shape completion with perfect boxes).

    Args:
        image: ``(3, H, W)`` float in [0, 1].
        boxes: ``(N, 4)`` float ``x1, y1, x2, y2`` in image pixels.
        labels: ``(N,)`` class ids (default 1).
    Returns:
        ``(N, H, W)`` mask probabilities at the image's resolution.
    """
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    was_training = model.training
    model.eval()
    h, w = image.shape[-2:]
    images, _ = model.transform([image])
    rh, rw = images.image_sizes[0]
    scale = boxes.new_tensor([rw / w, rh / h, rw / w, rh / h])
    rboxes = boxes * scale
    features, _ = model.features(images.tensors)
    heads = model.roi_heads
    labels = labels if labels is not None else torch.ones(len(boxes), dtype=torch.int64, device=boxes.device)
    outputs = heads.mask_branch(heads.mask_roi_pool(features, [rboxes], images.image_sizes))
    masks = heads.mask_branch.predict(outputs, [labels])[0]
    model.train(was_training)
    return paste_masks_in_image(masks, boxes, (h, w))[:, 0]


def _check_targets(targets: list[dict[str, Tensor]] | None, num_images: int) -> None:
    if targets is None or len(targets) != num_images:
        raise ValueError("training needs one target dict per image")
    for i, t in enumerate(targets):
        boxes = t["boxes"]
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"target {i}: boxes must be (N, 4), got {tuple(boxes.shape)}")
        if (boxes[:, 2:] <= boxes[:, :2]).any():
            raise ValueError(f"target {i}: all boxes need positive width and height")
        if t["masks"].shape[0] != boxes.shape[0] or t["labels"].shape[0] != boxes.shape[0]:
            raise ValueError(f"target {i}: boxes, labels and masks disagree in N")
