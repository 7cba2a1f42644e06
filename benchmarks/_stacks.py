"""The stack the speed benchmarks segment: 500 x 500 uint8 frames of the bundled sample time-lapse."""

from __future__ import annotations


def sample_stack(frames: int):
    """(frames, 500, 500) uint8: the bundled sample time-lapse (20 frames), cycled."""
    import numpy as np
    import tifffile

    from napari_amodal.data.sample import EMBRYO_STACK, sample_path

    sample = tifffile.imread(sample_path(EMBRYO_STACK))
    return np.stack([sample[i % len(sample)] for i in range(frames)])
