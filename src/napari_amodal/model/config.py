"""Model configuration: one dataclass, JSON round trip, built-in ``paper`` and ``lean`` configs.

``get_config("paper")``, ``get_config("lean")`` or ``get_config("path/to/config.json")``.
No torch import here, so configs can be read cheaply (CLI ``--help``, GUI).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
MASK_HEADS = ("fcn", "vae", "vq", "vq_refine")
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large")


@dataclass
class ModelConfig:
    """Everything needed to rebuild an :class:`AmodalMaskRCNN` (weights live elsewhere).

    Sizes are in pixels of the *resized* image unless stated otherwise.
    """

    name: str = "custom"
    num_classes: int = 2  # including background
    # backbone + FPN (never pretrained here: weights are loaded from our own checkpoints)
    backbone: str = "resnet50"
    trainable_layers: int = 5
    norm_layer: str = "batchnorm"  # "batchnorm" | "frozen_batchnorm"
    fpn_channels: int = 256
    # transform: greyscale frames repeated to 3 channels
    min_size: int = 800
    max_size: int = 1333
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # RPN
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)  # one per FPN level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    # box branch
    box_representation_size: int = 1024
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    box_refine_steps: int = 0  # inference: passes of the box head over its own detections (0: torchvision's)
    # inference: resize each stack so its embryo appears at the size the model sees best
    # (Segmenter input_size "auto"); for models trained at several input sizes
    auto_input_size: bool = False
    # amodal mask slot
    mask_head: str = "vq_refine"  # one of MASK_HEADS
    mask_size: int = 64  # M: VQ-VAE/VAE mask side; code grid M/8; RoI features M/4 (fcn: 14 -> 28)
    num_codes: int = 4  # K
    embed_dim: int = 16  # D
    head_channels: int = 256
    soft_decode: bool = True
    mask_loss_weight: float = 1.0  # fcn: loss_mask
    code_loss_weight: float = 1.0  # vq/vae: loss_code
    refine_loss_weight: float = 1.0  # vq_refine: loss_refine
    # occlusion branch
    occlusion: bool = True
    occlusion_channels: int = 256
    occlusion_loss_weight: float = 0.01
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.mask_head not in MASK_HEADS:
            raise ValueError(f"mask_head must be one of {MASK_HEADS}, got {self.mask_head!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.mask_size % 8:
            raise ValueError(f"mask_size must be a multiple of 8, got {self.mask_size}")
        if self.box_refine_steps < 0:
            raise ValueError(f"box_refine_steps must be >= 0, got {self.box_refine_steps}")
        if self.num_classes < 2:
            raise ValueError("num_classes counts the background: use >= 2")

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"config format_version {version} is newer than supported {FORMAT_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        data["format_version"] = FORMAT_VERSION
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_json(Path(path).read_text())


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def builtin_configs() -> list[str]:
    """Names of the configs shipped as JSON files in ``napari_amodal/configs``:
    ``paper`` (ResNet-50 FPN at 800 px, 1000 test proposals, VQ code + refinement +
    occlusion) and ``lean`` (ResNet-18 FPN at 224 px, sized for CPUs)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_config(name_or_path: str | Path) -> ModelConfig:
    """A shipped config by name (see :func:`builtin_configs`) or a JSON file saved by
    :meth:`ModelConfig.save`."""
    if isinstance(name_or_path, str) and (CONFIG_DIR / f"{name_or_path}.json").is_file():
        return ModelConfig.load(CONFIG_DIR / f"{name_or_path}.json")
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"unknown config {name_or_path!r}: not one of {builtin_configs()} nor a file")
    return ModelConfig.load(path)
