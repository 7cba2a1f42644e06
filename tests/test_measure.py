"""Measurements from amodal instances: exact figures on hand-made frames and the CLI."""

import csv
import math

import numpy as np
import pytest

from napari_amodal.cli import main
from napari_amodal.data.coco import write_coco
from napari_amodal.instances import FrameInstances
from napari_amodal.measure import (
    cell_rows,
    cleavage_times,
    measure,
    morphokinetics,
    uncertain_frames,
    write_measurements,
)

CATS = [{"id": 1, "name": "cell"}]


def squares(*specs, shape=(40, 40), **kwargs):
    """A frame of axis-aligned squares, each (y, x, side) in pixels."""
    masks = np.zeros((len(specs), *shape), bool)
    for m, (y, x, side) in zip(masks, specs):
        m[y:y + side, x:x + side] = True
    return FrameInstances.from_masks(masks, shape=shape, **kwargs)


def test_cell_rows_areas_diameters_and_shared_fraction():
    # 10x10 and 10x20 squares sharing a 10x5 strip; a lone 4x4 square
    f = squares((0, 0, 10), (0, 5, 10), (30, 30, 4))
    f.masks[1, :10, 5:25] = True
    rows = cell_rows(f)
    assert [r["area"] for r in rows] == [100, 200, 16]
    assert [r["shared_fraction"] for r in rows] == [0.5, 0.25, 0.0]
    assert rows[2]["diameter"] == pytest.approx(2 * math.sqrt(16 / math.pi))
    assert {(r["area_unit"], r["length_unit"]) for r in rows} == {("px2", "px")}
    um = cell_rows(f, um_per_px=0.5)
    assert [r["area"] for r in um] == [25, 50, 4] and {(r["area_unit"], r["length_unit"]) for r in um} == {("um2", "um")}
    f.meta["um_per_px"] = 2.0  # from the frame when not given
    assert [r["area"] for r in cell_rows(f)] == [400, 800, 64]
    with pytest.raises(ValueError, match="pixel size"):
        cell_rows(f, um_per_px=0.0)


def test_cleavage_times_first_frames_held_and_jumps():
    counts = [2, 2, 3, 2, 4, 4, 5, 8]
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    one = {r["cells"]: r for r in cleavage_times(counts, times, persist=1)}
    assert one[2]["time"] == 0.0 and one[2]["note"] == "at or before the first measured frame"
    assert one[2]["previous_frame"] is None
    assert one[3]["frame"] == 2 and one[3]["note"] == ""  # the first frame with 3, even though it drops back
    assert one[3]["previous_frame"] == 1
    assert one[4]["time"] == 2.0 and one[5]["time"] == 3.0
    assert one[6]["frame"] == one[7]["frame"] == one[8]["frame"] == 7  # 5 -> 8 sets t6, t7, t8 together
    two = {r["cells"]: r for r in cleavage_times(counts, times, persist=2)}
    assert two[3]["frame"] == 4  # the lone 3 at frame 2 is not held
    assert two[5]["frame"] == 6  # 5, 8 holds >= 5 for two frames
    assert two[8]["frame"] == 7 and two[8]["note"] == "unconfirmed: fewer than 2 frames left"  # last frame only
    assert two[6]["frame"] == 7 and two[6]["note"].startswith("unconfirmed")
    assert cleavage_times([2, 5], [0, 1], persist=3)[1]["note"].startswith("unconfirmed")
    short = cleavage_times([2, 3], [0, 1], max_cells=4)
    assert short[2] == {"cells": 4, "time": None, "frame": None, "previous_frame": None, "note": "not reached"}
    with pytest.raises(ValueError):
        cleavage_times([2], [0, 1])
    with pytest.raises(ValueError):
        cleavage_times([2], [0], persist=0)


def _kinetics(counts, times, unit="h", cv=None, persist=1):
    rows = cleavage_times(counts, times, persist=persist)
    return morphokinetics(counts, times, rows, cv or [None] * len(counts), unit, persist=persist)


