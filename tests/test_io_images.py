"""Reading images: TIFF stacks by content, single plain images through imageio."""

import numpy as np


def test_read_stack_reads_plain_images_and_rejects_junk(tmp_path):
    import imageio.v3 as iio
    import pytest

    from napari_amodal.io_images import read_stack

    grey = (np.arange(20 * 30) % 256).astype(np.uint8).reshape(20, 30)
    iio.imwrite(tmp_path / "g.png", grey)
    data, axes = read_stack(tmp_path / "g.png")
    assert axes == "YX"
    np.testing.assert_array_equal(data, grey)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png: not a readable image"):
        read_stack(tmp_path / "bad.png")
    (tmp_path / "bad.tif").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.tif: not a readable TIFF"):
        read_stack(tmp_path / "bad.tif")


def test_read_stack_knows_tiff_by_content_not_suffix(tmp_path):
    """MetaMorph .stk, Zeiss .lsm and friends are TIFF inside: tifffile reads them."""
    import tifffile

    from napari_amodal.io_images import read_stack

    stack = (np.arange(5 * 32 * 32) % 251).astype(np.uint8).reshape(5, 32, 32)
    tifffile.imwrite(tmp_path / "movie.stk", stack)
    data, axes = read_stack(tmp_path / "movie.stk")
    assert axes == "TYX"
    np.testing.assert_array_equal(data, stack)
