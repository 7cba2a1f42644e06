"""What embryologists measure, from amodal instances (pure numpy, no Qt).

- Per cell: area, equivalent diameter (of the disk with the same area) and the
  fraction of the cell's area that it shares with other cells (where the amodal
  masks overlap: the part that is, or hides, a neighbour).
- Per frame: cell count, mean area, size evenness ``area_cv = std(area) / mean(area)``
  over the cells of the frame (population std; lower = more even; blastomeres
  should be equal at 2, 4 and 8 cells) and smallest / largest diameter.
- Per time-lapse (one ``file_name``): cleavage times ``t2 ... t8``, the time at
  which ``n`` cells are first seen, and the morphokinetic parameters of the
  ESHRE time-lapse consensus derived from them: ``cc2 = t3 - t2`` (second cell
  cycle), ``s2 = t4 - t3`` and ``s3 = t8 - t5`` (synchrony of the second and
  third cycles), direct cleavage (one cell into three: ``t3 - t2 < 5 h``, or
  1 -> 3 in one frame when times are frame indices), reverse cleavage (the count
  falls below one already reached and stays there) and size evenness (median
  ``area_cv``) at 2, 4 and 8 cells.

Amodal masks are what make these right: the area of a partly hidden cell is its
whole area, not the visible part.

Units: lengths in µm and areas in µm² when the pixel size is known (the
``um_per_px`` argument, else ``frame.meta["um_per_px"]``), otherwise px and
px² (``length_unit`` / ``area_unit`` columns). Times (``time_unit``) in hours
when known: ``start_hours + frame x hours_per_frame`` when a frame interval is
given (set ``start_hours`` to the first frame's time after insemination to get
the embryologists' t2 ... t8), else ``frame.meta["hours"]`` when every frame of
the time-lapse has it; otherwise frame indices.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .instances import FrameInstances

__all__ = ["Measurements", "cell_rows", "cleavage_times", "measure", "morphokinetics", "uncertain_frames",
           "write_measurements"]

DIRECT_CLEAVAGE_HOURS = 5.0  # t3 - t2 below this: one cell divided into three (ESHRE consensus)


def _number(value, what: str, where: str) -> float:
    """``value`` as a positive finite float, or a ValueError that names it and where it came from."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r} ({where})") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{what} must be a positive number, got {value!r} ({where})")
    return x


def _where(frame) -> str:
    return f"{frame.file_name or 'unnamed'}, frame {frame.frame}"


def _pixel_size(frame, um_per_px: float | None) -> float | None:
    """µm per pixel: the argument, else ``frame.meta["um_per_px"]``, else None (pixels)."""
    if um_per_px is not None:
        return _number(um_per_px, "the pixel size (µm)", "given")
    if frame.meta.get("um_per_px") is None:
        return None
    return _number(frame.meta["um_per_px"], "the pixel size (µm)", f"{_where(frame)}: meta um_per_px")


def _group_times(group, hours_per_frame: float | None, start_hours: float) -> tuple[list[float], str]:
    """The times of one time-lapse's frames and their unit, decided once for the whole group:
    ``start_hours + frame x hours_per_frame`` when an interval is given, else every frame's
    ``meta["hours"]`` when all have one, else the frame indices ("frame")."""
    if hours_per_frame is not None:
        step = _number(hours_per_frame, "the frame interval (hours)", "given")
        return [float(start_hours) + f.frame * step for f in group], "h"
    if group and all(f.meta.get("hours") is not None for f in group):
        times = []
        for f in group:
            try:
                times.append(float(f.meta["hours"]))
            except (TypeError, ValueError):
                raise ValueError(f"meta hours must be a number, got {f.meta['hours']!r} ({_where(f)})") from None
        return times, "h"
    return [float(f.frame) for f in group], "frame"


def cell_rows(frame: FrameInstances, um_per_px: float | None = None) -> list[dict]:
    """One row per cell of ``frame``: its area, equivalent diameter and shared fraction.

    Args:
        frame: the cells (``masks`` (N, H, W) bool, amodal).
        um_per_px: pixel size in µm; ``None`` takes ``frame.meta["um_per_px"]``
            or leaves the figures in pixels.

    Returns:
        dicts with ``cell`` (0-based index in the frame), ``track_id``,
        ``score``, ``area`` (µm² or px²), ``diameter`` (µm or px),
        ``shared_fraction`` (0..1), ``area_unit`` ("um2" or "px2") and
        ``length_unit`` ("um" or "px").
    """
    size = _pixel_size(frame, um_per_px)
    scale, unit = (size, "um") if size is not None else (1.0, "px")
    units = {"area_unit": unit + "2", "length_unit": unit}
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
            **units,
        })
    return rows


