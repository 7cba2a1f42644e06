"""What embryologists measure, from amodal instances (pure numpy, no Qt).

- Per cell: area, equivalent diameter (of the disk with the same area) and the
  fraction of the cell's area that it shares with other cells (where the amodal
  masks overlap: the part that is, or hides, a neighbour).
- Per frame: cell count, mean area, size evenness ``area_cv = std(area) / mean(area)``
  over the cells of the frame (population std; lower = more even; blastomeres
  should be equal at 2, 4 and 8 cells) and smallest / largest diameter.
- Per time-lapse (one ``file_name``): cleavage times ``t2 ... t8``, the time at
  which ``n`` cells are first seen.

Amodal masks are what make these right: the area of a partly hidden cell is its
whole area, not the visible part.

Units: lengths in µm and areas in µm² when the pixel size is known (the
``um_per_px`` argument, else ``frame.meta["um_per_px"]``), otherwise px and
px². Times in hours when known (``frame.meta["hours"]``, else ``hours_per_frame``
x the frame index), otherwise frame indices. Every row says its units.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .instances import FrameInstances

__all__ = ["Measurements", "cell_rows", "cleavage_times", "measure", "write_measurements"]


def _pixel_size(frame: FrameInstances, um_per_px: float | None) -> float | None:
    value = um_per_px if um_per_px is not None else frame.meta.get("um_per_px")
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"the pixel size must be a positive number of µm, got {value!r}")
    return value


def _frame_time(frame: FrameInstances, hours_per_frame: float | None) -> tuple[float, str]:
    """``(time, unit)``: hours when known, else the frame index."""
    if hours_per_frame is not None:
        if not math.isfinite(hours_per_frame) or hours_per_frame <= 0:
            raise ValueError(f"the frame interval must be a positive number of hours, got {hours_per_frame!r}")
        return float(frame.frame) * float(hours_per_frame), "h"
    if "hours" in frame.meta:
        return float(frame.meta["hours"]), "h"
    return float(frame.frame), "frame"


def cell_rows(frame: FrameInstances, um_per_px: float | None = None) -> list[dict]:
    """One row per cell of ``frame``: its area, equivalent diameter and shared fraction.

    Args:
        frame: the cells (``masks`` (N, H, W) bool, amodal).
        um_per_px: pixel size in µm; ``None`` takes ``frame.meta["um_per_px"]``
            or leaves the figures in pixels.

    Returns:
        dicts with ``cell`` (0-based index in the frame), ``track_id``,
        ``score``, ``area`` (µm² or px²), ``diameter`` (µm or px),
        ``shared_fraction`` (0..1) and ``unit`` ("um" or "px").
    """
    size = _pixel_size(frame, um_per_px)
    scale, unit = (size, "um") if size is not None else (1.0, "px")
    areas_px = frame.masks.sum(axis=(1, 2), dtype=np.float64)  # (N,)
    if len(frame):
        crowded = frame.masks.sum(0) >= 2  # (H, W): pixels inside two or more cells
        shared_px = (frame.masks & crowded).sum(axis=(1, 2))
    else:
        shared_px = np.zeros(0)
    rows = []
    for i in range(len(frame)):
        area = areas_px[i] * scale**2
        rows.append({
            "cell": i,
            "track_id": int(frame.track_ids[i]),
            "score": round(float(frame.scores[i]), 4),
            "area": area,
            "diameter": 2.0 * math.sqrt(area / math.pi),
            "shared_fraction": float(shared_px[i] / areas_px[i]) if areas_px[i] else 0.0,
            "unit": unit,
        })
    return rows


def cleavage_times(counts: Sequence[int], times: Sequence[float], max_cells: int = 8,
                   persist: int = 2) -> list[dict]:
    """Cleavage times ``t2 ... t<max_cells>`` of one time-lapse from its cell counts.

    ``t_n`` is the time of the first frame from which the count stays ``>= n``
    for ``persist`` frames in a row (or up to the last frame, when fewer are
    left): with ``persist`` > 1 one frame that over-counts by mistake does not
    set it. A count that jumps (2 -> 4) sets ``t3`` and ``t4`` together.

    Args:
        counts: cells per frame, in time order (T,).
        times: the frames' times (T,), hours or frame indices.
        max_cells: the last ``n`` reported.
        persist: frames the count must hold (>= 1).

    Returns:
        one dict per ``n`` in ``2..max_cells``: ``cells``, ``time`` and
        ``frame`` (position in ``counts``; both ``None`` when never reached)
        and ``note``: "" when the division was seen, "at or before the first
        frame" when the first frame already had ``n`` cells (the time is an
        upper bound) or "not reached".
    """
    if persist < 1:
        raise ValueError(f"persist must be at least 1 frame, got {persist}")
    c = np.asarray(counts, dtype=np.int64)
    if len(times) != len(c):
        raise ValueError(f"{len(c)} counts but {len(times)} times")
    rows = []
    for n in range(2, max_cells + 1):
        at = None
        for t in range(len(c)):
            if np.all(c[t:t + persist] >= n):
                at = t
                break
        if at is None:
            rows.append({"cells": n, "time": None, "frame": None, "note": "not reached"})
        else:
            rows.append({"cells": n, "time": float(times[at]), "frame": at,
                         "note": "at or before the first frame" if at == 0 else ""})
    return rows


@dataclass
class Measurements:
    """The tables of :func:`measure`, as lists of dict rows (one key per column)."""

    cells: list[dict]
    frames: list[dict]
    cleavage: list[dict]

    def summary(self) -> str:
        """A few lines for a terminal: cells per frame and the cleavage times per time-lapse."""
        lines = []
        for name in dict.fromkeys(r["file"] for r in self.frames):
            counts = [r["cells"] for r in self.frames if r["file"] == name]
            lines.append(f"{name or '(unnamed)'}: cells per frame {' '.join(map(str, counts))}")
            parts = []
            for r in self.cleavage:
                if r["file"] != name or r["time"] is None:
                    continue
                mark = "<=" if r["note"] else "="
                parts.append(f"t{r['cells']}{mark}{r['time']:g}{' h' if r['time_unit'] == 'h' else ''}")
            lines.append("  cleavage: " + (" ".join(parts) if parts else "none seen"))
        return "\n".join(lines)


def measure(frames: Sequence[FrameInstances], um_per_px: float | None = None,
            hours_per_frame: float | None = None, score_threshold: float | None = None,
            max_cells: int = 8, persist: int = 2) -> Measurements:
    """Measure cells, frames and cleavage times of one or more time-lapses.

    Frames are grouped by ``file_name`` (one group per time-lapse) and ordered
    by ``frame`` within it.

    Args:
        frames: amodal instances, e.g. predictions read with ``read_amodal``.
        um_per_px: pixel size in µm (default: each frame's ``meta`` or pixels).
        hours_per_frame: frame interval in hours (default: each frame's
            ``meta["hours"]`` or frame indices).
        score_threshold: drop cells scored below it first (default: keep all).
        max_cells, persist: see :func:`cleavage_times`.
    """
    groups: dict[str, list[FrameInstances]] = {}
    for f in frames:
        groups.setdefault(f.file_name, []).append(f)
    cells, frame_rows, cleavage = [], [], []
    for name, group in groups.items():
        group = sorted(group, key=lambda f: f.frame)
        counts, times = [], []
        for f in group:
            if score_threshold is not None:
                f = f.select(f.scores >= score_threshold)
            time, time_unit = _frame_time(f, hours_per_frame)
            rows = cell_rows(f, um_per_px)
            for r in rows:
                cells.append({"file": name, "frame": f.frame, "time": time, "time_unit": time_unit, **r})
            areas = np.array([r["area"] for r in rows])
            diameters = [r["diameter"] for r in rows]
            unit = rows[0]["unit"] if rows else ("um" if _pixel_size(f, um_per_px) is not None else "px")
            frame_rows.append({
                "file": name, "frame": f.frame, "time": time, "time_unit": time_unit, "cells": len(rows),
                "mean_area": float(areas.mean()) if len(rows) else None,
                "area_cv": float(areas.std() / areas.mean()) if len(rows) >= 2 else None,
                "min_diameter": min(diameters) if rows else None,
                "max_diameter": max(diameters) if rows else None,
                "unit": unit,
            })
            counts.append(len(rows))
            times.append(time)
        unit = frame_rows[-1]["time_unit"]
        for r in cleavage_times(counts, times, max_cells=max_cells, persist=persist):
            frame = group[r["frame"]].frame if r["frame"] is not None else None
            cleavage.append({"file": name, **r, "frame": frame, "time_unit": unit})
    return Measurements(cells, frame_rows, cleavage)


_COLUMNS = {
    "cells": ["file", "frame", "time", "time_unit", "cell", "track_id", "score", "area", "diameter",
              "shared_fraction", "unit"],
    "frames": ["file", "frame", "time", "time_unit", "cells", "mean_area", "area_cv", "min_diameter",
               "max_diameter", "unit"],
    "cleavage": ["file", "cells", "time", "time_unit", "frame", "note"],
}


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]))
                    for k in columns})
    return buf.getvalue()


def write_measurements(m: Measurements, out_dir, stem: str) -> list[Path]:
    """Write ``STEM_cells.csv``, ``STEM_frames.csv`` and ``STEM_cleavage.csv`` into ``out_dir``.

    Each file is written atomically (a failure leaves an earlier file intact).
    Empty cells in a row mean "not defined" (e.g. ``area_cv`` of a one-cell frame).
    """
    from .data.coco import atomic_write_text

    out = Path(out_dir)
    paths = []
    for table, columns in _COLUMNS.items():
        path = out / f"{stem}_{table}.csv"
        atomic_write_text(path, _csv_text(getattr(m, table), columns))
        paths.append(path)
    return paths
