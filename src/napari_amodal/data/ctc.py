"""Cell Tracking Challenge (CTC) export: one label image per frame and the track table.

The CTC format (celltrackingchallenge.net, "naming and file content conventions"):
a folder per time-lapse holding ``maskTTT.tif`` (``uint16`` label image of frame
``TTT``, 0 = background, a cell's value = its track label) and ``res_track.txt``,
one line ``L B E P`` per track: label, first and last frame (0-based), and the
label of the mother track (0 when none). Ground truth uses ``TRA/man_trackTTT.tif``
and ``TRA/man_track.txt`` with the same content (``kind="gt"``), so exported truth
and results can be scored with the CTC measures (TRA, DET; py-ctcmetrics).

Two conventions decide how amodal instances become CTC tracks:

- A label covers one unbroken run of frames. A cell missing for some frames and
  seen again continues under a new label whose parent is the label before the
  gap (as the CTC asks); a cell without a track id (-1) is a one-frame track.
- CTC label images cannot overlap, amodal masks do: a pixel inside several cells
  goes to the cell that is visible there (``visible`` masks when the frames have
  them), else to the smallest of them (a hidden part is most often the edge of the
  larger cell behind). A cell with no pixel left (wholly behind others) is left out of
  that frame, as the CTC would not see it either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..instances import FrameInstances

__all__ = ["ctc_labels", "label_image", "write_ctc"]


def ctc_labels(frames: Iterable[FrameInstances]) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]]]:
    """CTC track labels of the cells of one time-lapse.

    Args:
        frames: the frames of one time-lapse, any order (``frame`` gives the time).

    Returns:
        ``(labels, tracks)``: per frame in time order, the (N,) int64 label of each
        cell (>= 1); and the ``(L, B, E, P)`` rows of the track table, by label.
    """
    frames = sorted(frames, key=lambda f: f.frame)
    run: dict[int, list] = {}  # track id -> [label, first frame, last frame] of its current run
    last_label: dict[int, int] = {}  # track id -> the label of its latest run
    rows: dict[int, list] = {}  # label -> [B, E, P]
    labels = []

    def start(frame: int, parent: int) -> int:
        label = len(rows) + 1
        rows[label] = [frame, frame, parent]
        return label

    for f in frames:
        out = np.zeros(len(f), np.int64)
        seen: set[int] = set()
        for i, (tid, pid) in enumerate(zip(f.track_ids.tolist(), f.parent_ids.tolist())):
            if tid < 0 or tid in seen:  # no identity (or the same id twice): a track of its own
                out[i] = start(f.frame, 0)
                continue
            seen.add(tid)
            r = run.get(tid)
            if r is not None and r[2] == f.frame - 1:  # the run goes on
                r[2] = f.frame
                rows[r[0]][1] = f.frame
            else:  # first seen (a daughter's parent is the mother's latest label), or back after a gap
                parent = last_label.get(tid, last_label.get(pid, 0) if pid >= 0 else 0)
                r = run[tid] = [start(f.frame, parent), f.frame, f.frame]
                last_label[tid] = r[0]
            out[i] = r[0]
        labels.append(out)
    for row in rows.values():  # a mother still alive when her daughter appears is no mother
        if row[2] and rows[row[2]][1] >= row[0]:
            row[2] = 0
    if len(rows) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(rows)} tracks do not fit in the CTC's 16-bit label images")
    return labels, [(label, b, e, p) for label, (b, e, p) in rows.items()]


def label_image(frame: FrameInstances, labels: np.ndarray) -> np.ndarray:
    """The ``(H, W) uint16`` label image of ``frame``: ``labels[i]`` where cell ``i`` is,
    overlaps resolved as the module docstring says."""
    image = np.zeros(frame.shape, np.uint16)
    if not len(frame):
        return image
    masks = frame.visible if frame.visible is not None else frame.masks
    order = np.argsort(-masks.reshape(len(frame), -1).sum(1), kind="stable")  # largest first: smaller on top
    for i in order:
        image[masks[i]] = labels[i]
    return image


def _shown(frame: FrameInstances) -> np.ndarray:
    """(N,) bool: the cells that keep at least one pixel in the frame's label image."""
    image = label_image(frame, np.arange(1, len(frame) + 1))
    return np.isin(np.arange(1, len(frame) + 1), image)


def write_ctc(frames: Iterable[FrameInstances], folder, kind: str = "res") -> Path:
    """Write one time-lapse in the CTC format into ``folder`` (replaced as a whole).

    Args:
        frames: the frames of one time-lapse; frame ``t`` is written as image ``t``
            (``mask%03d.tif``, four digits from 1,000 frames on).
        folder: the sequence folder (e.g. ``01_RES``); its earlier content is replaced
            only once the new one is complete, so a failure leaves it as it was.
        kind: "res" (``mask*.tif``, ``res_track.txt``) or "gt" (``TRA/man_track*.tif``,
            ``TRA/man_track.txt``).

    Returns:
        ``folder``.
    """
    import tifffile

    if kind not in ("res", "gt"):
        raise ValueError(f"kind must be 'res' or 'gt', got {kind!r}")
    frames = sorted(frames, key=lambda f: f.frame)
    if not frames:
        raise ValueError("no frames to export")
    if len({f.frame for f in frames}) != len(frames):
        raise ValueError("a frame is given twice")
    # a cell wholly behind others has no pixel in a label image: the CTC has no place for it
    frames = [f.select(_shown(f)) for f in frames]
    labels, tracks = ctc_labels(frames)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    digits = 3 if frames[-1].frame < 1000 else 4
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide the result from the rest of a lab
        inner = tmp / "TRA" if kind == "gt" else tmp
        inner.mkdir(exist_ok=True)
        stem = "man_track" if kind == "gt" else "mask"
        for f, lab in zip(frames, labels):
            tifffile.imwrite(inner / f"{stem}{f.frame:0{digits}d}.tif", label_image(f, lab), compression="zlib")
        table = "".join(f"{label} {b} {e} {p}\n" for label, b, e, p in tracks)
        (inner / ("man_track.txt" if kind == "gt" else "res_track.txt")).write_text(table)
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _swap_in(new: Path, folder: Path) -> None:
    """Put the finished folder ``new`` in the place of ``folder``: the old one is moved
    aside first and removed only after the rename, so one of them is always whole."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: the output is a file, not a folder")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    had = folder.exists()
    if had:
        folder.rename(old)
    try:
        new.rename(folder)
    except OSError:
        if had:  # put the earlier export back
            old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