def cleavage_times(counts: Sequence[int], times: Sequence[float], max_cells: int = 8,
                   persist: int = 2) -> list[dict]:
    """Cleavage times ``t2 ... t<max_cells>`` of one time-lapse from its cell counts.

    ``t_n`` is the time of the first frame from which the count stays ``>= n``
    for ``persist`` measured frames in a row: one frame that over-counts by
    mistake does not set it. A count that jumps (2 -> 4) sets ``t3`` and ``t4``
    together. The division happened between the previous measured frame and
    this one (``previous_frame``).

    Args:
        counts: cells per measured frame, in time order (T,).
        times: the frames' times (T,), hours or frame indices.
        max_cells: the last ``n`` reported.
        persist: measured frames the count must hold (>= 1).

    Returns:
        one dict per ``n`` in ``2..max_cells``: ``cells``, ``time``, ``frame``
        (position in ``counts``) and ``previous_frame`` (position before it;
        all ``None`` when never reached) and ``note``: "" when the division was
        seen; "at or before the first measured frame" (the time is an upper
        bound); "unconfirmed: fewer than PERSIST frames left" (reached only in
        the last frames, too few to hold the count); "not reached".
    """
    if persist < 1:
        raise ValueError(f"persist must be at least 1 frame, got {persist}")
    c = np.asarray(counts, dtype=np.int64)
    if len(times) != len(c):
        raise ValueError(f"{len(c)} counts but {len(times)} times")
    rows = []
    for n in range(2, max_cells + 1):
        held = [t for t in range(len(c) - persist + 1) if np.all(c[t:t + persist] >= n)]
        tail = [t for t in range(max(len(c) - persist + 1, 0), len(c)) if np.all(c[t:] >= n)]
        if held:
            at, note = held[0], ("at or before the first measured frame" if held[0] == 0 else "")
        elif tail:
            at, note = tail[0], f"unconfirmed: fewer than {persist} frames left"
        else:
            rows.append({"cells": n, "time": None, "frame": None, "previous_frame": None, "note": "not reached"})
            continue
        rows.append({"cells": n, "time": float(times[at]), "frame": at, "previous_frame": at - 1 if at else None,
                     "note": note})
    return rows


def _first_drop(counts: np.ndarray, reached: np.ndarray, persist: int) -> int | None:
    """Position of the first frame from which the count stays below a count already
    reached (``reached[t]``: the highest ``n`` whose ``t_n`` is at or before ``t``)
    for ``persist`` frames, with cells still seen; None if the count never falls back."""
    for t in range(1, len(counts) - persist + 1):
        window = counts[t:t + persist]
        if np.all(window < reached[t - 1]) and np.all(window > 0):
            return t
    return None


def morphokinetics(counts: Sequence[int], times: Sequence[float], cleavage: Sequence[dict],
                   area_cv: Sequence[float | None], time_unit: str, persist: int = 2) -> dict:
    """The morphokinetic parameters of one time-lapse.

    Args:
        counts: cells per measured frame in time order (T,).
        times: the frames' times (T,) in ``time_unit`` ("h" or "frame").
        cleavage: the rows of :func:`cleavage_times` for these counts (``cells``, ``time``,
            ``frame``: position in ``counts``), ``n`` from 2 up.
        area_cv: size evenness of each frame (T,), None where undefined.
        time_unit: "h" or "frame"; durations are in this unit.
        persist: frames a fall in the count must hold to flag reverse cleavage.

    Returns:
        ``t2 ... t8`` (None where not reached, as in ``cleavage``), ``cc2``, ``s2``,
        ``s3`` (None where a time is missing or its start is only known to be at or
        before the first frame), ``direct_cleavage`` (bool),
        ``reverse_cleavage`` (bool) with ``reverse_frame`` (position in ``counts`` of
        the first frame of the fall, or None), ``evenness_2/4/8`` (median
        ``area_cv`` over the frames with exactly that many cells, None if none) and
        ``time_unit``.
    """
    t = {r["cells"]: r["time"] for r in cleavage}
    at = {r["cells"]: r["frame"] for r in cleavage}
    # a time "at or before the first frame" is only a bound: no interval starts from it
    censored = {r["cells"] for r in cleavage if r["frame"] == 0}

    def span(a: int, b: int) -> float | None:
        return None if t.get(a) is None or t.get(b) is None or a in censored else t[b] - t[a]

    c = np.asarray(counts, dtype=np.int64)
    cc2 = span(2, 3)
    if time_unit == "h":
        direct = cc2 is not None and cc2 < DIRECT_CLEAVAGE_HOURS
    else:  # frame indices: only what one frame shows, 1 cell before and 3 or more after
        f3 = at.get(3)
        direct = f3 is not None and f3 > 0 and at.get(2) == f3 and c[f3 - 1] == 1
    reached = np.zeros(len(c), dtype=np.int64)
    for n, f in at.items():
        if f is not None:
            reached[f:] = np.maximum(reached[f:], n)
    drop = _first_drop(c, reached, persist) if len(c) else None
    row = {f"t{n}": t.get(n) for n in range(2, 9)}
    row.update(cc2=cc2, s2=span(3, 4), s3=span(5, 8), direct_cleavage=bool(direct),
               reverse_cleavage=drop is not None, reverse_frame=drop)
    for n in (2, 4, 8):
        cvs = [cv for k, cv in zip(c, area_cv) if k == n and cv is not None]
        row[f"evenness_{n}"] = float(np.median(cvs)) if cvs else None
    row["time_unit"] = time_unit
    return row


