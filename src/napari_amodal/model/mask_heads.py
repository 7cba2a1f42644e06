"""Amodal mask branches: one slot in :class:`AmodalRoIHeads`, four implementations.

Every branch turns RoI features ``(R, C, S, S)`` into per-RoI amodal masks and owns
its loss. The interface (:class:`MaskBranch`):

- ``forward(roi_features) -> dict[str, Tensor]`` of raw outputs (logits, codes ...);
- ``loss(outputs, proposals, gt_masks, gt_labels, matched_idxs) -> dict[str, Tensor]``
  of *weighted* named losses, for positive proposals only;
- ``predict(outputs, labels) -> list[Tensor]``: per image ``(N_i, 1, m, m)`` mask
  probabilities in box coordinates (pasted into the image by the transform).

Implementations, each split into a head (features -> representation) and a
predictor (representation -> logits), torchvision style:

- ``fcn``  (:class:`FCNMaskBranch`): torchvision's ``MaskRCNNHeads`` +
  ``MaskRCNNPredictor``, ``maskrcnn_loss`` on the amodal masks (loss ``loss_mask``).
- ``vq`` (:class:`VQCodeBranch`): three convs + one fully connected layer ->
  ``(K, M/8, M/8)`` codeword scores, BCE against the one-hot codes that the frozen
  VQ-VAE encoder gives the ground-truth mask (``loss_code``); the frozen decoder
  turns the (softmax-weighted) code into the initial mask.
- ``vq_refine``: ``vq`` + :class:`MaskRefinement` (two stride-2 convs shrink the
  initial mask, concatenated with the RoI feature, four convs, two transposed
  convs -> class-wise logits; ``maskrcnn_loss`` as ``loss_refine``). Final mask =
  refined mask of the predicted class.
- ``vae`` (:class:`LatentCodeBranch`): same head, predictor regresses the frozen
  shape VAE's posterior mean of the ground-truth mask (MSE, ``loss_code``); the
  frozen VAE decoder gives the mask.

Ground-truth masks are cropped and resized to the proposal box with torchvision's
``project_masks_on_boxes`` (RoIAlign), and binarised at 0.5 before they are encoded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss, project_masks_on_boxes

# ---------------------------------------------------------------------------- losses


def project_targets(gt_masks: list[Tensor], proposals: list[Tensor], matched_idxs: list[Tensor], size: int) -> Tensor:
    """Ground-truth masks of the matched instances inside each proposal.

    Args:
        gt_masks: per image ``(G_i, H, W)`` amodal masks.
        proposals: per image ``(R_i, 4)`` boxes ``x1, y1, x2, y2`` in (resized) image pixels.
        matched_idxs: per image ``(R_i,)`` index of the matched ground-truth instance.
        size: output side m.

    Returns:
        ``(sum R_i, m, m) float`` soft masks in [0, 1] (RoIAlign of the binary masks).
    """
    out = [
        project_masks_on_boxes(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched_idxs) if p.shape[0] > 0
    ]
    if not out:
        device = proposals[0].device if proposals else None
        return torch.zeros((0, size, size), device=device)
    return torch.cat(out)


def code_loss(code_logits: Tensor, target_codes: Tensor) -> Tensor:
    """BCE between codeword scores ``(R, K, G, G)`` and one-hot codes of ``target_codes (R, G, G)``."""
    if target_codes.numel() == 0:
        return code_logits.sum() * 0
    one_hot = F.one_hot(target_codes, code_logits.shape[1]).permute(0, 3, 1, 2).to(code_logits.dtype)
    return F.binary_cross_entropy_with_logits(code_logits, one_hot)


def latent_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between predicted and target latents (same shape)."""
    if target.numel() == 0:
        return pred.sum() * 0
    return F.mse_loss(pred, target)


def class_mask_loss(
    mask_logits: Tensor,
    proposals: list[Tensor],
    gt_masks: list[Tensor],
    gt_labels: list[Tensor],
    matched_idxs: list[Tensor],
) -> Tensor:
    """torchvision's ``maskrcnn_loss``: BCE of the true class channel of ``(R, C, m, m)`` logits
    against the projected ground-truth masks; zero (with grad) when there are no RoIs."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0
    return maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched_idxs)


# ---------------------------------------------------------------------------- parts


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients and put ``module`` in eval mode."""
    module.requires_grad_(False)
    return module.eval()


