"""The one image normaliser: every dtype the readers hand over becomes float32 [0, 1]."""

import numpy as np
import pytest

from napari_amodal.normalize import to_model_input

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64,
          np.float16, np.float32, np.float64, bool]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_dtype_becomes_float32_unit_range(dtype):
    ramp = np.arange(0, 120, dtype=np.int64).reshape(10, 12) % (2 if dtype is bool else 120)
    x = to_model_input(ramp.astype(dtype))
    assert x.dtype == np.float32 and x.shape == (3, 10, 12)
    top = 119 / 255 if dtype is np.uint8 else 1.0  # 8-bit is scaled, the rest stretched
    assert x.min() == 0.0 and np.isclose(x.max(), top)
    assert (np.diff(x[0].ravel()[:100]) >= 0).all() or dtype is bool  # order kept


def test_uint8_is_scaled_not_stretched():
    x = to_model_input(np.full((4, 5), 128, np.uint8))
    assert np.allclose(x, 128 / 255)  # the training domain: no per-frame stretch for 8-bit


def test_twelve_bit_in_sixteen_is_stretched():
    frame = np.linspace(100, 4000, 2000).reshape(40, 50).astype(np.uint16)
    x = to_model_input(frame)
    assert x.max() == 1.0 and x.min() == 0.0 and abs(float(np.median(x)) - 0.5) < 0.01


def test_nan_and_inf_are_handled():
    frame = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    frame[0, 0], frame[0, 1], frame[0, 2] = np.nan, np.inf, -np.inf
    x = to_model_input(frame)
    assert np.isfinite(x).all()
    assert x[0, 0, 0] == 0.0 and x[0, 0, 1] == 1.0 and x[0, 0, 2] == 0.0
    assert (to_model_input(np.full((8, 8), np.nan)) == 0).all()
    assert (to_model_input(np.full((8, 8), 7.5)) == 0).all()  # constant frame: nothing to see


def test_int64_extremes_keep_their_order():
    frame = np.array([[np.iinfo(np.int64).min, 0], [1, np.iinfo(np.int64).max]], np.int64).repeat(30, 0)
    x = to_model_input(frame)
    assert x.dtype == np.float32 and x[0, 0, 0] == 0.0 and x[0, -1, 1] == 1.0


def test_channels_and_bad_shapes():
    assert to_model_input(np.zeros((4, 5, 3), np.uint8)).shape == (3, 4, 5)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255  # alpha is dropped
    assert to_model_input(rgba).max() == 0
    assert to_model_input(np.zeros((4, 5, 1), np.uint16)).shape == (3, 4, 5)
    with pytest.raises(ValueError, match="shape"):
        to_model_input(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        to_model_input(np.zeros((4, 5), np.complex64))
