"""Annotation projects: proofread amodal cells of one image stack, saved safely.

A project ties the cells of a time-lapse to the image they were drawn on and
remembers which frames a person has reviewed. Reviewed frames are the training
data for fine-tuning (:func:`reviewed_frames`, :func:`export_reviewed`).

File format: one JSON file that **is** a COCO-amodal file (see
:mod:`napari_amodal.data.coco`: ``images``, ``annotations``, ``categories``; one
image entry per frame, empty frames included) with one extra top-level key::

    "napari_amodal_project": {
        "format": "napari-amodal-project", "version": 1,
        "image": {"path", "name", "shape", "dtype", "hash"},   # the data signature
        "n_frames": T,
        "reviewed": [frame indices]
    }

so any COCO-amodal reader (and the napari reader) can open a project too. The
image signature's ``hash`` is a SHA-256 over a fixed strided subsample of the
pixels: a project is refused for an image of another shape, dtype or content
(:class:`SignatureMismatchError`); the path may differ (moved files still open).

Writes go through :func:`~napari_amodal.atomic.atomic_write_text` (temporary
file + fsync + rename), so a crash leaves either the old or the new file.
Autosave writes to a separate ``<project>.autosave.json`` beside the project
(:func:`autosave_path`): the project file changes only when the user saves, and
:func:`newest_version` picks the autosave when it is newer than the project.

No Qt and no napari here; the napari widgets are thin layers over these functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .data.coco import coco_dict, read_amodal, write_coco
from .instances import FrameInstances

__all__ = [
    "PROJECT_FORMAT",
    "PROJECT_KEY",
    "AnnotationProject",
    "ProjectError",
    "SignatureMismatchError",
    "attention_reasons",
    "autosave_path",
    "cell_table",
    "check_signature",
    "export_reviewed",
    "image_signature",
    "load_project",
    "newest_version",
    "next_attention_frame",
    "project_dict",
    "reviewed_frames",
    "save_project",
]

PROJECT_FORMAT = "napari-amodal-project"
PROJECT_VERSION = 1
PROJECT_KEY = "napari_amodal_project"
DEFAULT_CATEGORIES = [{"id": 1, "name": "blastomere"}]


class ProjectError(ValueError):
    """A project file that cannot be used."""


class SignatureMismatchError(ProjectError):
    """The project was saved for another image."""


# ---------------------------------------------------------------------------
# image signature


def image_signature(data, path=None, name: str | None = None, samples_per_axis: int = 32) -> dict:
    """A cheap fingerprint of an image stack: path, name, shape, dtype and a hash.

    The hash is a SHA-256 of a strided subsample (at most ``samples_per_axis``
    positions along each axis), so it reads a few thousand pixels, not the stack.
    ``name`` (default: the path's file name) is the ``file_name`` written in
    COCO-amodal exports.
    """
    shape = tuple(int(s) for s in np.shape(data))
    index = tuple(slice(None, None, max(1, s // samples_per_axis)) for s in shape)
    sub = np.ascontiguousarray(np.asarray(data[index]))
    digest = hashlib.sha256()
    digest.update(str(sub.shape).encode())
    digest.update(sub.astype(sub.dtype.newbyteorder("<"), copy=False).tobytes())
    return {
        "path": str(path) if path else "",
        "name": name if name is not None else (Path(str(path)).name if path else ""),
        "shape": list(shape),
        "dtype": str(np.dtype(getattr(data, "dtype", sub.dtype))),
        "hash": digest.hexdigest(),
    }


def check_signature(saved: dict, current: dict, where: str = "the project") -> None:
    """Raise :class:`SignatureMismatchError` unless both signatures name the same pixels."""
    problems = []
    if list(saved.get("shape", [])) != list(current.get("shape", [])):
        problems.append(f"shape {tuple(saved.get('shape', []))} vs {tuple(current.get('shape', []))}")
    if saved.get("dtype") != current.get("dtype"):
        problems.append(f"dtype {saved.get('dtype')} vs {current.get('dtype')}")
    if not problems and saved.get("hash") != current.get("hash"):
        problems.append("the pixel values differ")
    if problems:
        who = saved.get("path") or saved.get("name") or "another image"
        raise SignatureMismatchError(
            f"{where} was saved for another image ({who}): " + "; ".join(problems)
            + ". Choose the image it was made for."
        )


# ---------------------------------------------------------------------------
# the project


@dataclass
class AnnotationProject:
    """Cells of every frame of one image stack, and which frames were reviewed.

    ``frames[t]`` is frame ``t`` (``frame == t``; empty frames included), all
    with ``file_name == image["name"]``.
    """

    image: dict
    frames: list[FrameInstances]
    reviewed: set[int] = field(default_factory=set)
    categories: list[dict] = field(default_factory=lambda: [dict(c) for c in DEFAULT_CATEGORIES])

    @classmethod
    def from_frames(cls, image: dict, frames: Sequence[FrameInstances], n_frames: int | None = None,
                    frame_shape: tuple[int, int] | None = None, reviewed: Iterable[int] = (),
                    categories: Sequence[dict] | None = None) -> AnnotationProject:
        """A project holding frames ``0..n_frames-1``; missing frames become empty ones.

        Frames are re-labelled with the image's name so exports point at it.
        """
        by_index = {int(f.frame): f for f in frames}
        if n_frames is None:
            n_frames = max(by_index, default=-1) + 1
        if frame_shape is None:
            if not by_index:
                raise ValueError("frame_shape is needed for a project without frames")
            frame_shape = next(iter(by_index.values())).shape
        bad = [t for t in by_index if not 0 <= t < n_frames]
        if bad:
            raise ValueError(f"frames {bad} are outside 0..{n_frames - 1}")
        name = image.get("name", "")
        out = []
        for t in range(n_frames):
            f = by_index.get(t)
            if f is None:
                f = FrameInstances.empty(tuple(frame_shape), file_name=name, frame=t)
            elif f.shape != tuple(frame_shape):
                raise ValueError(f"frame {t} is {f.shape}, expected {tuple(frame_shape)}")
            else:
                f = replace(f, file_name=name, frame=t)
            out.append(f)
        return cls(image=dict(image), frames=out, reviewed={int(t) for t in reviewed},
                   categories=[dict(c) for c in (categories or DEFAULT_CATEGORIES)])

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def file_name(self) -> str:
        return self.image.get("name", "")


def project_dict(project: AnnotationProject) -> dict:
    """The JSON object of a project file (COCO-amodal plus the project key)."""
    d = coco_dict(project.frames, project.categories, info={"project": PROJECT_FORMAT})
    d[PROJECT_KEY] = {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "image": dict(project.image),
        "n_frames": project.n_frames,
        "reviewed": sorted(int(t) for t in project.reviewed),
    }
    return d


def save_project(path, project: AnnotationProject) -> Path:
    """Write ``project`` to ``path`` (a ``.json`` file) atomically; returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(project_dict(project), separators=(",", ":")))
    return path


