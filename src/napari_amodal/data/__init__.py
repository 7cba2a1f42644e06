"""Data: synthetic shapes and embryos with exact ground truth, COCO-amodal I/O."""
