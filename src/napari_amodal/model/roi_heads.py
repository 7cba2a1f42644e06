"""RoI heads: torchvision's box branch + one amodal mask slot (:class:`MaskBranch`)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign, clip_boxes_to_image

from .mask_heads import MaskBranch


def positive_proposals(
    proposals: list[Tensor], labels: list[Tensor], matched_idxs: list[Tensor]
) -> tuple[list[Tensor], list[Tensor]]:
    """Per image, the foreground proposals and the index of their ground-truth instance."""
    pos = [torch.where(lab > 0)[0] for lab in labels]
    return [p[i] for p, i in zip(proposals, pos)], [m[i] for m, i in zip(matched_idxs, pos)]


class AmodalRoIHeads(RoIHeads):
    """Box branch from torchvision's :class:`RoIHeads` (sampling, matching, box head and
    predictor, ``fastrcnn_loss``, post-processing); amodal masks from ``mask_branch``.

    Training returns ``([], losses)`` with ``loss_classifier``, ``loss_box_reg`` and the
    mask branch's losses (computed on positive proposals). Eval returns per image
    ``boxes (N, 4)``, ``labels (N,)``, ``scores (N,)``, ``masks (N, 1, m, m)`` probabilities
    in box coordinates, and no losses.

    ``box_refine_steps`` (eval only): after post-processing, the detected boxes go through
    the box head again this many times and are replaced by its regression for their class
    (iterative box regression at test time, as in Gidaris & Komodakis 2015 and Cascade
    R-CNN). Scores, labels and the NMS result stay those of the first pass; masks are
    predicted in the refined boxes. 0 is torchvision's behaviour.
    """

    def __init__(
        self, *args, mask_roi_pool: MultiScaleRoIAlign, mask_branch: MaskBranch, box_refine_steps: int = 0, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        # torchvision's has_mask() stays False (no mask_head/mask_predictor): the slot is mask_branch.
        self.mask_roi_pool = mask_roi_pool
        self.mask_branch = mask_branch
        if box_refine_steps < 0:
            raise ValueError(f"box_refine_steps must be >= 0, got {box_refine_steps}")
        self.box_refine_steps = int(box_refine_steps)

    def refine_boxes(
        self,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        labels: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[Tensor]:
        """One pass of the box head over detections: per image ``(N, 4)`` boxes (x1, y1, x2, y2,
        pixels of the resized image) regressed for their ``labels (N,)``, clipped to the image;
        a box that would become empty keeps its old place."""
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return boxes
        _, box_regression = self.box_predictor(self.box_head(self.box_roi_pool(features, boxes, image_shapes)))
        decoded = self.box_coder.decode(box_regression, boxes)  # (sum N, classes, 4)
        picked = decoded[torch.arange(len(decoded), device=decoded.device), torch.cat(labels)]
        refined = []
        for old, new, shape in zip(boxes, picked.split(counts), image_shapes):
            new = clip_boxes_to_image(new, shape)
            # a box regressed out of the image (or to nothing) keeps its previous place
            degenerate = ((new[:, 2] - new[:, 0]) < 1e-2) | ((new[:, 3] - new[:, 1]) < 1e-2)
            refined.append(torch.where(degenerate[:, None], old, new))
        return refined

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None or not all("masks" in t for t in targets):
                raise ValueError("training needs targets with boxes, labels and masks")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)

        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            mask_proposals, pos_matched_idxs = positive_proposals(proposals, labels, matched_idxs)
            outputs = self.mask_branch(self.mask_roi_pool(features, mask_proposals, image_shapes))
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            losses.update(self.mask_branch.loss(outputs, mask_proposals, gt_masks, gt_labels, pos_matched_idxs))
            return [], losses

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        for _ in range(self.box_refine_steps):
            boxes = self.refine_boxes(features, boxes, labels, image_shapes)
        outputs = self.mask_branch(self.mask_roi_pool(features, boxes, image_shapes))
        masks = self.mask_branch.predict(outputs, labels)
        result = [
            {"boxes": b, "labels": lab, "scores": s, "masks": m} for b, lab, s, m in zip(boxes, labels, scores, masks)
        ]
        return result, {}
