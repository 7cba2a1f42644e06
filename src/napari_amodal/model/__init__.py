"""Amodal Mask R-CNN with vector-quantised shape codes (imports torch; the top-level
package does not import this module).

Parts: :class:`VectorQuantizer`, :class:`ShapeVQVAE` / :class:`ShapeVAE` (shape
models trained first on masks, then frozen), the amodal mask branches
(``fcn``, ``vae``, ``vq``, ``vq_refine``), the :class:`OcclusionBranch`, and
:class:`AmodalMaskRCNN` assembled by :func:`build_model` from a :class:`ModelConfig`.
"""

from .amodal_rcnn import AmodalMaskRCNN, masks_for_boxes
from .build import build_mask_branch, build_model, build_shape_model
from .config import MASK_HEADS, ModelConfig, get_config
from .mask_heads import FCNMaskBranch, LatentCodeBranch, MaskBranch, MaskRefinement, VQCodeBranch
from .occlusion import OcclusionBranch
from .quantizer import VectorQuantizer
from .vae import ShapeVAE
from .vqvae import ShapeVQVAE

__all__ = [
    "MASK_HEADS",
    "AmodalMaskRCNN",
    "FCNMaskBranch",
    "LatentCodeBranch",
    "MaskBranch",
    "MaskRefinement",
    "ModelConfig",
    "OcclusionBranch",
    "ShapeVAE",
    "ShapeVQVAE",
    "VQCodeBranch",
    "VectorQuantizer",
    "build_mask_branch",
    "build_model",
    "build_shape_model",
    "get_config",
    "masks_for_boxes",
]
