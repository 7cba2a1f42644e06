"""COCO-amodal JSON: read and write :class:`~napari_amodal.instances.FrameInstances`.

The contract other tools rely on::

    images:      [{id, file_name, frame, height, width}]
                 file_name = the stack's file name, frame = 0-based index in it
    annotations: [{id, image_id, category_id,
                   segmentation          RLE of the complete (amodal) mask,
                   bbox [x, y, w, h], area (amodal, pixels), iscrowd: 0,
                   score                 predictions only,
                   track_id, parent_track_id (optional, -1 none),
                   inferred              optional true: carried from a neighbouring
                                         frame by the temporal decoder, not detected,
                   visible_segmentation  optional RLE}]
    categories:  [{id, name}]

An image may also carry ``occlusion_file`` (a TIFF stack of per-frame occlusion
probabilities, relative to the JSON) and ``occlusion_frame``.

Also read: KINS-style (``a_segm``/``i_segm`` polygons, ``a_bbox``) and COCOA-style
(``regions`` with ``segmentation``, ``visible_mask``) files. Bad files raise
:class:`AmodalFormatError` naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..instances import FrameInstances, masks_to_rles, rles_to_masks

__all__ = [
    "AmodalFormatError",
    "write_coco",
    "read_coco",
    "read_amodal",
    "coco_dict",
]

FORMAT = "coco-amodal"
# an image's optional ``state``: it has cells; none were found; the frame has no contrast at
# all; or (synthetic ground truth) the embryo is compacted or the dish empty
FRAME_STATES = ("cells", "no_cells", "blank", "compacted", "empty")


class AmodalFormatError(ValueError):
    """A file that does not follow one of the amodal annotation formats."""

    def __init__(self, path, field: str, message: str):
        self.path, self.field = str(path), field
        super().__init__(f"{path}: field '{field}': {message}")


# ---------------------------------------------------------------------------
# writing


def coco_dict(
    frames: Iterable[FrameInstances],
    categories: Sequence[dict],
    *,
    predictions: bool | None = None,
    images_extra: dict[tuple[str, int], dict] | None = None,
    info: dict | None = None,
) -> dict:
    """Build the COCO-amodal dict for ``frames``.

    ``predictions``: write ``score`` on every annotation (default: when any score
    differs from 1). ``images_extra`` maps ``(file_name, frame)`` to extra image
    fields (e.g. ``occlusion_file``). ``frames`` may be a generator: each frame
    is encoded to RLE and dropped, so long stacks never sit in memory at once.
    """
    images, annotations = [], []
    ann_id = 0
    for img_id, f in enumerate(frames, start=1):
        h, w = f.shape
        image = {"id": img_id, "file_name": f.file_name, "frame": int(f.frame), "height": h, "width": w}
        if f.meta.get("state") in FRAME_STATES:  # what a frame without cells is: blank, empty...
            image["state"] = f.meta["state"]
        if images_extra:
            image.update(images_extra.get((f.file_name, int(f.frame)), {}))
        images.append(image)
        rles = masks_to_rles(f.masks)
        vis = masks_to_rles(f.visible) if f.visible is not None else None
        areas = f.areas
        for i in range(len(f)):
            ann_id += 1
            x1, y1, x2, y2 = (float(v) for v in f.boxes[i])
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": img_id,
                "category_id": int(f.labels[i]),
                "segmentation": rles[i],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": int(areas[i]),
                "iscrowd": 0,
                "track_id": int(f.track_ids[i]),
                "parent_track_id": int(f.parent_ids[i]),
            }
            ann["score"] = float(f.scores[i])
            if f.inferred is not None and f.inferred[i]:
                ann["inferred"] = True  # carried from a neighbouring frame, not detected here
            if vis is not None:
                ann["visible_segmentation"] = vis[i]
            annotations.append(ann)
    if predictions is None:
        predictions = any(a["score"] != 1.0 for a in annotations)
    if not predictions:
        for a in annotations:
            del a["score"]
    return {
        "info": {"format": FORMAT, **(info or {})},
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in categories],
    }


def write_coco(
    path,
    frames: Iterable[FrameInstances],
    categories: Sequence[dict],
    images_extra: dict[tuple[str, int], dict] | None = None,
    *,
    predictions: bool | None = None,
    info: dict | None = None,
) -> None:
    """Write ``frames`` as COCO-amodal JSON to ``path`` atomically."""
    d = coco_dict(frames, categories, predictions=predictions, images_extra=images_extra, info=info)
    atomic_write_text(path, json.dumps(d, separators=(",", ":")))


# ---------------------------------------------------------------------------
# reading


def _load_json(path) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such annotation file")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise AmodalFormatError(path, "<json>", f"not valid JSON ({e})") from None


def _require(obj: dict, key: str, path, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise AmodalFormatError(path, f"{where}.{key}", "missing")
    return obj[key]


def _int(value, path, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AmodalFormatError(path, field, f"expected an integer, got {value!r}") from None


def _list(d: dict, key: str, path) -> list:
    value = _require(d, key, path, "<root>")
    if not isinstance(value, list):
        raise AmodalFormatError(path, key, "must be a list")
    return value


def _image_key(img: dict, path, i: int) -> tuple[str, int, int, int]:
    where = f"images[{i}]"
    file_name = _require(img, "file_name", path, where)
    h = _int(_require(img, "height", path, where), path, f"{where}.height")
    w = _int(_require(img, "width", path, where), path, f"{where}.width")
    if h <= 0 or w <= 0:
        raise AmodalFormatError(path, f"{where}.height/width", f"must be positive, got {h}x{w}")
    if max(h, w) > MAX_SIDE:
        raise AmodalFormatError(path, f"{where}.height/width", f"{h}x{w} is larger than any image ({MAX_SIDE} px a side at most)")
    frame = _int(img.get("frame", 0), path, f"{where}.frame")
    if frame < 0:
        raise AmodalFormatError(path, f"{where}.frame", f"must be 0 or more, got {frame}")
    return str(file_name), frame, h, w


MAX_SIDE = 65536  # TIFF's own limit for one plane; a larger number is a typo or a hostile file


def _image_id(img: dict, path, where: str, ids: dict) -> object:
    """The image's id, checked unique (two images with one id would merge their cells)."""
    img_id = _require(img, "id", path, where)
    if not isinstance(img_id, (int, str)) or isinstance(img_id, bool):
        raise AmodalFormatError(path, f"{where}.id", f"expected an integer or string, got {img_id!r}")
    if img_id in ids:
        raise AmodalFormatError(path, f"{where}.id", f"duplicate image id {img_id!r} (also {ids[img_id]})")
    ids[img_id] = where
    return img_id


