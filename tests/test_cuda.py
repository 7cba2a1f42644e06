"""The CUDA path: mixed-precision training, GPU inference that agrees with the CPU.

Skipped where no CUDA device is present (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

import json
import math

import numpy as np
import pytest
import tifffile
import torch
from tiny import save_untrained, tiny_config

from napari_amodal.data.sample import EMBRYO_GT, EMBRYO_STACK, sample_path
from napari_amodal.segment import Segmenter
from napari_amodal.train.finetune import finetune
from napari_amodal.train.loop import TrainSettings, train_detector
from napari_amodal.utils import drain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("head", ["fcn", "vq_refine"])
def test_amp_training_on_cuda_gives_finite_losses_and_a_cpu_loadable_model(tmp_path, head, monkeypatch):
    autocast, enabled = torch.autocast, []

    def spy(*args, **kwargs):  # records whether the training step ran under mixed precision
        enabled.append(kwargs.get("enabled", True))
        return autocast(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    settings = TrainSettings(iterations=4, batch_size=2, lr=0.005, warmup=1, checkpoint_every=2, device="cuda",
                             amp=True)
    init = save_untrained(tmp_path / "init.safetensors", tiny_config(head))  # vq_refine: with a random shape prior
    final = drain(train_detector(None, [sample_path(EMBRYO_GT)], tmp_path / "run", settings, init=init))
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert any(enabled)  # autocast was on for the steps
    frames = Segmenter.load(final, device="cpu")(tifffile.imread(sample_path(EMBRYO_STACK))[:1])
    assert frames[0].shape == (500, 500)


def test_bundled_model_on_cuda_agrees_with_cpu():
    stack = tifffile.imread(sample_path(EMBRYO_STACK))[:3]
    gpu = Segmenter.load("bundled", device="cuda")(stack)
    cpu = Segmenter.load("bundled", device="cpu")(stack)
    for g, c in zip(gpu, cpu):
        assert len(g) == len(c) and len(c) > 0
        for mg in g.masks:  # every GPU mask has a near-identical CPU mask
            inter = (mg[None] & c.masks).sum((1, 2))
            union = (mg[None] | c.masks).sum((1, 2))
            assert (inter / np.maximum(union, 1)).max() > 0.95


def test_finetune_on_cuda_yields_a_model_that_segments(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_AMODAL_HOME", str(tmp_path / "home"))
    final = drain(finetune("bundled", [sample_path(EMBRYO_GT)], tmp_path / "ft", iterations=3, device="cuda"))
    frames = Segmenter.load(final, device="cuda")(tifffile.imread(sample_path(EMBRYO_STACK))[:1])
    assert frames[0].shape == (500, 500) and len(frames[0]) > 0