def test_morphokinetics_intervals_synchrony_and_flags():
    # hours after insemination: t2 = 26, t3 = 37, t4 = 38, t5 = 50, t8 = 53
    counts = [1, 1, 2, 2, 3, 4, 4, 5, 6, 7, 8]
    times = [20.0, 24.0, 26.0, 30.0, 37.0, 38.0, 45.0, 50.0, 51.0, 52.0, 53.0]
    cv = [None, None, 0.1, 0.3, 0.2, 0.05, 0.15, 0.2, 0.2, 0.2, 0.4]
    k = _kinetics(counts, times, cv=cv)
    assert (k["t2"], k["t3"], k["t4"], k["t5"], k["t8"]) == (26.0, 37.0, 38.0, 50.0, 53.0)
    assert (k["cc2"], k["s2"], k["s3"]) == (11.0, 1.0, 3.0)
    assert k["direct_cleavage"] is False and k["reverse_cleavage"] is False and k["reverse_frame"] is None
    assert k["evenness_2"] == pytest.approx(0.2) and k["evenness_4"] == pytest.approx(0.1)
    assert k["evenness_8"] == pytest.approx(0.4)
    # one cell into three: t3 - t2 under 5 h
    direct = _kinetics([1, 2, 3, 3], [20.0, 26.0, 29.0, 33.0])
    assert direct["cc2"] == 3.0 and direct["direct_cleavage"] is True
    # frame indices: only 1 -> 3 within one frame is direct; 2 -> 4 in one frame is synchronous
    assert _kinetics([1, 1, 3, 3], [0, 1, 2, 3], unit="frame")["direct_cleavage"] is True
    assert _kinetics([1, 2, 4, 4], [0, 1, 2, 3], unit="frame")["direct_cleavage"] is False
    assert _kinetics([2, 3, 3], [0, 1, 2], unit="frame")["direct_cleavage"] is False  # starts at 2 cells
    # reverse cleavage: 4 cells fall back to 3 and stay (persist 2); one frame of 3 is not enough
    rev = _kinetics([2, 4, 4, 3, 3, 3], list(range(6)), unit="frame", persist=2)
    assert rev["reverse_cleavage"] is True and rev["reverse_frame"] == 3
    assert _kinetics([2, 4, 3, 4, 4], list(range(5)), unit="frame", persist=2)["reverse_cleavage"] is False
    assert _kinetics([2, 4, 0, 0, 4], list(range(5)), unit="frame", persist=2)["reverse_cleavage"] is False  # blank
    assert _kinetics([2, 3, 4], [0.0, 1.0, 2.0])["cc2"] is None  # t2 only bounded: at or before frame 0
    short = _kinetics([1, 2, 2], [0.0, 1.0, 2.0])
    assert short["t3"] is None and short["cc2"] is None and short["s3"] is None and short["direct_cleavage"] is False


def test_uncertain_frames_blips_drops_and_low_scores():
    counts = [2, 2, 3, 2, 2, 4, 4, 3, 3]
    scores = [0.9, 0.9, 0.9, 0.9, 0.55, 0.9, 0.9, 0.9, 1.0]
    # frame 2: a one-frame 3; 3: falls from 3; 4: a cell at 0.55; 7: 4 -> 3
    assert uncertain_frames(counts, scores) == [2, 3, 4, 7]
    assert uncertain_frames([2, 3, 4], [1.0, 1.0, 1.0]) == []  # steady growth is no doubt


