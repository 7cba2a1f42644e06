"""The README's main command: napari-amodal demo."""

import csv
import json

import pytest

import napari_amodal.models as models
from napari_amodal.cli import main
from napari_amodal.checkpoint import sha256
from tiny import save_untrained


def test_demo_without_a_model_shows_the_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path / "none")
    monkeypatch.setenv("NAPARI_AMODAL_HOME", str(tmp_path / "home"))
    assert main(["demo", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["round_trip"]["AP"] == pytest.approx(1.0)
    assert summary["damaged_copy"]["AP"] < 0.9
    assert (tmp_path / "out" / "overlay_montage.png").stat().st_size > 0


def test_demo_segments_with_the_bundled_model(tmp_path, monkeypatch, capsys):
    d = tmp_path / "pkg"
    d.mkdir()
    p = save_untrained(d / "bundled.safetensors")
    (d / "bundled.sha256").write_text(sha256(p) + "\n")
    monkeypatch.setattr(models, "BUNDLED_DIR", d)
    assert main(["-q", "demo", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"] == "bundled" and summary["frames"] == 20
    assert len(summary["cells_per_frame"]) == 20 and summary["true_cells_per_frame"][-1] == 8
    assert 0.0 <= (summary["metrics"]["AP"] or 0.0) <= 1.0
    for key in ("predictions", "occlusion_maps", "overlay_montage"):
        assert (tmp_path / "out").joinpath(summary[key]).exists()
    frames_csv = next(p for p in summary["measurements"] if p.endswith("_frames.csv"))
    rows = list(csv.DictReader(open(frames_csv)))
    assert [int(r["cells"]) for r in rows] == summary["cells_per_frame"]