def load_project(path, signature: dict | None = None) -> AnnotationProject:
    """Read a project file; with ``signature`` (of the image at hand), refuse a
    project made for another image (:class:`SignatureMismatchError`)."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: no such project file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProjectError(f"{path}: not a valid project file ({e})") from None
    meta = d.get(PROJECT_KEY) if isinstance(d, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"{path}: not a napari-amodal project (no '{PROJECT_KEY}' entry)")
    version = _whole(meta.get("version", 0), path, "version")
    if version > PROJECT_VERSION:
        raise ProjectError(f"{path}: project version {version} is newer than this napari-amodal reads")
    image = meta.get("image") or {}
    shape = image.get("shape", []) if isinstance(image, dict) else None
    if not isinstance(shape, list) or not all(isinstance(v, int) and v >= 0 for v in shape):
        raise ProjectError(f"{path}: '{PROJECT_KEY}.image' must be an image signature with a list of sizes")
    if signature is not None:
        check_signature(image, signature, where=f"project {path.name}")
    frames, categories = read_amodal(path)
    n_frames = _whole(meta.get("n_frames", len(frames)), path, "n_frames")
    reviewed = meta.get("reviewed", [])
    if not isinstance(reviewed, list):
        raise ProjectError(f"{path}: '{PROJECT_KEY}.reviewed' must be a list of frame indices")
    reviewed = [_whole(t, path, "reviewed") for t in reviewed]
    if any(t >= max(n_frames, 1) for t in reviewed) or any(f.frame >= max(n_frames, 1) for f in frames):
        raise ProjectError(f"{path}: frame indices beyond the project's {n_frames} frames")
    frame_shape = frames[0].shape if frames else (tuple(shape[-2:]) if len(shape) >= 2 else None)
    if frame_shape is None:
        raise ProjectError(f"{path}: a project without frames must give its image shape")
    if any(f.shape != frame_shape for f in frames):
        raise ProjectError(f"{path}: frames of different sizes in one project")
    return AnnotationProject.from_frames(
        image, frames, n_frames=n_frames, frame_shape=frame_shape,
        reviewed=reviewed, categories=categories or None,
    )


def _whole(value, path, field: str) -> int:
    """A non-negative integer field of the project entry, or a ProjectError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProjectError(f"{path}: '{PROJECT_KEY}.{field}' must be a whole number >= 0, got {value!r}")
    return value


