import json

import numpy as np
import pytest
import tifffile
import torch

from napari_amodal.cli import main
from napari_amodal.data.coco import load_occlusion_maps, read_amodal
from napari_amodal.segment import Segmenter, frames_view
from tiny import save_untrained


def test_frames_view_shapes_and_errors():
    assert frames_view(np.zeros((20, 30), np.uint8))[0].shape == (1, 20, 30)
    assert frames_view(np.zeros((5, 20, 30), np.uint16))[0].shape == (5, 20, 30)
    v, axes = frames_view(np.arange(2 * 3 * 20 * 30, dtype=np.float32).reshape(2, 3, 20, 30), plane=2)
    assert v.shape == (2, 20, 30) and axes == "TYX"
    assert v[0, 0, 0] == 2 * 20 * 30  # plane 2 of frame 0
    assert frames_view(np.zeros((4, 20, 30, 3), np.uint8))[0].shape == (4, 20, 30, 3)
    with pytest.raises(ValueError, match="focal plane"):
        frames_view(np.zeros((2, 3, 20, 30), np.uint8), plane=5)
    five = np.arange(2 * 3 * 2 * 20 * 30, dtype=np.uint16).reshape(2, 3, 2, 20, 30)  # T, Z, C, Y, X
    v, axes = frames_view(five, channel=1)
    assert v.shape == (2, 20, 30) and axes == "TYX" and v[1, 0, 0] == five[1, 1, 1, 0, 0]
    v, _ = frames_view(np.moveaxis(five, 2, 1), axes="TCZYX", plane=0)  # OME order: C before Z
    assert v[1, 0, 0] == five[1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="channel 2 is outside 0..1"):
        frames_view(five, channel=2)
    with pytest.raises(ValueError, match="cannot interpret"):
        frames_view(np.zeros((2, 2, 2, 2, 20, 30), np.uint8))
    with pytest.raises(ValueError, match="integer or float"):
        frames_view(np.zeros((20, 30), bool))
    with pytest.raises(ValueError, match="too small"):
        frames_view(np.zeros((3, 4), np.uint8), axes="YX")


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    path = save_untrained(tmp_path_factory.mktemp("m") / "tiny.safetensors")
    return Segmenter.load(path, device="cpu", score_threshold=0.0)


def test_segment_is_a_progress_generator(segmenter):
    stack = (np.random.default_rng(0).random((3, 96, 96)) * 255).astype(np.uint8)
    gen = segmenter.segment(stack, file_name="s.tif")
    seen = []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [f.frame for f in result] == [0, 1, 2]
    for f in result:
        assert f.shape == (96, 96) and f.file_name == "s.tif"
        assert f.occlusion is not None and f.occlusion.shape == (96, 96)
        assert ((0 <= f.occlusion) & (f.occlusion <= 1)).all()


def test_stopping_keeps_frames_done(segmenter):
    stack = np.zeros((5, 64, 64), np.uint8)
    gen = segmenter.segment(stack)
    next(gen), next(gen), next(gen)
    gen.close()
    assert [f.frame for f in segmenter.last_results] == [0, 1]


def test_cli_segment_writes_predictions(tmp_path):
    model = save_untrained(tmp_path / "tiny.safetensors")
    stack = (np.random.default_rng(1).random((2, 3, 80, 96)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "emb.tif", stack, photometric="minisblack", metadata={"axes": "TZYX"})
    rc = main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(tmp_path / "out"), "--model", str(model),
               "--device", "cpu", "--score-threshold", "0", "--plane", "1"])
    assert rc == 0
    frames, _ = read_amodal(tmp_path / "out" / "emb.json")
    assert [(f.file_name, f.frame) for f in frames] == [("emb.tif", 0), ("emb.tif", 1)]
    assert load_occlusion_maps(frames, tmp_path / "out" / "emb.json") == 2
    assert tifffile.imread(tmp_path / "out" / "emb_occlusion.tif").shape == (2, 80, 96)
    assert (tmp_path / "out" / "emb_overlay.png").stat().st_size > 0
    d = json.loads((tmp_path / "out" / "emb.json").read_text())
    assert all("score" in a for a in d["annotations"])


def test_cli_segment_missing_model_is_clear(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    rc = main(["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path), "--model", str(tmp_path / "nope.safetensors")])
    assert rc == 2 and "nope.safetensors" in capsys.readouterr().err


def test_segment_never_overwrites_ground_truth(tmp_path, capsys):
    model = save_untrained(tmp_path / "tiny.safetensors")
    tifffile.imwrite(tmp_path / "emb.tif", np.zeros((2, 64, 64), np.uint8))
    (tmp_path / "emb.json").write_text('{"images": [], "annotations": [], "categories": []}')
    before = (tmp_path / "emb.json").read_bytes()
    rc = main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(tmp_path), "--model", str(model), "--device", "cpu"])
    assert rc == 2 and "was not written by" in capsys.readouterr().err
    assert (tmp_path / "emb.json").read_bytes() == before
    # its own earlier predictions may be replaced
    out = tmp_path / "out"
    for _ in range(2):
        assert main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(out), "--model", str(model), "--device", "cpu"]) == 0


