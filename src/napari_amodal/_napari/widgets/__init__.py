"""napari dock widgets: "Amodal segmentation", "Proofread", "Fine-tune" and "Time-lapse" (Qt; thin over the core)."""

from .finetune import FinetuneWidget, finetune_job
from .proofread import ProofreadWidget
from .segmentation import SegmentationWidget, segment_job
from .timelapse import TimelapseWidget

__all__ = ["FinetuneWidget", "ProofreadWidget", "SegmentationWidget", "TimelapseWidget", "finetune_job", "segment_job"]