def autosave_path(path) -> Path:
    """Where autosave writes for a project file: ``<stem>.autosave.json`` beside it."""
    path = Path(path)
    stem = path.name[: -len(".json")] if path.name.lower().endswith(".json") else path.name
    return path.with_name(f"{stem}.autosave.json")


def newest_version(path) -> Path:
    """The project file, or its autosave when that exists and is newer."""
    path = Path(path)
    auto = autosave_path(path)
    if auto.is_file() and (not path.is_file() or os.path.getmtime(auto) > os.path.getmtime(path)):
        return auto
    return path


# ---------------------------------------------------------------------------
# reviewed frames: the fine-tuning data


def reviewed_frames(project: AnnotationProject) -> list[FrameInstances]:
    """The reviewed frames (in frame order), each with ``file_name`` = the image
    file name and ``frame`` = its index: ground truth for fine-tuning."""
    return [project.frames[t] for t in sorted(project.reviewed) if 0 <= t < project.n_frames]


def export_reviewed(project: AnnotationProject, path) -> Path:
    """Write the reviewed frames as COCO-amodal JSON (ground truth: no scores)."""
    frames = reviewed_frames(project)
    if not frames:
        raise ProjectError("no frame is marked reviewed; review frames before exporting training data")
    frames = [replace(f, scores=np.ones(len(f), np.float32)) for f in frames]
    write_coco(path, frames, project.categories, predictions=False,
               info={"source": PROJECT_FORMAT, "image": project.image})
    return Path(path)


# ---------------------------------------------------------------------------
# frames needing attention


def cell_table(frames: Iterable[FrameInstances]) -> list[tuple[int, int, float]]:
    """``(frame, cell_id, score)`` per cell; the input of :func:`attention_reasons`."""
    return [(int(f.frame), int(f.track_ids[i]), float(f.scores[i])) for f in frames for i in range(len(f))]


def attention_reasons(
    cells: Iterable[tuple[int, int, float]],
    n_frames: int,
    reviewed: Iterable[int] = (),
    score_threshold: float = 0.5,
) -> dict[int, list[str]]:
    """Why each unreviewed frame needs a look: ``{frame: [reason, ...]}``.

    ``cells`` holds ``(frame, cell_id, score)`` rows (several rows of one
    ``(frame, cell_id)`` are one cell, its lowest score counts). Reasons:
    ``"low score"`` (a cell below ``score_threshold``), ``"cell count changed"``
    (vs the previous frame) and ``"not reviewed"`` (every unreviewed frame).
    Reviewed frames are left out: a person has checked them.
    """
    reviewed = {int(t) for t in reviewed}
    ids: list[set[int]] = [set() for _ in range(n_frames)]
    low = [False] * n_frames
    for frame, cid, score in cells:
        frame = int(frame)
        if not 0 <= frame < n_frames:
            continue
        ids[frame].add(int(cid))
        if float(score) < score_threshold:
            low[frame] = True
    out: dict[int, list[str]] = {}
    for t in range(n_frames):
        if t in reviewed:
            continue
        reasons = []
        if low[t]:
            reasons.append("low score")
        if t > 0 and len(ids[t]) != len(ids[t - 1]):
            reasons.append("cell count changed")
        reasons.append("not reviewed")
        out[t] = reasons
    return out


def next_attention_frame(reasons: dict[int, list[str]], current: int, n_frames: int) -> int | None:
    """The next frame after ``current`` (wrapping around) to look at.

    Frames flagged for a low score or a changed cell count come first; when
    none is left, the next frame not yet reviewed. None when all are reviewed.
    """
    order = [(current + k) % n_frames for k in range(1, n_frames + 1)] if n_frames else []
    for t in order:
        if t in reasons and any(r != "not reviewed" for r in reasons[t]):
            return t
    for t in order:
        if t in reasons:
            return t
    return None
