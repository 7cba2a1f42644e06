"""Reading image stacks (numpy + tifffile; no Qt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_stack(path) -> tuple[np.ndarray, str]:
    """Read a TIFF stack (or a single PNG/JPEG/BMP image) -> ``(data, axes)``.

    ``axes`` is a string over ``T Z C Y X S`` (C = channels, S = RGB samples,
    last) taken from the file's own metadata (our ``axes`` entry, ImageJ or
    OME) when present. A TIFF without such metadata (a plain
    ``tifffile.imwrite``) is read by its shape, as napari reads it: (Y,X),
    (T,Y,X), (T,Z,Y,X), (T,Z,C,Y,X), with a trailing 3 or 4 read as RGB(A) -- so
    a 3- or 4-frame stack is frames, not planar RGB.
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, not an image file")
    if not is_tiff(path):
        if path.suffix.lower() in (".tif", ".tiff"):
            raise ValueError(f"{path}: not a readable TIFF (no TIFF header)")
        return _read_plain_image(path)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes.upper()
            meta = tif.shaped_metadata[0] if tif.shaped_metadata else None
            described = tif.is_ome or tif.is_imagej
    except MemoryError:
        raise
    except Exception as e:  # tifffile and its codecs (zlib, LZW, JPEG...) raise their own errors on damaged files
        raise ValueError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from None
    if meta and isinstance(meta.get("axes"), str) and len(meta["axes"]) == data.ndim:
        axes, described = meta["axes"].upper(), True
    if not described:
        return data, guess_axes(data.shape)
    axes = axes.replace("Q", "T").replace("I", "T")
    if "S" in axes and not axes.endswith("S"):
        axes = axes.replace("S", "C")  # planar samples are channels
    if len(axes) != data.ndim or set(axes) - set("TZCYXS") or len(set(axes)) != len(axes):
        axes = guess_axes(data.shape)
    return data, axes


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def is_tiff(path) -> bool:
    """Whether a file is TIFF-based (.tif, .lsm, .stk, OME-TIFF...), by its first bytes."""
    with open(path, "rb") as fh:
        return fh.read(4) in TIFF_MAGIC


def _read_plain_image(path: Path) -> tuple[np.ndarray, str]:
    """A 2D grey or RGB(A) image in any format imageio reads (PNG, JPEG, BMP...)."""
    import imageio.v3 as iio

    try:
        data = np.asarray(iio.imread(path))
    except Exception as e:  # imageio raises plugin-specific errors
        raise ValueError(f"{path}: not a readable image ({e})") from None
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise ValueError(f"{path}: expected a single grey or RGB image, got shape {data.shape}")
    return data, "YX" if data.ndim == 2 else "YXS"


def guess_axes(shape: tuple[int, ...]) -> str:
    """Axes for a bare array shape (see :func:`read_stack`)."""
    rgb = len(shape) >= 3 and shape[-1] in (3, 4) and shape[-2] > 4
    core = len(shape) - (1 if rgb else 0)
    names = {2: "YX", 3: "TYX", 4: "TZYX", 5: "TZCYX"}
    if core not in names:
        raise ValueError(
            f"cannot interpret an image of shape {shape}: expected (Y,X), (T,Y,X), (T,Z,Y,X) or (T,Z,C,Y,X), optionally RGB"
        )
    return names[core] + ("S" if rgb else "")