def _decode_segm(segm, shape, path, field: str) -> np.ndarray:
    """RLE dict (compressed/uncompressed) or polygon list -> (H, W) bool."""
    from pycocotools import mask as mask_utils

    h, w = shape
    try:
        if isinstance(segm, dict):
            return rles_to_masks([segm], shape)[0]
        if isinstance(segm, list):
            if len(segm) == 0:
                return np.zeros(shape, bool)
            polys = segm if isinstance(segm[0], (list, tuple)) else [segm]
            polys = [list(map(float, p)) for p in polys if len(p) >= 6]
            if not polys:
                return np.zeros(shape, bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            return mask_utils.decode(rle).astype(bool)
    except AmodalFormatError:
        raise
    except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors
        raise AmodalFormatError(path, field, f"cannot decode segmentation ({e})") from None
    raise AmodalFormatError(path, field, f"expected an RLE dict or polygon list, got {type(segm).__name__}")


@dataclass
class FrameRecord:
    """One image of an annotation file with its annotations still encoded.

    ``entries`` hold ``segm`` / ``visible`` (RLE or polygons), ``field`` (where
    they sit in the file, for errors), ``category_id``, ``track_id``,
    ``parent_track_id`` and optionally ``score``. :meth:`load` decodes them.
    Large training sets keep records and decode one frame at a time.
    """

    path: str
    file_name: str
    frame: int
    shape: tuple[int, int]
    meta: dict
    entries: list[dict]

    def __len__(self) -> int:
        return len(self.entries)

    def load(self) -> FrameInstances:
        h, w = self.shape
        n = len(self.entries)
        masks = np.zeros((n, h, w), bool)
        visible = np.zeros_like(masks) if any(e.get("visible") is not None for e in self.entries) else None
        for j, e in enumerate(self.entries):
            masks[j] = _decode_segm(e["segm"], self.shape, self.path, e["field"])
            if visible is not None and e.get("visible") is not None:
                visible[j] = _decode_segm(e["visible"], self.shape, self.path, e["visible_field"])
        return FrameInstances.from_masks(
            masks,
            shape=(h, w),
            scores=[e.get("score", 1.0) for e in self.entries],
            labels=[e["category_id"] for e in self.entries],
            track_ids=[e.get("track_id", -1) for e in self.entries],
            parent_ids=[e.get("parent_track_id", -1) for e in self.entries],
            visible=visible,
            file_name=self.file_name,
            frame=self.frame,
            meta=dict(self.meta),
            inferred=[e.get("inferred", False) for e in self.entries]
            if any(e.get("inferred") for e in self.entries) else None,
        )


def _records(path, rows: list[tuple], per_image: dict[int, list[dict]]) -> list[FrameRecord]:
    return [
        FrameRecord(str(path), file_name, frame, (h, w), extra, per_image.get(img_id, []))
        for img_id, file_name, frame, h, w, extra in rows
    ]


def _read_coco_dict(d: dict, path) -> tuple[list[FrameInstances], list[dict]]:
    images = _require(d, "images", path, "<root>")
    annotations = _require(d, "annotations", path, "<root>")
    categories = d.get("categories", [])
    if not isinstance(images, list):
        raise AmodalFormatError(path, "images", "must be a list")
    if not isinstance(annotations, list):
        raise AmodalFormatError(path, "annotations", "must be a list")
    shapes, rows, seen, ids = {}, [], set(), {}
    for i, img in enumerate(images):
        file_name, frame, h, w = _image_key(img, path, i)
        img_id = _image_id(img, path, f"images[{i}]", ids)
        if (file_name, frame) in seen:
            raise AmodalFormatError(path, f"images[{i}]", f"duplicate image ({file_name!r}, frame {frame})")
        seen.add((file_name, frame))
        shapes[img_id] = (h, w)
        extra = {k: v for k, v in img.items() if k not in ("id", "file_name", "frame", "height", "width")}
        rows.append((img_id, file_name, frame, h, w, extra))
    per_image: dict[int, list[dict]] = {}
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]"
        img_id = _require(a, "image_id", path, where)
        if not isinstance(img_id, (int, str)) or img_id not in shapes:
            raise AmodalFormatError(path, f"{where}.image_id", f"no image with id {img_id!r}")
        entry = {
            "segm": _require(a, "segmentation", path, where),
            "field": f"{where}.segmentation",
            "category_id": _int(_require(a, "category_id", path, where), path, f"{where}.category_id"),
            "track_id": _int(a.get("track_id", -1), path, f"{where}.track_id"),
            "parent_track_id": _int(a.get("parent_track_id", -1), path, f"{where}.parent_track_id"),
        }
        if "inferred" in a:
            if not isinstance(a["inferred"], bool):
                raise AmodalFormatError(path, f"{where}.inferred", f"must be true or false, got {a['inferred']!r}")
            entry["inferred"] = a["inferred"]
        if "score" in a:
            try:
                entry["score"] = float(a["score"])
            except (TypeError, ValueError):
                raise AmodalFormatError(path, f"{where}.score", f"expected a number, got {a['score']!r}") from None
        if a.get("visible_segmentation") is not None:
            entry["visible"] = a["visible_segmentation"]
            entry["visible_field"] = f"{where}.visible_segmentation"
        per_image.setdefault(img_id, []).append(entry)
    return _records(path, rows, per_image), categories