class CodeHead(nn.Sequential):
    """Three 3x3 convs (the last with stride 2) on ``(R, C, S, S)`` RoI features, flattened
    to ``(R, channels * (S/2)^2)``."""

    def __init__(self, in_channels: int, roi_size: int, channels: int = 256) -> None:
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(1),
        )
        self.out_features = channels * ((roi_size + 1) // 2) ** 2


class CodePredictor(nn.Module):
    """One fully connected layer: ``(R, F)`` -> ``(R, out_channels, G, G)`` (code scores or latent)."""

    def __init__(self, in_features: int, out_channels: int, grid_size: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.grid_size = grid_size
        self.fc = nn.Linear(in_features, out_channels * grid_size * grid_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x).view(-1, self.out_channels, self.grid_size, self.grid_size)


class MaskRefinement(nn.Module):
    """Refines an initial mask with the RoI feature.

    ``initial (R, 1, M, M)`` -> two stride-2 convs -> ``(R, mask_channels, M/4, M/4)``,
    concatenated with ``roi_features (R, C, M/4, M/4)`` -> four 3x3 convs -> two
    stride-2 transposed convs -> class-wise logits ``(R, num_classes, M, M)``.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256, mask_channels: int = 32) -> None:
        super().__init__()
        self.shrink = nn.Sequential(
            nn.Conv2d(1, mask_channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mask_channels, mask_channels, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        c = in_channels + mask_channels
        for _ in range(4):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True)]
            c = channels
        layers += [
            nn.ConvTranspose2d(channels, channels, 2, stride=2),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels, num_classes, 2, stride=2),
        ]
        self.fuse = nn.Sequential(*layers)

    def forward(self, initial: Tensor, roi_features: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.shrink(initial), roi_features], dim=1))


# ---------------------------------------------------------------------------- branches


class MaskBranch(nn.Module):
    """Interface of the amodal mask slot (see the module docstring)."""

    #: side of the RoI features this branch expects (the builder sizes ``mask_roi_pool`` with it)
    roi_size: int

    def forward(self, roi_features: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def loss(
        self,
        outputs: dict[str, Tensor],
        proposals: list[Tensor],
        gt_masks: list[Tensor],
        gt_labels: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def predict(self, outputs: dict[str, Tensor], labels: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError


def _split(masks: Tensor, labels: list[Tensor]) -> list[Tensor]:
    return list(masks.split([len(lab) for lab in labels], dim=0))


class FCNMaskBranch(MaskBranch):
    """Mask R-CNN's FCN mask head on amodal masks (``(R, C, S, S)`` -> ``(R, classes, 2S, 2S)`` logits)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        roi_size: int = 14,
        channels: int = 256,
        head: nn.Module | None = None,
        predictor: nn.Module | None = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.head = head if head is not None else MaskRCNNHeads(in_channels, (channels,) * 4, 1)
        self.predictor = predictor if predictor is not None else MaskRCNNPredictor(channels, channels, num_classes)
        self.loss_weight = loss_weight

    def forward(self, roi_features: Tensor) -> dict[str, Tensor]:
        return {"mask_logits": self.predictor(self.head(roi_features))}

    def loss(self, outputs, proposals, gt_masks, gt_labels, matched_idxs):
        loss = class_mask_loss(outputs["mask_logits"], proposals, gt_masks, gt_labels, matched_idxs)
        return {"loss_mask": self.loss_weight * loss}

    def predict(self, outputs, labels):
        return list(maskrcnn_inference(outputs["mask_logits"], labels))


class _ShapeCodeBranch(MaskBranch):
    """Shared parts of the ``vq`` and ``vae`` branches: a frozen shape model that stays
    in eval mode (its ``train()`` is overridden) and is saved in the branch's state_dict
    under ``shape_model.``."""

    def __init__(self, shape_model: nn.Module) -> None:
        super().__init__()
        self.shape_model = freeze(shape_model)
        self.mask_size: int = shape_model.mask_size
        self.roi_size = self.mask_size // 4

    def train(self, mode: bool = True):
        super().train(mode)
        self.shape_model.eval()
        return self

    def mask_targets(self, proposals, gt_masks, matched_idxs) -> Tensor:
        """``(R, 1, M, M)`` binary ground-truth masks of the positive proposals."""
        return (project_targets(gt_masks, proposals, matched_idxs, self.mask_size) >= 0.5).float()[:, None]


class VQCodeBranch(_ShapeCodeBranch):
    """Shape-code head (``vq``), with optional refinement (``vq_refine``).

    Outputs: ``code_logits (R, K, G, G)``, ``initial_mask (R, 1, M, M)`` probabilities
    from the frozen decoder, and with refinement ``mask_logits (R, classes, M, M)``.

    Args:
        vqvae: trained :class:`ShapeVQVAE`; frozen here.
        soft_decode: decode the softmax-weighted mix of codewords (differentiable, so
            the refinement loss also trains the code head) instead of the argmax code.
    """

    def __init__(
        self,
        in_channels: int,
        vqvae: nn.Module,
        channels: int = 256,
        head: nn.Module | None = None,
        predictor: nn.Module | None = None,
        refinement: nn.Module | None = None,
        code_loss_weight: float = 1.0,
        refine_loss_weight: float = 1.0,
        soft_decode: bool = True,
    ) -> None:
        super().__init__(vqvae)
        self.head = head if head is not None else CodeHead(in_channels, self.roi_size, channels)
        self.predictor = (
            predictor
            if predictor is not None
            else CodePredictor(self.head.out_features, vqvae.num_codes, vqvae.grid_size)
        )
        self.refinement = refinement
        self.code_loss_weight = code_loss_weight
        self.refine_loss_weight = refine_loss_weight
        self.soft_decode = soft_decode

    def decode(self, code_logits: Tensor) -> Tensor:
        """Code scores ``(R, K, G, G)`` -> initial mask probabilities ``(R, 1, M, M)``."""
        if self.soft_decode:
            return self.shape_model.decode_soft_code(code_logits.softmax(dim=1))
        return self.shape_model.decode_code(code_logits.argmax(dim=1))

    def forward(self, roi_features: Tensor) -> dict[str, Tensor]:
        code_logits = self.predictor(self.head(roi_features))
        out = {"code_logits": code_logits, "initial_mask": self.decode(code_logits)}
        if self.refinement is not None:
            out["mask_logits"] = self.refinement(out["initial_mask"], roi_features)
        return out

    @torch.no_grad()
    def target_codes(self, proposals, gt_masks, matched_idxs) -> Tensor:
        """``(R, G, G)`` code indices of the frozen encoder on the projected ground-truth masks."""
        targets = self.mask_targets(proposals, gt_masks, matched_idxs)
        return self.shape_model.code_indices(targets)

    def loss(self, outputs, proposals, gt_masks, gt_labels, matched_idxs):
        codes = self.target_codes(proposals, gt_masks, matched_idxs)
        losses = {"loss_code": self.code_loss_weight * code_loss(outputs["code_logits"], codes)}
        if self.refinement is not None:
            refine = class_mask_loss(outputs["mask_logits"], proposals, gt_masks, gt_labels, matched_idxs)
            losses["loss_refine"] = self.refine_loss_weight * refine
        return losses

    def predict(self, outputs, labels):
        if self.refinement is not None:
            return list(maskrcnn_inference(outputs["mask_logits"], labels))
        return _split(outputs["initial_mask"], labels)


class LatentCodeBranch(_ShapeCodeBranch):
    """Continuous-code baseline (``vae``): regresses the frozen :class:`ShapeVAE`'s latent.

    Outputs: ``latent (R, D, G, G)`` and ``initial_mask (R, 1, M, M)`` probabilities.
    """

    def __init__(
        self,
        in_channels: int,
        vae: nn.Module,
        channels: int = 256,
        head: nn.Module | None = None,
        predictor: nn.Module | None = None,
        loss_weight: float = 1.0,
    ) -> None:
        super().__init__(vae)
        self.head = head if head is not None else CodeHead(in_channels, self.roi_size, channels)
        self.predictor = (
            predictor if predictor is not None else CodePredictor(self.head.out_features, vae.embed_dim, vae.grid_size)
        )
        self.loss_weight = loss_weight

    def forward(self, roi_features: Tensor) -> dict[str, Tensor]:
        latent = self.predictor(self.head(roi_features))
        return {"latent": latent, "initial_mask": self.shape_model.decode(latent)}

    def loss(self, outputs, proposals, gt_masks, gt_labels, matched_idxs):
        with torch.no_grad():
            target = self.shape_model.latent(self.mask_targets(proposals, gt_masks, matched_idxs))
        return {"loss_code": self.loss_weight * latent_loss(outputs["latent"], target)}

    def predict(self, outputs, labels):
        return _split(outputs["initial_mask"], labels)