UNSURE_SCORE = 0.6  # a frame holding a cell scored below this is worth a look


def uncertain_frames(counts: Sequence[int], lowest_scores: Sequence[float], unsure_score: float = UNSURE_SCORE
                     ) -> list[int]:
    """Positions of the frames whose cell count deserves a look in proofreading.

    A frame is uncertain when its count differs from that of both neighbours, which agree
    (a one-frame change that the lineage does not explain), falls below the frame before (cells do not fuse),
    or it holds a cell scored below ``unsure_score`` (``lowest_scores``: per frame, the
    lowest score of its cells, 1 when it has none).
    """
    c = list(counts)
    out = []
    for t in range(len(c)):
        blip = 0 < t < len(c) - 1 and c[t - 1] == c[t + 1] != c[t]
        drop = t > 0 and c[t] < c[t - 1]
        if blip or drop or lowest_scores[t] < unsure_score:
            out.append(t)
    return out


@dataclass
class Measurements:
    """The tables of :func:`measure`, as lists of dict rows (one key per column)."""

    cells: list[dict]
    frames: list[dict]
    cleavage: list[dict]
    morphokinetics: list[dict] = field(default_factory=list)

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
                mark = "<=" if r["note"].startswith("at or before") else ("?=" if r["note"] else "=")
                parts.append(f"t{r['cells']}{mark}{r['time']:g}{' h' if r['time_unit'] == 'h' else ''}")
            lines.append("  cleavage: " + (" ".join(parts) if parts else "none seen"))
            for k in self.morphokinetics:
                if k["file"] == name:
                    lines.append("  " + _morpho_line(k))
        return "\n".join(lines)


def _morpho_line(k: dict) -> str:
    unit = " h" if k["time_unit"] == "h" else " frames"
    spans = [f"{name}={k[name]:g}{unit}" for name in ("cc2", "s2", "s3") if k[name] is not None]
    even = [f"{n} cells {k[f'evenness_{n}']:.2f}" for n in (2, 4, 8) if k[f"evenness_{n}"] is not None]
    flags = [name.replace("_", " ") for name in ("direct_cleavage", "reverse_cleavage") if k[name]]
    return "; ".join(filter(None, [" ".join(spans), ("size evenness (cv) " + ", ".join(even)) if even else "",
                                   ", ".join(flags)])) or "morphokinetics: none measurable"