def test_measure_groups_time_lapses_and_frame_table():
    a0 = squares((0, 0, 10), (20, 20, 20), file_name="a.tif", frame=0)
    a1 = squares((0, 0, 10), (20, 20, 10), (0, 20, 10), file_name="a.tif", frame=1)
    b0 = squares((5, 5, 6), file_name="b.tif", frame=0)
    b1 = FrameInstances.empty((40, 40), file_name="b.tif", frame=1)  # a frame without cells
    m = measure([a1, b0, b1, a0], hours_per_frame=0.25)  # out of order on purpose
    fa = [r for r in m.frames if r["file"] == "a.tif"]
    assert [(r["frame"], r["time"], r["cells"]) for r in fa] == [(0, 0.0, 2), (1, 0.25, 3)]
    # areas 100 and 400: mean 250, population std 150
    assert fa[0]["mean_area"] == 250 and fa[0]["area_cv"] == pytest.approx(150 / 250)
    assert fa[1]["area_cv"] == 0.0  # three equal cells
    fb = [r for r in m.frames if r["file"] == "b.tif"]
    assert fb[0]["cells"] == 1 and fb[0]["area_cv"] is None
    assert fb[1]["cells"] == 0 and fb[1]["mean_area"] is None and fb[1]["length_unit"] == "px"
    t3 = next(r for r in m.cleavage if r["file"] == "a.tif" and r["cells"] == 3)
    assert (t3["frame"], t3["time"], t3["time_unit"]) == (1, 0.25, "h")
    # frame indices, not list positions, in the table; times from a start time (hours after insemination)
    a5 = squares((0, 0, 10), (20, 20, 10), (0, 20, 10), (20, 0, 10), file_name="a.tif", frame=5)
    m2 = measure([a0, a5, a1], hours_per_frame=0.5, start_hours=24.0, persist=1)
    t4 = next(r for r in m2.cleavage if r["cells"] == 4)
    assert (t4["frame"], t4["previous_frame"], t4["time"]) == (5, 1, 26.5)
    with pytest.raises(ValueError, match="given twice"):
        measure([a0, a0])
    assert len([r for r in m.cells if r["file"] == "a.tif"]) == 5
    # score threshold drops cells before anything is counted
    a0.scores = np.array([0.9, 0.3], np.float32)
    assert measure([a0], score_threshold=0.5).frames[0]["cells"] == 1
    assert "t2" not in measure([a0], score_threshold=0.5).summary()
    with pytest.raises(ValueError, match="between 0 and 1"):
        measure([a0], score_threshold=float("nan"))


def test_time_units_are_decided_per_time_lapse_and_bad_metadata_is_named():
    a = [squares((0, 0, 10), file_name="a.tif", frame=t) for t in range(3)]
    for t, f in enumerate(a):
        f.meta["hours"] = 20.0 + t
    assert [r["time"] for r in measure(a).frames] == [20.0, 21.0, 22.0]
    del a[1].meta["hours"]  # one frame without: the whole time-lapse falls back to frame indices
    m = measure(a)
    assert [(r["time"], r["time_unit"]) for r in m.frames] == [(0.0, "frame"), (1.0, "frame"), (2.0, "frame")]
    assert {r["time_unit"] for r in m.cleavage} == {"frame"}
    a[1].meta["hours"] = "noon"
    with pytest.raises(ValueError, match="a.tif, frame 1"):
        measure(a)
    a[1].meta = {"um_per_px": None, "hours": 21.0}
    a[2].meta["um_per_px"] = "0.4 um"
    with pytest.raises(ValueError, match="pixel size.*a.tif, frame 2"):
        measure(a)


def test_measure_on_synthetic_ground_truth_reads_hours_and_pixel_size():
    from napari_amodal.data.embryo import render_sequence

    _, frames = render_sequence(7, n_frames=12, size=160, start_cells=2, end_cells=4)
    m = measure(frames, persist=1)
    counts = [len(f) for f in frames]
    for r in m.cleavage:
        first = next((t for t, c in enumerate(counts) if c >= r["cells"]), None)
        if first is None:
            assert r["time"] is None
        else:
            assert r["time"] == frames[first].meta["hours"] and r["time_unit"] == "h"
    f = frames[-1]
    areas = [r["area"] for r in m.cells if r["frame"] == f.frame]
    assert areas == pytest.approx(f.areas * f.meta["um_per_px"] ** 2)


