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
            data = tif.series[0].asarray()
            header = _header(tif)
    except MemoryError:
        raise
    except Exception as e:  # tifffile and its codecs (zlib, LZW, JPEG...) raise their own errors on damaged files
        raise ValueError(f"{path}: not a readable TIFF ({type(e).__name__}: {e})") from None
    return data, _axes(header, data.shape)


def stack_axes(path, shape: tuple[int, ...]) -> str:
    """The axes :func:`read_stack` gives a TIFF whose pixels were read as ``shape``, from its
    header only (for an image opened by another reader, e.g. napari's own); guessed from the
    shape when the file cannot say."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            header = _header(tif)
    except Exception:  # noqa: BLE001 - no readable header: the shape is all there is
        return guess_axes(tuple(shape))
    return _axes(header, tuple(shape))


def _header(tif) -> tuple[str, dict | None, bool]:
    """What an open TiffFile says of its first series' axes: tifffile's axes, our own
    ``axes`` entry (shaped metadata) and whether ImageJ or OME describe it."""
    meta = tif.shaped_metadata[0] if tif.shaped_metadata else None
    return tif.series[0].axes.upper(), meta, bool(tif.is_ome or tif.is_imagej)


def _axes(header: tuple[str, dict | None, bool], shape: tuple[int, ...]) -> str:
    """Axes of pixels of ``shape`` given their file's :func:`_header`."""
    axes, meta, described = header
    if meta and isinstance(meta.get("axes"), str) and len(meta["axes"]) == len(shape):
        axes, described = meta["axes"].upper(), True
    if not described:
        return guess_axes(shape)
    axes = axes.replace("Q", "T").replace("I", "T")
    if "S" in axes and not axes.endswith("S"):
        axes = axes.replace("S", "C")  # planar samples are channels
    if len(axes) != len(shape) or set(axes) - set("TZCYXS") or len(set(axes)) != len(axes):
        axes = guess_axes(shape)
    return axes


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


_LENGTH_UM = {"um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
              "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
_TIME_HOURS = {"s": 1 / 3600, "sec": 1 / 3600, "second": 1 / 3600, "seconds": 1 / 3600, "ms": 1 / 3.6e6,
               "min": 1 / 60, "minute": 1 / 60, "minutes": 1 / 60, "h": 1.0, "hr": 1.0, "hour": 1.0, "hours": 1.0}


def _positive(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) and x > 0 else None


def physical_scale(path) -> dict:
    """The pixel size and frame interval a TIFF states about itself.

    Read from OME-XML (``PhysicalSizeX`` with its unit, µm by default; ``TimeIncrement``
    with its unit, seconds by default) or ImageJ metadata (``XResolution`` in pixels per
    ``unit``; ``finterval`` in ``tunit``, seconds by default). Values that are missing, not positive or in units
    it does not know are left out rather than guessed.

    Returns:
        ``{"um_per_px": float, "hours_per_frame": float}``, either key only when known.
    """
    import tifffile

    out: dict = {}
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                out = _ome_scale(tif.ome_metadata)
            elif tif.is_imagej:
                out = _imagej_scale(tif.imagej_metadata or {}, tif.pages[0].tags)
    except Exception:  # noqa: BLE001 - metadata is a bonus: the image itself was read already
        return {}
    return out


def _ome_scale(xml: str) -> dict:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None)
    if pixels is None:
        return {}
    out = {}
    size = _positive(pixels.get("PhysicalSizeX"))
    factor = _LENGTH_UM.get(pixels.get("PhysicalSizeXUnit", "µm"))
    if size and factor:
        out["um_per_px"] = size * factor
    step = _positive(pixels.get("TimeIncrement"))
    factor = _TIME_HOURS.get(pixels.get("TimeIncrementUnit", "s"))
    if step and factor:
        out["hours_per_frame"] = step * factor
    return out


def _imagej_scale(meta: dict, tags) -> dict:
    out = {}
    res = tags.get("XResolution")
    unit = str(meta.get("unit", "")).replace("\\u00B5", "µ")
    if res is not None and unit in _LENGTH_UM:
        num, den = res.value
        per_px = _positive(den / num) if num else None
        if per_px:
            out["um_per_px"] = per_px * _LENGTH_UM[unit]
    step = _positive(meta.get("finterval"))
    factor = _TIME_HOURS.get(str(meta.get("tunit", "sec")).lower())  # ImageJ: finterval in tunit
    if step and factor:
        out["hours_per_frame"] = step * factor
    return out
