"""Fine-tuning on proofread frames (tiny model, a few iterations): data, result, stop, failure, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from tiny import save_untrained

from napari_amodal import project as core
from napari_amodal.data.coco import read_amodal
from napari_amodal.data.sample import EMBRYO_GT, EMBRYO_STACK, sample_path
from napari_amodal.models import list_models
from napari_amodal.segment import Segmenter
from napari_amodal.checkpoint import load_checkpoint, read_metadata
from napari_amodal.train.finetune import (
    SHAPE_PREFIX,
    FinetuneError,
    finetune,
    prepare_data,
)
from napari_amodal.utils import drain as run_to_end

COCO = sample_path(EMBRYO_GT)
FAST = {"iterations": 2, "lr": 0.002, "device": "cpu", "val_fraction": 0.1, "shape_iterations": 3}


def drain(gen):
    """(events, return value) of a training generator."""
    events = []
    return events, run_to_end(gen, events.append)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_AMODAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def init(tmp_path):
    return save_untrained(tmp_path / "init" / "tiny.safetensors")


def make_project(folder, reviewed=(1, 5, 9)):
    """A project on the bundled sample stack (saved in another folder) with some frames reviewed."""
    stack = tifffile.imread(sample_path(EMBRYO_STACK))
    frames, cats = read_amodal(COCO)
    sig = core.image_signature(stack, path=sample_path(EMBRYO_STACK))
    proj = core.AnnotationProject.from_frames(sig, frames, n_frames=len(stack), reviewed=reviewed, categories=cats)
    return core.save_project(folder / "cells.project.json", proj)


def test_prepare_data_uses_reviewed_frames_and_holds_some_out(tmp_path):
    path = make_project(tmp_path, reviewed=(1, 5, 9, 12))
    prepared = prepare_data([path], tmp_path / "data", val_fraction=0.25)
    assert (prepared.n_train, prepared.n_val) == (3, 1)
    train, _ = read_amodal(prepared.train)
    val, _ = read_amodal(prepared.val)
    assert sorted(f.frame for f in train + val) == [1, 5, 9, 12]
    assert all(f.file_name == str(sample_path(EMBRYO_STACK).resolve()) for f in train)


def project_on_copied_image(tmp_path):
    """The sample stack copied to tmp_path/emb.tif and a project on it (frames 1 and 5 reviewed)."""
    stack = tifffile.imread(sample_path(EMBRYO_STACK))
    tifffile.imwrite(tmp_path / "emb.tif", stack)
    frames, cats = read_amodal(COCO)
    sig = core.image_signature(stack, path=tmp_path / "emb.tif")
    proj = core.AnnotationProject.from_frames(sig, frames, n_frames=len(stack), reviewed=(1, 5), categories=cats)
    return stack, core.save_project(tmp_path / "cells.project.json", proj)


def test_a_project_whose_image_changed_is_not_trained_on(tmp_path):
    """The cells were drawn on the saved image's pixels: another image at that path is refused."""
    stack, path = project_on_copied_image(tmp_path)
    assert prepare_data([path], tmp_path / "ok", val_fraction=0.5).n_train == 1
    changed = stack.copy()
    changed[3] = 255 - changed[3]
    tifffile.imwrite(tmp_path / "emb.tif", changed)
    with pytest.raises(core.SignatureMismatchError, match="pixel values differ"):
        prepare_data([path], tmp_path / "data", val_fraction=0.5)


def test_finetune_saves_a_named_model_that_segments(tmp_path, init, home):
    project = make_project(tmp_path)
    events, path = drain(finetune(init, [project, COCO], tmp_path / "run", name="mine", **FAST))
    stages = [e.extra["stage"] for e in events]
    assert stages[0] == "baseline" and events[0].validation is not None
    assert [e.iteration for e in events if e.extra["stage"] == "train"] == [1, 2]
    assert events[-1].validation is not None and "AP" in events[-1].validation
    assert path == home / "models" / "mine.safetensors"
    assert list_models()["mine"] == path
    assert not any(k.startswith("__") for k in load_checkpoint(path)[0])  # no optimiser state in the result
    summary = json.loads((tmp_path / "run" / "finetune.json").read_text())
    assert summary["n_train"] + summary["n_val"] == 20  # frames 1, 5, 9 of the project are the sample's too
    frame = tifffile.imread(sample_path(EMBRYO_STACK))[:1]
    assert Segmenter.load("mine", device="cpu")(frame)[0].shape == (500, 500)