def test_write_measurements_is_atomic(tmp_path, monkeypatch):
    m = measure([squares((0, 0, 10), (20, 20, 10), file_name="a.tif")])
    paths = write_measurements(m, tmp_path, "a")
    before = paths[0].read_text()
    from napari_amodal import atomic

    def broken(fh, *a):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "fsync", broken)
    with pytest.raises(OSError):
        write_measurements(measure([squares((0, 0, 5), file_name="a.tif")]), tmp_path, "a")
    assert paths[0].read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_cells.csv", "a_cleavage.csv", "a_frames.csv",
                                                          "a_morphokinetics.csv"]


def test_cli_measure_writes_csv_tables(tmp_path, capsys):
    frames = [squares((0, 0, 10), (20, 20, 10), file_name="e.tif", frame=0),
              squares((0, 0, 10), (20, 20, 10), (0, 20, 10), file_name="e.tif", frame=1),
              squares((0, 0, 10), (20, 20, 10), (0, 20, 10), (20, 0, 12), file_name="e.tif", frame=2)]
    write_coco(tmp_path / "pred.json", frames, CATS)
    rc = main(["measure", str(tmp_path / "pred.json"), "--out", str(tmp_path / "m"), "--um-per-px", "0.5",
               "--minutes-per-frame", "15", "--persist", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cells per frame 2 3 4" in out and "t3=0.25 h" in out
    frames_csv = list(csv.DictReader(open(tmp_path / "m" / "pred_frames.csv")))
    assert [r["cells"] for r in frames_csv] == ["2", "3", "4"]
    assert float(frames_csv[0]["mean_area"]) == 25.0 and frames_csv[0]["area_cv"] == "0"
    cells = list(csv.DictReader(open(tmp_path / "m" / "pred_cells.csv")))
    assert len(cells) == 9 and float(cells[-1]["area"]) == 36.0 and cells[-1]["area_unit"] == "um2"
    cleavage = {int(r["cells"]): r for r in csv.DictReader(open(tmp_path / "m" / "pred_cleavage.csv"))}
    assert float(cleavage[4]["time"]) == 0.5 and cleavage[5]["time"] == "" and cleavage[5]["note"] == "not reached"
    assert cleavage[4]["previous_frame"] == "1"
    (kin,) = csv.DictReader(open(tmp_path / "m" / "pred_morphokinetics.csv"))
    # 15 min a frame: t2 at or before frame 0 (so no cc2), t3 0.25 h, t4 0.5 h: s2 = 0.25 h
    assert (kin["t2"], kin["t3"], kin["t4"], kin["cc2"], kin["s2"], kin["s3"]) == ("0", "0.25", "0.5", "", "0.25", "")
    assert kin["direct_cleavage"] == "False" and kin["reverse_cleavage"] == "False" and kin["time_unit"] == "h"
    assert float(kin["evenness_2"]) == 0.0 and kin["evenness_8"] == ""
    assert "s2=0.25 h" in out and "cc2" not in out
    rc = main(["-q", "measure", str(tmp_path / "pred.json"), "--out", str(tmp_path / "m"), "--minutes-per-frame", "60",
               "--start-hours", "40"])
    assert rc == 0
    cleavage = {int(r["cells"]): r for r in csv.DictReader(open(tmp_path / "m" / "pred_cleavage.csv"))}
    assert cleavage[3]["time"] == "41" and cleavage[4]["time"] == "42" and cleavage[4]["note"].startswith("unconfirmed")


def test_cli_measure_bad_input(tmp_path, capsys):
    assert main(["measure", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["measure", str(tmp_path / "bad.json"), "--out", str(tmp_path)]) == 2
    write_coco(tmp_path / "ok.json", [squares((0, 0, 10), file_name="e.tif")], CATS)
    assert main(["measure", str(tmp_path / "ok.json"), "--out", str(tmp_path), "--minutes-per-frame", "0"]) == 2
    assert main(["measure", str(tmp_path / "ok.json"), "--out", str(tmp_path), "--persist", "0"]) == 2
    assert main(["measure", str(tmp_path / "ok.json"), "--out", str(tmp_path), "--start-hours", "24"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "persist" in err
    assert not (tmp_path / "ok_frames.csv").exists()