def test_segmented_cells_carry_track_ids(segmenter, monkeypatch):
    stack = (np.random.default_rng(0).random((3, 96, 96)) * 255).astype(np.uint8)
    monkeypatch.setattr(segmenter, "mask_threshold", 0.0)  # untrained: keep every box-shaped mask
    frames = segmenter(np.repeat(stack[:1], 3, 0))  # the same frame three times: tracks persist
    assert len(frames[0]) > 0
    assert (frames[0].track_ids >= 1).all()
    assert sorted(frames[2].track_ids) == sorted(frames[0].track_ids)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_every_dtype_segments_like_its_8bit_twin(segmenter, monkeypatch, tmp_path, dtype):
    """Non-8-bit stacks used to crash (float64 reached the network); a 16-bit or
    float copy of an 8-bit image is normalised to the same input, so it gives the
    same cells; the CLI segments it."""
    monkeypatch.setattr(segmenter, "mask_threshold", 0.0)  # untrained: keep every box-shaped mask
    eight = (np.random.default_rng(2).random((2, 64, 64)) * 200 + 20).astype(np.uint8)
    eight[:, 0], eight[:, -1] = 0, 255  # > 0.1 % at each end: the copy's stretch equals the 8-bit scaling
    other = (eight.astype(np.float64) * 3 + 0.5).astype(dtype)
    a, b = segmenter(eight), segmenter(other)
    for fa, fb in zip(a, b):
        assert len(fa) > 0 and len(fa) == len(fb)
        np.testing.assert_allclose(fa.scores, fb.scores, atol=1e-4)
        np.testing.assert_allclose(fa.boxes, fb.boxes, atol=0.5)
    tifffile.imwrite(tmp_path / "other.tif", other)
    model = save_untrained(tmp_path / "tiny.safetensors")
    assert main(["-q", "segment", str(tmp_path / "other.tif"), "--out", str(tmp_path / "o"), "--model", str(model),
                 "--device", "cpu"]) == 0
    assert len(json.loads((tmp_path / "o" / "other.json").read_text())["images"]) == 2