def measure(frames, um_per_px: float | None = None, hours_per_frame: float | None = None,
            start_hours: float = 0.0, score_threshold: float | None = None, max_cells: int = 8,
            persist: int = 2) -> Measurements:
    """Measure cells, frames and cleavage times of one or more time-lapses.

    Frames are grouped by ``file_name`` (one group per time-lapse) and ordered
    by ``frame`` within it; only the frames given are measured (a frame left
    out is not counted as empty).

    Args:
        frames: :class:`FrameInstances`, or records with ``file_name``,
            ``frame`` and ``load()`` (``read_amodal(..., lazy=True)``: one
            frame's masks in memory at a time).
        um_per_px: pixel size in µm (default: each frame's ``meta`` or pixels).
        hours_per_frame: frame interval in hours (default: the frames'
            ``meta["hours"]`` or frame indices).
        start_hours: the time of frame 0 when ``hours_per_frame`` is given
            (e.g. hours after insemination).
        score_threshold: drop cells scored below it first (0..1; default: keep all).
        max_cells, persist: see :func:`cleavage_times`.
    """
    if int(max_cells) < 2:
        raise ValueError(f"max_cells must be at least 2 (t2 is the first cleavage time), got {max_cells}")
    if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"the score threshold must be between 0 and 1, got {score_threshold!r}")
    if not math.isfinite(start_hours):
        raise ValueError(f"the start time must be a number of hours, got {start_hours!r}")
    groups: dict[str, list] = {}
    for f in frames:
        groups.setdefault(f.file_name, []).append(f)
    cells, frame_rows, cleavage, kinetics = [], [], [], []
    for name, group in groups.items():
        group = sorted(group, key=lambda f: f.frame)
        dup = sorted({a.frame for a, b in zip(group, group[1:]) if a.frame == b.frame})
        if dup:
            raise ValueError(f"{name or 'unnamed'}: frame {dup[0]} is given twice")
        times, time_unit = _group_times(group, hours_per_frame, start_hours)
        counts = []
        for f, time in zip(group, times):
            if hasattr(f, "load"):  # a lazy record: decode its masks now
                f = f.load()
            if score_threshold is not None:
                f = f.select(f.scores >= score_threshold)
            size = _pixel_size(f, um_per_px)
            rows = cell_rows(f, size)
            where = {"file": name, "frame": f.frame, "time": time, "time_unit": time_unit}
            for r in rows:
                cells.append({**where, **r})
            areas = np.array([r["area"] for r in rows])
            diameters = [r["diameter"] for r in rows]
            unit = "um" if size is not None else "px"
            frame_rows.append({
                **where, "cells": len(rows),
                "mean_area": float(areas.mean()) if len(rows) else None,
                "area_cv": float(areas.std() / areas.mean()) if len(rows) >= 2 else None,
                "min_diameter": min(diameters) if rows else None,
                "max_diameter": max(diameters) if rows else None,
                "area_unit": unit + "2", "length_unit": unit,
            })
            counts.append(len(rows))
        rows = cleavage_times(counts, times, max_cells=max(max_cells, 8), persist=persist)
        k = morphokinetics(counts, times, rows, [r["area_cv"] for r in frame_rows[-len(group):]], time_unit,
                           persist=persist)
        if k["reverse_frame"] is not None:
            k["reverse_frame"] = group[k["reverse_frame"]].frame
        kinetics.append({"file": name, **k})
        for r in rows[:max_cells - 1]:
            frame = group[r["frame"]].frame if r["frame"] is not None else None
            previous = group[r["previous_frame"]].frame if r["previous_frame"] is not None else None
            cleavage.append({"file": name, **r, "frame": frame, "previous_frame": previous, "time_unit": time_unit})
    return Measurements(cells, frame_rows, cleavage, kinetics)


_COLUMNS = {
    "cells": ["file", "frame", "time", "time_unit", "cell", "track_id", "score", "area", "diameter",
              "shared_fraction", "area_unit", "length_unit"],
    "frames": ["file", "frame", "time", "time_unit", "cells", "mean_area", "area_cv", "min_diameter",
               "max_diameter", "area_unit", "length_unit"],
    "cleavage": ["file", "cells", "time", "time_unit", "frame", "previous_frame", "note"],
    "morphokinetics": ["file", "time_unit", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "cc2", "s2", "s3",
                       "direct_cleavage", "reverse_cleavage", "reverse_frame", "evenness_2", "evenness_4",
                       "evenness_8"],
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
    """Write ``STEM_cells.csv``, ``STEM_frames.csv``, ``STEM_cleavage.csv`` and
    ``STEM_morphokinetics.csv`` (one row per time-lapse) into ``out_dir``.

    Each file is written atomically (a failure leaves an earlier file intact).
    Empty cells in a row mean "not defined" (e.g. ``area_cv`` of a one-cell frame).
    """
    from .atomic import atomic_write_text

    out = Path(out_dir)
    paths = []
    for table, columns in _COLUMNS.items():
        path = out / f"{stem}_{table}.csv"
        atomic_write_text(path, _csv_text(getattr(m, table), columns))
        paths.append(path)
    return paths
