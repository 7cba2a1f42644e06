"""npe2 reader and writer contributions.

Reader: TIFF stacks (Y,X / T,Y,X / T,Z,Y,X, grey or RGB) as Image layers, and
COCO-amodal / KINS / COCOA JSON as amodal cell (Shapes) layers.
Writer: an amodal cell layer to COCO-amodal JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .layers import META_KEY, cell_layer_data, cell_layer_to_frames

TIFF_SUFFIXES = (".tif", ".tiff")


def _ours(path) -> bool:
    p = str(path).lower()
    if p.endswith(TIFF_SUFFIXES):
        return True
    if not p.endswith(".json"):
        return False
    try:  # an annotation file names images and annotations near its start
        with open(path, encoding="utf-8", errors="ignore") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    # our writer puts info.format first; other COCO-style files name their images early
    return '"format":"coco-amodal"' in head.replace(" ", "") or '"images"' in head


def get_reader(path):
    """Return a reader for TIFF stacks and amodal annotation JSON, else None
    (other JSON files are left to other readers)."""
    paths = path if isinstance(path, list) else [path]
    if paths and all(_ours(p) for p in paths):
        return read_paths
    return None


def read_paths(path) -> list[tuple]:
    paths = path if isinstance(path, list) else [path]
    layers: list[tuple] = []
    for p in paths:
        p = Path(p)
        if p.suffix.lower() == ".json":
            layers.extend(read_annotations(p))
        else:
            layers.append(read_tiff(p))
    return layers


def read_tiff(path) -> tuple:
    """An Image layer for a TIFF stack; axes, pixel size (``um_per_px``) and frame interval
    (``hours_per_frame``) from the file's metadata when present."""
    from ..io_images import physical_scale, read_stack

    data, axes = read_stack(path)
    meta = {"source_file": Path(path).name, "axes": axes, **physical_scale(path)}
    return data, {"name": Path(path).stem, "metadata": {META_KEY: meta}, "rgb": axes.endswith("S")}, "image"


def read_annotations(path) -> list[tuple]:
    """One amodal cell layer per stack named in a COCO-amodal (or KINS/COCOA) file."""
    from ..data.coco import read_amodal

    frames, categories = read_amodal(path)
    by_file: dict[str, list] = {}
    for f in frames:
        by_file.setdefault(f.file_name, []).append(f)
    layers = []
    for file_name, fs in by_file.items():
        fs.sort(key=lambda f: f.frame)
        stem = Path(file_name).stem or Path(path).stem
        data, kwargs, kind = cell_layer_data(fs, name=f"{stem} cells", categories=categories)
        kwargs["metadata"][META_KEY]["source_file"] = str(path)
        layers.append((data, kwargs, kind))
    return layers


def write_cells(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one amodal cell (Shapes) layer as COCO-amodal JSON; returns [path]."""
    from ..data.coco import write_coco

    meta = (attributes.get("metadata") or {}).get(META_KEY, {})
    if "image_shape" not in meta:
        raise ValueError(
            f"layer {attributes.get('name')!r} is not an amodal cell layer (it does not know its image shape)"
        )
    frames = cell_layer_to_frames(
        data, attributes.get("features"), attributes.get("metadata"), attributes.get("shape_type")
    )
    if not str(path).lower().endswith(".json"):
        path = f"{path}.json"
    write_coco(path, frames, meta.get("categories") or [{"id": 1, "name": "blastomere"}])
    return [str(path)]