def test_the_inference_path_imports_nothing_from_training(tmp_path):
    """segment -> models -> checkpoint -> model: the training package stays out."""
    import subprocess
    import sys

    model = save_untrained(tmp_path / "tiny.safetensors")
    code = ("import sys, numpy as np\nfrom napari_amodal.segment import Segmenter\n"
            f"s = Segmenter.load({str(model)!r}, device='cpu')\ns(np.zeros((1, 64, 64), np.uint8))\n"
            "print(sorted(m for m in sys.modules if m.startswith('napari_amodal.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_frames_without_cells_are_reported_not_invented(tmp_path, capsys):
    """A blank frame (no contrast) and frames where nothing is found carry their state in the JSON."""
    from napari_amodal.segment import frame_state

    assert frame_state(np.full((3, 32, 32), 0.5, np.float32), 0) == "blank"
    noisy = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    assert frame_state(noisy, 0) == "no_cells" and frame_state(noisy, 2) == "cells"
    model = save_untrained(tmp_path / "tiny.safetensors")
    stack = (np.random.default_rng(1).random((2, 64, 64)) * 255).astype(np.uint8)
    stack[1] = 128
    tifffile.imwrite(tmp_path / "e.tif", stack)
    assert main(["-q", "segment", str(tmp_path / "e.tif"), "--out", str(tmp_path / "o"), "--model", str(model),
                 "--device", "cpu", "--score-threshold", "1"]) == 0  # nothing passes: no cells anywhere
    images = json.loads((tmp_path / "o" / "e.json").read_text())["images"]
    assert [im["state"] for im in images] == ["no_cells", "blank"]
    assert "2 frame(s) without cells (1 blank" in capsys.readouterr().err
    frames, _ = read_amodal(tmp_path / "o" / "e.json")
    assert [f.meta["state"] for f in frames] == ["no_cells", "blank"]


class _ScriptedModel(torch.nn.Module):
    """Stands in for the network: frame k's image holds k in its first pixel; two disks,
    the first missed in frame 3, a spurious small one at 0.7 in frame 5."""

    def forward(self, images):
        from helpers import disk_mask

        outs = []
        for img in images:
            k = int(round(float(img[0, 0, 0]) * 255))
            cells = [((20, 20), 9, 0.95), ((44, 44), 9, 0.9)]
            if k == 3:
                cells = cells[1:]
            if k == 5:
                cells.append(((8, 56), 4, 0.7))
            masks = torch.stack([torch.from_numpy(disk_mask((64, 64), c, r)).float() for c, r, _ in cells])[:, None]
            outs.append({"boxes": torch.zeros(len(cells), 4), "labels": torch.ones(len(cells), dtype=torch.int64),
                         "scores": torch.tensor([s for *_, s in cells]), "masks": masks})
        return outs


def test_stacks_are_decoded_over_time_unless_per_frame():
    seg = Segmenter(_ScriptedModel(), device="cpu")
    stack = np.random.default_rng(0).integers(60, 200, (8, 64, 64)).astype(np.uint8)
    stack[:, 0, 0] = np.arange(8)
    stack[:, 0, -1], stack[:, -1, 0] = 0, 255  # the frame index survives normalisation as k / 255
    decoded, plain = seg(stack), seg(stack, temporal=False)
    assert [len(f) for f in plain] == [2, 2, 2, 1, 2, 3, 2, 2]
    assert [len(f) for f in decoded] == [2] * 8
    assert [int(f.inferred.sum()) for f in decoded] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert {int(t) for f in decoded for t in f.track_ids} == {1, 2}  # the carried cell kept its track
    assert len({int(t) for f in plain for t in f.track_ids}) > 2


class _SizedModel(torch.nn.Module):
    """Stands in for the network with a resizing transform: one disk of radius ``r`` (px of
    the frame) at the centre; records the input size each frame ran at."""

    def __init__(self, r):
        super().__init__()
        self.r, self.sizes = r, []
        self.transform = type("T", (), {"min_size": (224,), "max_size": 224})()

    def forward(self, images):
        from helpers import disk_mask

        self.sizes += [self.transform.max_size] * len(images)
        h, w = images[0].shape[-2:]
        n = 1 if self.r else 0
        masks = torch.from_numpy(disk_mask((h, w), (h // 2, w // 2), self.r or 1)).float()[None, None].repeat(n, 1, 1, 1)
        return [{"boxes": torch.zeros(n, 4), "labels": torch.ones(n, dtype=torch.int64),
                 "scores": torch.full((n,), 0.9), "masks": masks} for _ in images]


def test_the_trained_input_size_pair_is_kept_without_input_size():
    model = _SizedModel(40)
    model.transform.min_size, model.transform.max_size = (800,), 1333  # torchvision's defaults
    Segmenter(model, device="cpu")(np.zeros((2, 64, 64), np.uint8) + 9, temporal=False)
    assert model.sizes == [1333, 1333] and model.transform.min_size == (800,)
    auto = _SizedModel(0)
    auto.transform.min_size, auto.transform.max_size = (200,), 224
    Segmenter(auto, device="cpu", input_size="auto")(np.zeros((2, 64, 64), np.uint8) + 9, temporal=False)
    assert auto.transform.min_size == (200,) and auto.transform.max_size == 224  # restored after the stack


@pytest.mark.parametrize("radius, size", [(40, 320), (100, 224), (10, 384), (0, 224)])
def test_auto_input_size_brings_the_embryo_to_the_size_the_model_knows(radius, size):
    from napari_amodal.segment import EMBRYO_PX

    stack = np.random.default_rng(0).integers(0, 255, (6, 200, 200)).astype(np.uint8)
    model = _SizedModel(radius)
    seg = Segmenter(model, device="cpu", input_size="auto")
    frames = seg(stack, temporal=False)
    # 3 probe frames at the trained size, then the stack at the chosen one, then back
    assert model.sizes == [224] * 3 + [size] * 6 and model.transform.max_size == 224
    if radius == 40:  # a 80 px embryo in a 200 px frame is 90 px at 224: x 125 / 90 -> 312 -> 320
        assert EMBRYO_PX == 125
    assert len(frames) == 6
    fixed = _SizedModel(40)
    Segmenter(fixed, device="cpu", input_size=288)(stack[:2], temporal=False)
    assert fixed.sizes == [288, 288]  # a fixed size: no probe
    with pytest.raises(ValueError, match="input size"):
        Segmenter(_SizedModel(40), device="cpu", input_size=8)


def test_laptrack_linker_closes_the_gap_of_a_missed_cell(tmp_path):
    from napari_amodal.write import segment_files

    stack = np.random.default_rng(0).integers(60, 200, (8, 64, 64)).astype(np.uint8)
    stack[:, 0, 0] = np.arange(8)
    stack[:, 0, -1], stack[:, -1, 0] = 0, 255
    tifffile.imwrite(tmp_path / "e.tif", stack)
    seg = Segmenter(_ScriptedModel(), device="cpu")
    ids = {}
    for linker in ("overlap", "laptrack"):
        segment_files(seg, tmp_path / "e.tif", tmp_path / linker, temporal=False, linker=linker)
        frames = sorted(read_amodal(tmp_path / linker / "e.json")[0], key=lambda f: f.frame)
        # the disk at (20, 20): missed in frame 3
        ids[linker] = {int(f.track_ids[np.argmin(np.abs(f.boxes[:, 0] - 11))]) for f in frames if f.frame != 3}
    assert len(ids["overlap"]) == 2  # a new track after the gap
    assert len(ids["laptrack"]) == 1  # one track across it
    with pytest.raises(ValueError, match="linker"):
        segment_files(seg, tmp_path / "e.tif", tmp_path / "x", linker="nearest")


def test_pixel_size_and_frame_interval_from_the_tiff_reach_the_measurements(tmp_path):
    from napari_amodal.measure import measure
    from napari_amodal.write import segment_files

    stack = np.random.default_rng(0).integers(60, 200, (8, 64, 64)).astype(np.uint8)
    stack[:, 0, 0] = np.arange(8)
    stack[:, 0, -1], stack[:, -1, 0] = 0, 255
    tifffile.imwrite(tmp_path / "e.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "finterval": 900, "unit": "micron"})
    segment_files(Segmenter(_ScriptedModel(), device="cpu"), tmp_path / "e.tif", tmp_path / "o")
    frames = read_amodal(tmp_path / "o" / "e.json")[0]
    m = measure(frames)
    assert [r["time"] for r in m.frames] == [0.25 * t for t in range(8)] and m.frames[0]["time_unit"] == "h"
    disk = m.cells[0]
    assert disk["area_unit"] == "um2" and disk["area"] == pytest.approx(frames[0].areas[0] * 0.25)


def test_the_model_config_asks_for_the_auto_input_size():
    from napari_amodal.model import get_config

    config = get_config("lean").replace(auto_input_size=True)
    assert Segmenter(_SizedModel(40), device="cpu", config=config).input_size == "auto"
    assert Segmenter(_SizedModel(40), device="cpu", config=config, input_size="trained").input_size is None
    assert Segmenter(_SizedModel(40), device="cpu", config=get_config("lean")).input_size is None
    bundled = Segmenter.load("bundled", device="cpu")
    assert bundled.input_size == "auto" and bundled.config.auto_input_size


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be"):
        Segmenter(_SizedModel(10), device="cpu", precision="fp16")


def test_bfloat16_features_run_only_during_a_stack_and_boxes_stay_float32(tmp_path):
    from napari_amodal.models import load_model

    model, config, _ = load_model(save_untrained(tmp_path / "tiny.safetensors"), "cpu")
    seen = []
    model.backbone.register_forward_hook(
        lambda *_: seen.append((model.feature_dtype, torch.is_autocast_enabled("cpu"))))
    frames = (np.random.default_rng(0).random((3, 96, 96)) * 255).astype(np.uint8)
    out = Segmenter(model, "cpu", config=config, precision="bfloat16", score_threshold=0.0)(frames, temporal=False)
    assert seen and all(s == (torch.bfloat16, True) for s in seen)
    assert model.feature_dtype is None  # the shared model is as trained again
    assert all(p.is_contiguous() for p in model.parameters())  # and NCHW again after NHWC on the CPU
    assert all(f.boxes.dtype == np.float32 and f.masks.dtype == bool for f in out)

    x = torch.from_numpy(frames[:1].astype(np.float32) / 255).repeat(1, 3, 1, 1)
    with torch.inference_mode():
        full, _ = model.features(x)
        model.feature_dtype = torch.bfloat16
        low, _ = model.features(x)
    for k in full:  # float32 out, and close to the float32 features (bfloat16 keeps ~3 digits)
        assert low[k].dtype == torch.float32
        err = (low[k] - full[k]).abs().max() / full[k].abs().max()
        assert 0 < err < 0.05


def test_one_frame_at_a_time_and_batched_give_the_same_cells():
    from napari_amodal.data.sample import EMBRYO_STACK, sample_path

    frames = tifffile.imread(sample_path(EMBRYO_STACK))[::4]
    runs = [Segmenter.load("bundled", device="cpu", batch_size=b, precision="float32")(frames, temporal=False)
            for b in (1, 4)]
    one, four = runs
    assert [len(f) for f in one] == [len(f) for f in four] and sum(len(f) for f in one) > 0
    for a, b in zip(one, four):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        assert (a.masks != b.masks).mean() < 1e-4