def test_stopped_run_keeps_a_usable_checkpoint(tmp_path, init):
    gen = finetune(init, [COCO], tmp_path / "run", **{**FAST, "iterations": 20, "validate_before": False})
    for _ in range(2):
        next(gen)
    gen.close()
    last = tmp_path / "run" / "last.safetensors"
    assert read_metadata(last)["extra"]["iteration"] == 2
    Segmenter.load(last, device="cpu")


def test_bad_inputs_fail_early_and_leave_models_intact(tmp_path, init, home):
    drain(finetune(init, [COCO], tmp_path / "run", name="mine", **{**FAST, "validate_before": False}))
    saved = {p: p.read_bytes() for p in [home / "models" / "mine.safetensors", tmp_path / "run" / "model.safetensors",
                                         tmp_path / "run" / "last.safetensors"]}
    # a second run may not reuse the first one's folder, nor silently replace its model
    with pytest.raises(FinetuneError, match="holds an earlier run"):
        drain(finetune(init, [COCO], tmp_path / "run", **FAST))
    with pytest.raises(FinetuneError, match="exists already"):
        drain(finetune(init, [COCO], tmp_path / "run2", name="mine", **FAST))
    again = {**FAST, "name": "mine", "overwrite": True}
    empty = make_project(tmp_path, reviewed=())
    with pytest.raises(FinetuneError, match="no reviewed frames in"):
        drain(finetune(init, [empty], tmp_path / "run3", **again))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.tif"}], "annotations": [], "categories": []}))
    with pytest.raises((FinetuneError, FileNotFoundError), match="bad.json|x.tif"):
        drain(finetune(init, [bad], tmp_path / "run4", **again))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        drain(finetune(init, [tmp_path / "missing.json"], tmp_path / "run5", **again))
    with pytest.raises(FinetuneError, match="model name"):
        drain(finetune(init, [COCO], tmp_path / "run6", name="bundled", **FAST))
    for p, data in saved.items():
        assert p.read_bytes() == data, p


def test_refit_vqvae_swaps_the_shape_model(tmp_path, init):
    _, path = drain(finetune(init, [COCO], tmp_path / "run", train="refit_vqvae",
                             **{**FAST, "validate_before": False}))
    before, after = load_checkpoint(init)[0], load_checkpoint(path)[0]
    keys = [k for k in before if k.startswith(SHAPE_PREFIX)]
    assert keys and any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in keys)
    assert (tmp_path / "run" / "shape.safetensors").exists()
    Segmenter.load(path, device="cpu")


