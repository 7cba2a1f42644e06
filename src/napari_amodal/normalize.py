"""Frames of any dtype -> the model's input: the one place images are normalised.

Segmentation, training and fine-tuning all go through :func:`to_model_input`,
so a 16-bit camera frame is seen the same way whether it is segmented or
trained on.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_model_input", "STRETCH_PERCENTILES"]

# Non-8-bit frames are stretched between these percentiles of their finite
# values: a 12-bit camera in a 16-bit container, or a float image in any
# units, then spans [0, 1] as an 8-bit frame does.
STRETCH_PERCENTILES = (0.1, 99.9)


def to_model_input(frame: np.ndarray) -> np.ndarray:
    """(Y, X) or (Y, X, C) frame -> (3, Y, X) float32 in [0, 1].

    - uint8 (and bool) frames are scaled by 255: the model's training domain.
    - Every other integer or float dtype is stretched between its 0.1 and 99.9
      percentiles of finite values; NaN and -inf become 0, +inf becomes 1. A
      constant frame (or one with no finite value) becomes all zeros.
    - Grey frames are repeated to 3 channels; RGB(A) keeps R, G, B; one
      channel (Y, X, 1) is repeated.

    Raises ``ValueError`` for other shapes and non-numeric dtypes.
    """
    f = np.asarray(frame)
    if not (f.ndim == 2 or (f.ndim == 3 and f.shape[-1] in (1, 3, 4))):
        raise ValueError(f"cannot use a frame of shape {f.shape} as an image: expected (Y, X) or (Y, X, 1/3/4)")
    if f.dtype == np.uint8 or f.dtype == bool:
        x = f.astype(np.float32) / (255.0 if f.dtype == np.uint8 else 1.0)
    elif np.issubdtype(f.dtype, np.integer) or np.issubdtype(f.dtype, np.floating):
        x = _stretch(f)
    else:
        raise ValueError(f"cannot use an image of dtype {f.dtype}: expected integers or floats")
    if x.ndim == 2:
        return np.repeat(x[None], 3, 0)
    x = x[..., :3] if x.shape[-1] >= 3 else np.repeat(x, 3, -1)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _stretch(f: np.ndarray) -> np.ndarray:
    """Percentile stretch to float32 [0, 1]; computed in float64 so int32/int64
    and float64 values keep their precision, returned as float32."""
    x = f.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(f.shape, np.float32)
    lo, hi = np.percentile(x[finite], STRETCH_PERCENTILES)
    if not hi > lo:
        out = np.zeros(f.shape, np.float32)
        out[np.isposinf(x)] = 1.0
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        y = (x - lo) / (hi - lo)
    y = np.where(np.isnan(y), 0.0, y)  # +inf -> 1 and -inf -> 0 by the clip
    return np.clip(y, 0.0, 1.0).astype(np.float32)
