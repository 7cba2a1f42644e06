"""Evaluation: amodal mask AP through pycocotools, occlusion-map IoU."""

from .amodal_map import evaluate_frames, format_report, occlusion_iou

__all__ = ["evaluate_frames", "format_report", "occlusion_iou"]
