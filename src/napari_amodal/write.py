"""Writing segmentation results of a stack: COCO-amodal JSON, occlusion TIFF, overlay PNG.

Results are streamed frame by frame: each frame's masks are encoded to RLE and
its occlusion map appended to the TIFF, so a long stack never sits in memory as
dense masks. Every file is written to a temporary name and renamed when
complete; a failure or a stop leaves earlier outputs untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np


def segment_files(segmenter, input_path, out_dir, *, plane: int | None = None, channel: int | None = None,
                  progress: Callable[[int, int], None] | None = None, overlay_frames: int = 12,
                  states: dict | None = None, temporal: bool = True, linker: str = "overlap") -> list[Path]:
    """Segment one image file and write ``<stem>.json``, ``<stem>_occlusion.tif``
    (uint8, 255 = probability 1, one page per frame) and ``<stem>_overlay.png``
    (up to ``overlay_frames`` frames with every cell's complete outline).

    ``file_name`` in the JSON is the input's file name; ``frame`` its index; each image
    entry carries ``um_per_px`` and ``hours`` (since the first frame) when the TIFF's
    ImageJ or OME metadata give the pixel size and frame interval, and ``state`` (``cells``, ``no_cells`` or ``blank``), also counted into
    ``states`` when given (and ``inferred``: cells carried by the temporal decoder).
    ``temporal``: decode the frames as one time-lapse (see ``Segmenter.iter_frames``).
    ``linker``: "overlap" (the track ids of :class:`~napari_amodal.track.Tracker`, frame to
    frame by mask overlap) or "laptrack" (the whole time-lapse relinked at the end by
    :func:`~napari_amodal.track.laptrack_links`: gap closing and divisions by centroids).
    Returns the written paths.
    """
    import tifffile

    from .atomic import atomic_path, atomic_write_text, ensure_folder, output_lock
    from .data.coco import coco_dict
    from .io_images import is_tiff, physical_scale, read_stack
    from .overlay import draw_instances, montage, write_png
    from .segment import frames_view

    from .track import centroid_rows, laptrack_links

    if linker not in ("overlap", "laptrack"):
        raise ValueError(f"linker must be 'overlap' or 'laptrack', got {linker!r}")
    input_path = Path(input_path)
    data, axes = read_stack(input_path)  # inputs and options are checked before any output is touched
    view, _ = frames_view(data, axes, plane, channel)
    out = ensure_folder(out_dir, "--out folder")
    stem = output_stem(input_path)
    json_path, occ_path, overlay_path = out / f"{stem}.json", out / f"{stem}_occlusion.tif", out / f"{stem}_overlay.png"
    refuse_foreign(json_path)
    n = len(view)
    picks = set(np.linspace(0, n - 1, min(n, overlay_frames)).round().astype(int).tolist())
    tiles, points = [], []
    scale = physical_scale(input_path) if is_tiff(input_path) else {}

    def units(t: int) -> dict:  # what the file says, for measure: um_per_px, hours since the first frame
        out = {"um_per_px": scale["um_per_px"]} if "um_per_px" in scale else {}
        if "hours_per_frame" in scale:
            out["hours"] = t * scale["hours_per_frame"]
        return out

    def frames(occ_tmp):
        with tifffile.TiffWriter(occ_tmp) as tif:
            for k, inst in enumerate(segmenter.iter_frames(data, axes=axes, plane=plane, channel=channel,
                                                           file_name=input_path.name, temporal=temporal)):
                occ = inst.occlusion if inst.occlusion is not None else inst.occlusion_map()
                # no per-page metadata: readers see one (T, Y, X) series
                tif.write((np.clip(occ, 0, 1) * 255).round().astype(np.uint8), compression="zlib", metadata=None)
                if inst.frame in picks:
                    tiles.append(draw_instances(view[inst.frame], inst, thickness=2))
                if progress is not None:
                    progress(k + 1, n)
                if linker == "laptrack":
                    points.append(centroid_rows(inst))
                if states is not None:
                    states[inst.meta["state"]] = states.get(inst.meta["state"], 0) + 1
                    if inst.inferred is not None:
                        states["inferred"] = states.get("inferred", 0) + int(inst.inferred.sum())
                yield inst

    # all three files are renamed into place only once every frame is done; one run at a time
    with output_lock(out, stem), atomic_path(occ_path) as occ_tmp, atomic_path(overlay_path, suffix=".png") as png_tmp:
        extra = {(input_path.name, t): {"occlusion_file": occ_path.name, "occlusion_frame": t, **units(t)}
                 for t in range(n)}
        d = coco_dict(frames(occ_tmp), _categories(segmenter), predictions=True, images_extra=extra,
                      info={"model": segmenter.name, "source": str(input_path)})
        if linker == "laptrack" and points:  # annotations are in the order the cells came
            ids, parents = laptrack_links(np.concatenate(points))
            for ann, tid, pid in zip(d["annotations"], ids.tolist(), parents.tolist()):
                ann["track_id"], ann["parent_track_id"] = tid, pid
        write_png(png_tmp, montage(tiles, columns=min(4, len(tiles))))
        atomic_write_text(json_path, json.dumps(d, separators=(",", ":")))
    return [json_path, occ_path, overlay_path]


def output_stem(path) -> str:
    """``embryo.ome.tif`` -> ``embryo``; ``a.v1.tif`` -> ``a.v1`` (only image suffixes go)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def refuse_foreign(json_path: Path) -> None:
    """Refuse to overwrite a JSON file that napari-amodal's ``segment`` did not write
    (ground truth or a user's annotations in the output folder)."""
    if not json_path.exists():
        return
    import json

    try:
        info = json.loads(json_path.read_text()).get("info", {})
    except (ValueError, OSError, AttributeError):
        info = {}
    if not (isinstance(info, dict) and "model" in info and "source" in info):
        raise FileExistsError(
            f"{json_path} exists and was not written by 'napari-amodal segment'; choose another --out folder"
        )


def _categories(segmenter) -> list[dict]:
    config = getattr(segmenter, "config", None)
    n = getattr(config, "num_classes", 2) - 1
    if n <= 1:
        return [{"id": 1, "name": "blastomere"}]
    return [{"id": i, "name": f"class_{i}"} for i in range(1, n + 1)]