def test_cli_finetune(tmp_path, init, home, capsys):
    from napari_amodal.cli import main

    project = make_project(tmp_path, reviewed=(2, 7, 11, 15, 19))
    rc = main(["-q", "finetune", "--init", str(init), "--data", str(project), "--out", str(tmp_path / "run"),
               "--iterations", "2", "--lr", "0.002", "--device", "cpu", "--name", "cli-model",
               "--replay-synthetic", "2", "--anchor", "0.3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "validation AP before" in out and "after" in out
    assert "cli-model.safetensors" in out and "cli-model" in list_models()
    assert len(json.loads((tmp_path / "run" / "finetune.json").read_text())["replay"]) == 1
    model = tmp_path / "run" / "model.safetensors"
    assert read_metadata(model)["config"]["settings"]["anchor"] == 0.3  # reached the training loop
    rc = main(["finetune", "--init", str(init), "--data", str(tmp_path / "nothing.json"), "--out",
               str(tmp_path / "run2")])
    assert rc == 2 and "nothing.json" in capsys.readouterr().err


def test_synthetic_replay_is_rendered_once_and_trained_on(tmp_path, init, monkeypatch):
    from napari_amodal.data import dataset as ds_mod
    from napari_amodal.train.finetune import synthetic_replay_data

    seen = []
    original = ds_mod.AmodalDataset.__getitem__

    def spy(self, index):
        seen.append(str(self.items[index][1].file_name))
        return original(self, index)

    monkeypatch.setattr(ds_mod.AmodalDataset, "__getitem__", spy)
    events, final = drain(finetune(init, [COCO], tmp_path / "run", **{**FAST, "iterations": 3, "val_fraction": 0.0},
                                   synthetic_replay=3, replay_fraction=1.0, validate_before=False))
    assert events[0].extra["stage"] == "replay" and events[0].extra["frames"] == 3
    summary = json.loads((tmp_path / "run" / "finetune.json").read_text())
    (replay,) = summary["replay"]
    frames, _ = read_amodal(replay)
    assert len(frames) == 3 and all(len(f) >= 2 for f in frames)
    # replay share 1: every training sample came from the synthetic frames
    assert seen and all("embryo_" in name for name in seen)
    images = sorted(Path(replay).parent.glob("*.tif"))
    mtimes = [p.stat().st_mtime_ns for p in images]
    assert synthetic_replay_data(tmp_path / "run" / "data" / "synthetic", 3) == Path(replay)
    assert [p.stat().st_mtime_ns for p in images] == mtimes  # reused, not re-rendered
    Segmenter.load(final, device="cpu")


def test_replay_rendering_can_stop_between_sequences_and_continue(tmp_path):
    """Rendering yields per sequence; closed after the first, the next call keeps that
    sequence (not re-rendered) and renders only the rest; the result is what one
    uninterrupted call gives."""
    from napari_amodal.train.finetune import SYNTHETIC_FRAMES_PER_SEQUENCE, synthetic_replay_steps

    n = SYNTHETIC_FRAMES_PER_SEQUENCE + 2  # two sequences
    steps = synthetic_replay_steps(tmp_path / "a", n)
    assert next(steps) == (0, 2) and next(steps) == (1, 2)
    steps.close()
    first = tmp_path / "a" / "seed5000" / "embryo_0000.tif"
    mtime = first.stat().st_mtime_ns
    assert not (tmp_path / "a" / "seed5000" / f"synthetic_{n}.json").exists()
    events = []
    path = run_to_end(synthetic_replay_steps(tmp_path / "a", n), events.append)
    assert events == [(0, 2), (1, 2), (2, 2)] and first.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".part_*"))
    whole = run_to_end(synthetic_replay_steps(tmp_path / "b", n))
    got, want = read_amodal(path)[0], read_amodal(whole)[0]
    assert len(got) == len(want) == n
    for g, w in zip(got, want):
        assert g.file_name == w.file_name and g.frame == w.frame
        assert (g.masks == w.masks).all()


@pytest.mark.parametrize("norm_stats", ["update", "frozen"])
def test_norm_stats_frozen_keeps_the_batch_norm_statistics_of_the_start(tmp_path, init, norm_stats):
    _, final = drain(finetune(init, [COCO], tmp_path / "run", **{**FAST, "iterations": 3, "val_fraction": 0.0},
                              norm_stats=norm_stats, validate_before=False))
    start, _, _ = load_checkpoint(init)
    end, _, _ = load_checkpoint(final)
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats  # the tiny model has batch-norm layers
    moved = [k for k in stats if not torch.equal(start[k], end[k])]
    weights_moved = [k for k in start if k.endswith(".weight") and not torch.equal(start[k], end[k])]
    assert weights_moved  # it trained in both cases
    assert (moved == []) == (norm_stats == "frozen")
    with pytest.raises(FinetuneError, match="norm_stats"):
        next(finetune(init, [COCO], tmp_path / "bad", **FAST, norm_stats="sometimes"))


def test_a_run_refused_for_its_data_leaves_no_folder(tmp_path, init):
    stack, path = project_on_copied_image(tmp_path)
    tifffile.imwrite(tmp_path / "emb.tif", 255 - stack)  # another image at the project's path
    with pytest.raises(core.SignatureMismatchError):
        drain(finetune(init, [path], tmp_path / "run", **FAST))
    assert not (tmp_path / "run").exists()
