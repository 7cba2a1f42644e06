"""napari dock widgets: "Amodal segmentation", "Proofread" and "Fine-tune" (Qt; thin over the core)."""

from .finetune import FinetuneWidget, finetune_job
from .proofread import ProofreadWidget
from .segmentation import SegmentationWidget, segment_job

__all__ = ["FinetuneWidget", "ProofreadWidget", "SegmentationWidget", "finetune_job", "segment_job"]
