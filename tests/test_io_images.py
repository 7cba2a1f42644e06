"""Reading images: TIFF stacks by content, single plain images through imageio."""

import numpy as np
import pytest
import tifffile


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


def test_read_stack_reads_tiffs_as_napari_does(tmp_path):
    """A plain tifffile.imwrite of 3 or 4 frames is tagged planar RGB; it is frames.
    OME and ImageJ axes are honoured, channels kept as C."""
    import tifffile

    from napari_amodal.io_images import read_stack

    for n in (3, 4, 5):
        tifffile.imwrite(tmp_path / f"s{n}.tif", np.zeros((n, 32, 40), np.uint8))
        assert read_stack(tmp_path / f"s{n}.tif")[1] == "TYX"
    tifffile.imwrite(tmp_path / "tz.tif", np.zeros((2, 3, 32, 40), np.uint8))
    assert read_stack(tmp_path / "tz.tif")[1] == "TZYX"
    tifffile.imwrite(tmp_path / "five.tif", np.zeros((2, 3, 2, 32, 40), np.uint16))
    assert read_stack(tmp_path / "five.tif")[1] == "TZCYX"
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((2, 32, 40, 3), np.uint8))
    assert read_stack(tmp_path / "rgb.tif")[1] == "TYXS"
    tifffile.imwrite(tmp_path / "c.ome.tif", np.zeros((3, 2, 32, 40), np.uint16), metadata={"axes": "TCYX"})
    assert read_stack(tmp_path / "c.ome.tif")[1] == "TCYX"
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 2, 2, 32, 40), np.uint16), imagej=True,
                     metadata={"axes": "TZCYX"})
    assert read_stack(tmp_path / "ij.tif")[1] == "TZCYX"


def test_read_stack_names_the_file_for_folders_and_truncated_tiffs(tmp_path):
    import pytest
    import tifffile

    from napari_amodal.io_images import read_stack

    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(IsADirectoryError, match="dir.tif: is a folder"):
        read_stack(tmp_path / "dir.tif")
    tifffile.imwrite(tmp_path / "z.tif", np.random.default_rng(0).integers(0, 255, (4, 64, 64), np.uint8),
                     compression="zlib")
    raw = (tmp_path / "z.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.tif"):
        read_stack(tmp_path / "cut.tif")


def test_physical_scale_from_imagej_and_ome_metadata(tmp_path):
    from napari_amodal.io_images import physical_scale

    a = np.zeros((3, 32, 32), np.uint8)
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"axes": "TYX", "finterval": 600, "unit": "um"})
    assert physical_scale(tmp_path / "ij.tif") == pytest.approx({"um_per_px": 0.4, "hours_per_frame": 600 / 3600})
    tifffile.imwrite(tmp_path / "ij_min.tif", a, imagej=True, metadata={"axes": "TYX", "finterval": 15, "tunit": "min"})
    assert physical_scale(tmp_path / "ij_min.tif") == pytest.approx({"hours_per_frame": 0.25})
    tifffile.imwrite(tmp_path / "ome.tif", a, ome=True, metadata={
        "axes": "TYX", "PhysicalSizeX": 350, "PhysicalSizeXUnit": "nm", "TimeIncrement": 15, "TimeIncrementUnit": "min"})
    assert physical_scale(tmp_path / "ome.tif") == pytest.approx({"um_per_px": 0.35, "hours_per_frame": 0.25})
    tifffile.imwrite(tmp_path / "ome_s.tif", a, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.5,
                                                                  "TimeIncrement": 900})  # OME's default units
    assert physical_scale(tmp_path / "ome_s.tif") == pytest.approx({"um_per_px": 0.5, "hours_per_frame": 0.25})
    # an ImageJ file in pixels (no unit), a plain TIFF, a bad interval: nothing guessed
    tifffile.imwrite(tmp_path / "px.tif", a, imagej=True, metadata={"axes": "TYX", "finterval": -1})
    assert physical_scale(tmp_path / "px.tif") == {}
    tifffile.imwrite(tmp_path / "plain.tif", a)
    assert physical_scale(tmp_path / "plain.tif") == {}
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 10)
    assert physical_scale(tmp_path / "broken.tif") == {}
