"""Build an :class:`AmodalMaskRCNN` from a :class:`ModelConfig`, torchvision style.

Every part is an optional argument, built from the config when ``None``. No weights
are ever downloaded (``weights=None`` everywhere).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet, resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from .amodal_rcnn import AmodalMaskRCNN
from .config import ModelConfig
from .mask_heads import FCNMaskBranch, LatentCodeBranch, MaskBranch, MaskRefinement, VQCodeBranch
from .occlusion import OcclusionBranch
from .roi_heads import AmodalRoIHeads
from .transform import AmodalRCNNTransform
from .vae import ShapeVAE
from .vqvae import ShapeVQVAE


def feature_names(config: ModelConfig) -> list[str]:
    """FPN levels that RoI pooling reads (the RPN also sees the extra ``"pool"`` level)."""
    return ["0", "1"] if config.backbone.startswith("mobilenet") else ["0", "1", "2", "3"]


def build_backbone(config: ModelConfig) -> nn.Module:
    """Randomly initialised ResNet/MobileNetV3 + FPN with ``config.fpn_channels`` channels."""
    norm = FrozenBatchNorm2d if config.norm_layer == "frozen_batchnorm" else nn.BatchNorm2d
    if config.backbone.startswith("resnet"):
        body = resnet.__dict__[config.backbone](weights=None, norm_layer=norm)
        backbone = _resnet_fpn_extractor(body, min(config.trainable_layers, 5))
    else:
        body = mobilenet.__dict__[config.backbone](weights=None, norm_layer=norm)
        backbone = _mobilenet_extractor(body, True, min(config.trainable_layers, 6))
    if config.fpn_channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, config.fpn_channels, extra_blocks=LastLevelMaxPool())
        backbone.out_channels = config.fpn_channels
    return backbone


def build_rpn(config: ModelConfig, in_channels: int) -> RegionProposalNetwork:
    levels = len(feature_names(config)) + 1  # + "pool"
    if len(config.anchor_sizes) == levels:
        sizes = tuple((s,) for s in config.anchor_sizes)
    else:
        sizes = (tuple(config.anchor_sizes),) * levels
    anchors = AnchorGenerator(sizes, (tuple(config.aspect_ratios),) * levels)
    return RegionProposalNetwork(
        anchors,
        RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=config.rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": config.rpn_pre_nms_top_n_train, "testing": config.rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": config.rpn_post_nms_top_n_train, "testing": config.rpn_post_nms_top_n_test},
        nms_thresh=0.7,
    )


def build_shape_model(config: ModelConfig) -> nn.Module:
    """An untrained shape model of the right kind (train it first, then pass it to :func:`build_model`)."""
    if config.mask_head == "vae":
        return ShapeVAE(config.mask_size, config.embed_dim)
    return ShapeVQVAE(config.mask_size, config.num_codes, config.embed_dim)


def build_mask_branch(config: ModelConfig, in_channels: int, shape_model: nn.Module | None = None) -> MaskBranch:
    """The amodal mask branch named by ``config.mask_head``; ``shape_model`` is frozen inside it."""
    if config.mask_head == "fcn":
        return FCNMaskBranch(
            in_channels, config.num_classes, 14, config.head_channels, loss_weight=config.mask_loss_weight
        )
    if shape_model is None:
        shape_model = build_shape_model(config)
    if shape_model.mask_size != config.mask_size:
        raise ValueError(f"shape model mask_size {shape_model.mask_size} != config.mask_size {config.mask_size}")
    if config.mask_head == "vae":
        if not isinstance(shape_model, ShapeVAE):
            raise TypeError("mask_head 'vae' needs a ShapeVAE")
        return LatentCodeBranch(in_channels, shape_model, config.head_channels, loss_weight=config.code_loss_weight)
    if not isinstance(shape_model, ShapeVQVAE):
        raise TypeError(f"mask_head {config.mask_head!r} needs a ShapeVQVAE")
    refinement = None
    if config.mask_head == "vq_refine":
        refinement = MaskRefinement(in_channels, config.num_classes, config.head_channels)
    return VQCodeBranch(
        in_channels,
        shape_model,
        config.head_channels,
        refinement=refinement,
        code_loss_weight=config.code_loss_weight,
        refine_loss_weight=config.refine_loss_weight,
        soft_decode=config.soft_decode,
    )


def build_roi_heads(config: ModelConfig, in_channels: int, mask_branch: MaskBranch) -> AmodalRoIHeads:
    names = feature_names(config)
    box_roi_pool = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    rep = config.box_representation_size
    return AmodalRoIHeads(
        box_roi_pool,
        TwoMLPHead(in_channels * 7 * 7, rep),
        FastRCNNPredictor(rep, config.num_classes),
        0.5,  # fg_iou_thresh
        0.5,  # bg_iou_thresh
        config.box_batch_size_per_image,
        0.25,  # positive_fraction
        None,  # bbox_reg_weights
        config.box_score_thresh,
        config.box_nms_thresh,
        config.box_detections_per_img,
        mask_roi_pool=MultiScaleRoIAlign(names, output_size=mask_branch.roi_size, sampling_ratio=2),
        mask_branch=mask_branch,
        box_refine_steps=config.box_refine_steps,
    )


def build_model(
    config: ModelConfig,
    vqvae: nn.Module | None = None,
    *,
    transform: AmodalRCNNTransform | None = None,
    backbone: nn.Module | None = None,
    occlusion: OcclusionBranch | None = None,
    rpn: RegionProposalNetwork | None = None,
    mask_branch: MaskBranch | None = None,
    roi_heads: AmodalRoIHeads | None = None,
) -> AmodalMaskRCNN:
    """Build the amodal model described by ``config``.

    Args:
        config: the :class:`ModelConfig`.
        vqvae: the trained shape model: :class:`ShapeVQVAE` for ``vq``/``vq_refine``,
            :class:`ShapeVAE` for ``vae`` (ignored by ``fcn``). It is frozen
            (``requires_grad=False``, always in eval mode) and stored inside the model
            at ``roi_heads.mask_branch.shape_model``, so one state_dict holds everything.
            ``None`` builds an untrained one (for tests, or to load a checkpoint into).
        transform, backbone, occlusion, rpn, mask_branch, roi_heads: replace the part
            built from the config. ``occlusion`` is built only when ``config.occlusion``.
    """
    if transform is None:
        transform = AmodalRCNNTransform(
            config.min_size, config.max_size, list(config.image_mean), list(config.image_std)
        )
    if backbone is None:
        backbone = build_backbone(config)
    channels = backbone.out_channels
    if occlusion is None and config.occlusion:
        occlusion = OcclusionBranch(channels, config.occlusion_channels, config.occlusion_loss_weight)
    if rpn is None:
        rpn = build_rpn(config, channels)
    if roi_heads is None:
        if mask_branch is None:
            mask_branch = build_mask_branch(config, channels, vqvae)
        roi_heads = build_roi_heads(config, channels, mask_branch)
    return AmodalMaskRCNN(transform, backbone, rpn, roi_heads, occlusion)
