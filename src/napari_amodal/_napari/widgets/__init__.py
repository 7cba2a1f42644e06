"""napari dock widgets: "Amodal segmentation" and "Proofread" (Qt; thin over the core)."""

from .proofread import ProofreadWidget
from .segmentation import SegmentationWidget, segment_job

__all__ = ["ProofreadWidget", "SegmentationWidget", "segment_job"]