def _read_kins_dict(d: dict, path) -> tuple[list[FrameInstances], list[dict]]:
    """KINS: images with file_name/height/width, annotations with ``a_segm``
    (amodal polygons), ``i_segm`` (inmodal = visible polygons), ``a_bbox``."""
    shapes, rows, ids = {}, [], {}
    for i, img in enumerate(_list(d, "images", path)):
        file_name, frame, h, w = _image_key(img, path, i)
        img_id = _image_id(img, path, f"images[{i}]", ids)
        shapes[img_id] = (h, w)
        rows.append((img_id, file_name, frame, h, w, {}))
    per_image: dict[int, list[dict]] = {}
    for i, a in enumerate(_list(d, "annotations", path)):
        where = f"annotations[{i}]"
        img_id = _require(a, "image_id", path, where)
        if not isinstance(img_id, (int, str)) or img_id not in shapes:
            raise AmodalFormatError(path, f"{where}.image_id", f"no image with id {img_id!r}")
        entry = {
            "segm": _require(a, "a_segm", path, where),
            "field": f"{where}.a_segm",
            "category_id": _int(_require(a, "category_id", path, where), path, f"{where}.category_id"),
        }
        if a.get("i_segm") is not None:
            entry["visible"], entry["visible_field"] = a["i_segm"], f"{where}.i_segm"
        per_image.setdefault(img_id, []).append(entry)
    return _records(path, rows, per_image), d.get("categories", [])


