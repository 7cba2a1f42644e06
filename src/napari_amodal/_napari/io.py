"""npe2 reader and writer contributions.

Reader: COCO-amodal / KINS / COCOA JSON as amodal cell (Shapes) layers, and napari-amodal
projects as their cells with the reviewed frames, after the image they were drawn on (when its
file is still where the project says). TIFF stacks are left to napari's own reader (claiming
them too made napari ask which reader on every TIFF); the widgets read a TIFF's axes, pixel size
and frame interval from its file (``widgets._common.image_meta``).
Writer: an amodal cell layer to COCO-amodal JSON.

Bad files follow napari's reader convention: ``get_reader`` returns None for what
it does not claim (folders, JSON that names no ``images``), so napari tries other
readers; a claimed file that turns out empty or damaged raises one error naming the
file and what is wrong (napari shows it). The writer raises :class:`CellWriteError`, not a
ValueError, which napari would take for "not a writer for this" and drop the message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .layers import META_KEY, cell_layer_data, cell_layer_to_frames

class CellWriteError(RuntimeError):
    """A layer the COCO-amodal writer cannot write, or a file it cannot write to."""


def _ours(path) -> bool:
    if os.path.isdir(path):  # a folder named like a file (stack.tif/): not ours
        return False
    p = str(path).lower()
    if not p.endswith(".json"):
        return False
    try:  # an annotation file names images and annotations near its start
        with open(path, encoding="utf-8", errors="ignore") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    if not head:  # empty: claimed, to say so (no reader can read it)
        return True
    # our writer puts info.format first; other COCO-style files name their images early
    return '"format":"coco-amodal"' in head.replace(" ", "") or '"images"' in head


def get_reader(path):
    """Return a reader for amodal annotation JSON and projects, else None (other JSON files
    are left to other readers)."""
    paths = path if isinstance(path, list) else [path]
    if paths and all(_ours(p) for p in paths):
        return read_paths
    return None


def read_paths(path) -> list[tuple]:
    paths = path if isinstance(path, list) else [path]
    layers: list[tuple] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.stat().st_size == 0:
            raise ValueError(f"{p}: the file is empty (0 bytes)")
        layers.extend(read_project(p) if is_project(p) else read_annotations(p))
    return layers


def read_image(path) -> tuple:
    """An Image layer for an image file; axes, pixel size (``um_per_px``) and frame interval
    (``hours_per_frame``) from the file's metadata when present."""
    from ..io_images import physical_scale, read_stack

    data, axes = read_stack(path)
    meta = {"source_file": Path(path).name, "source_path": str(path), "axes": axes, **physical_scale(path)}
    return data, {"name": Path(path).stem, "metadata": {META_KEY: meta}, "rgb": axes.endswith("S")}, "image"


def is_project(path) -> bool:
    """Whether a JSON file is a napari-amodal project (its key is written after the COCO part)."""
    from ..project import PROJECT_KEY

    with open(path, "rb") as fh:
        fh.seek(max(0, Path(path).stat().st_size - (1 << 16)))
        return f'"{PROJECT_KEY}"'.encode() in fh.read()


def read_project(path) -> list[tuple]:
    """A project as napari opens it: the image it was made for (when that file is still
    there and is the same image), then its cells with the reviewed frames, linked to that
    image and to the project file (the Proofread dock saves back to it)."""
    from ..project import check_signature, load_project, newest_version

    project = load_project(newest_version(path))  # a newer autosave wins, as in the Proofread dock
    layers, source = [], project.image.get("path") or ""
    if source and Path(source).is_file():
        from ..project import image_signature

        image = read_image(source)
        try:
            check_signature(project.image, image_signature(image[0], path=source, name=project.image.get("name")))
        except ValueError:
            image = None  # the file there changed: the user picks the image
        if image is not None:
            layers.append(image)
    frames = sorted(project.frames, key=lambda f: f.frame)
    stack = len(project.image.get("shape", [])) >= 3
    image_name = layers[0][1]["name"] if layers else Path(project.file_name).stem or Path(path).stem
    data, kwargs, kind = cell_layer_data(frames, stack=stack, name=f"{image_name} amodal cells",
                                         categories=project.categories)
    meta = kwargs["metadata"][META_KEY]
    meta.update(reviewed=sorted(project.reviewed), project_path=str(path), source_file=str(path))
    if layers:
        meta["source_image"] = layers[0][1]["name"]
    return [*layers, (data, kwargs, kind)]


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


def describe_error(e: BaseException) -> str:
    """What went wrong writing a file, in words (the caller names the file: an OSError's
    own file name is often the temporary file beside it)."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def write_cells(path: str, data: Any, attributes: dict) -> list[str]:
    """Write one amodal cell (Shapes) layer as COCO-amodal JSON; returns [path].

    Raises :class:`CellWriteError` naming the layer or file; an earlier file at
    ``path`` is then unchanged (the write is atomic)."""
    from ..data.coco import write_coco

    name = attributes.get("name")
    meta = (attributes.get("metadata") or {}).get(META_KEY, {})
    if "image_shape" not in meta:
        raise CellWriteError(
            f"layer {name!r} is not an amodal cell layer (it does not know its image shape): "
            "save it with napari's own writers, or segment / open amodal cells first"
        )
    try:
        frames = cell_layer_to_frames(
            data, attributes.get("features"), attributes.get("metadata"), attributes.get("shape_type")
        )
    except ValueError as e:  # e.g. a line drawn in the layer
        raise CellWriteError(f"layer {name!r} cannot be saved as COCO-amodal: {e}") from None
    if not str(path).lower().endswith(".json"):
        path = f"{path}.json"
    try:
        write_coco(path, frames, meta.get("categories") or [{"id": 1, "name": "blastomere"}])
    except OSError as e:
        raise CellWriteError(f"{path}: could not write ({describe_error(e)}); "
                             "an earlier file there is unchanged") from None
    return [str(path)]