def _read_cocoa_dict(d: dict, path) -> tuple[list[FrameInstances], list[dict]]:
    """COCOA: annotations are per image, each with ``regions`` holding amodal
    ``segmentation`` polygons and an optional ``visible_mask`` RLE."""
    shapes, rows, ids = {}, [], {}
    for i, img in enumerate(_list(d, "images", path)):
        file_name, frame, h, w = _image_key(img, path, i)
        img_id = _image_id(img, path, f"images[{i}]", ids)
        shapes[img_id] = (h, w)
        rows.append((img_id, file_name, frame, h, w, {}))
    per_image: dict[int, list[dict]] = {}
    for i, a in enumerate(_list(d, "annotations", path)):
        where = f"annotations[{i}]"
        img_id = _require(a, "image_id", path, where)
        if not isinstance(img_id, (int, str)) or img_id not in shapes:
            raise AmodalFormatError(path, f"{where}.image_id", f"no image with id {img_id!r}")
        regions = _require(a, "regions", path, where)
        if not isinstance(regions, list):
            raise AmodalFormatError(path, f"{where}.regions", "must be a list")
        for j, r in enumerate(regions):
            rwhere = f"{where}.regions[{j}]"
            entry = {
                "segm": _require(r, "segmentation", path, rwhere),
                "field": f"{rwhere}.segmentation",
                "category_id": _int(r.get("category_id", 1), path, f"{rwhere}.category_id"),
            }
            if r.get("visible_mask") is not None:
                entry["visible"], entry["visible_field"] = r["visible_mask"], f"{rwhere}.visible_mask"
            per_image.setdefault(img_id, []).append(entry)
    cats = d.get("categories") or [{"id": 1, "name": "object"}]
    return _records(path, rows, per_image), cats


def detect_format(d: Any) -> str:
    """'coco-amodal', 'kins' or 'cocoa' for a loaded JSON object."""
    if not isinstance(d, dict):
        return "unknown"
    anns = d.get("annotations")
    if isinstance(anns, list) and anns:
        a = anns[0]
        if isinstance(a, dict):
            if "regions" in a:
                return "cocoa"
            if "a_segm" in a:
                return "kins"
    return FORMAT


def read_amodal(path, format: str | None = None, lazy: bool = False):
    """Read a COCO-amodal, KINS or COCOA file -> ``(frames, categories)``.

    Frames come in the file's image order, each with its annotations in file
    order. The format is detected from the annotations unless given. With
    ``lazy`` the frames are :class:`FrameRecord` objects that decode their
    masks on :meth:`FrameRecord.load` (for training sets too large to decode at once).
    """
    d = _load_json(path)
    if not isinstance(d, dict):
        raise AmodalFormatError(path, "<root>", "expected a JSON object with images and annotations")
    fmt = format or detect_format(d)
    readers = {FORMAT: _read_coco_dict, "kins": _read_kins_dict, "cocoa": _read_cocoa_dict}
    if fmt not in readers:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(readers)}")
    records, categories = readers[fmt](d, path)
    if lazy:
        return records, categories
    return [r.load() for r in records], categories


def read_coco(path) -> list[FrameInstances]:
    """Read COCO-amodal (or KINS / COCOA) frames from ``path``."""
    return read_amodal(path)[0]


class OcclusionPages:
    """A prediction frame's occlusion map, read page by page from the TIFF its image names.

    ``pages(frame)`` -> (H, W) float32 in [0, 1], or None when the frame names no
    ``occlusion_file``. The file (relative to the JSON's folder) is a TIFF stack of
    per-frame maps, uint8 (0-255 = probability 0-1) or float; ``occlusion_frame``
    picks the page (default: the frame's own index). Only one page is in memory.
    """

    def __init__(self, json_path):
        self.json_path = Path(json_path)
        self._open: dict[str, Any] = {}

    def __call__(self, f: FrameInstances) -> np.ndarray | None:
        name = f.meta.get("occlusion_file")
        if not name:
            return None
        pages = self._pages(str(name))
        idx = _int(f.meta.get("occlusion_frame", f.frame), self.json_path, "images.occlusion_frame")
        if not 0 <= idx < len(pages):
            raise AmodalFormatError(self.json_path, "images.occlusion_frame", f"{idx} outside the {len(pages)} planes of {name}")
        occ = pages[idx].asarray()
        occ = occ.astype(np.float32) / 255.0 if occ.dtype == np.uint8 else occ.astype(np.float32)
        if occ.shape != f.shape:
            raise AmodalFormatError(self.json_path, "images.occlusion_file", f"map {occ.shape} does not match image {f.shape}")
        return occ

    def _pages(self, name: str):
        import tifffile

        if name not in self._open:
            p = self.json_path.parent / name
            if not p.is_file():
                raise AmodalFormatError(self.json_path, "images.occlusion_file", f"{p} does not exist")
            try:
                self._open[name] = tifffile.TiffFile(p).pages
            except Exception as e:  # tifffile's own errors on damaged files
                raise AmodalFormatError(self.json_path, "images.occlusion_file", f"{p}: not a readable TIFF ({e})") from None
        return self._open[name]


def load_occlusion_maps(frames: Sequence[FrameInstances], json_path) -> int:
    """Fill ``occlusion`` of frames whose image names an ``occlusion_file``
    (see :class:`OcclusionPages`). Returns the number of frames filled."""
    pages, filled = OcclusionPages(json_path), 0
    for f in frames:
        occ = pages(f)
        if occ is not None:
            f.occlusion = occ
            filled += 1
    return filled
