"""Training plumbing on a tiny model: logs, checkpoints, resume, stop, failure."""

import json

import pytest
import tifffile
from tiny import tiny_config

from napari_amodal.data.sample import EMBRYO_GT, sample_path
from napari_amodal.segment import Segmenter
from napari_amodal.checkpoint import read_metadata
from napari_amodal.train.loop import TrainSettings, lr_at, train_detector
from napari_amodal.utils import drain as run_to_end

DATA = [sample_path(EMBRYO_GT)]


def drain(gen):
    """(events, return value) of a training generator."""
    events = []
    return events, run_to_end(gen, events.append)


def settings(iterations, **kw):
    return TrainSettings(**{"iterations": iterations, "batch_size": 1, "lr": 0.005, "warmup": 2,
                            "checkpoint_every": 2, "device": "cpu", "val_max_frames": 2, **kw})


def test_step_schedule():
    s = TrainSettings(iterations=1200, lr=0.04, warmup=0)
    assert lr_at(0, s) == pytest.approx(0.04)
    assert lr_at(1000, s) == pytest.approx(0.004)
    assert lr_at(1100, s) == pytest.approx(0.0004)


def test_train_logs_checkpoints_and_yields_a_loadable_model(tmp_path):
    events, final = drain(train_detector(tiny_config("fcn"), DATA, tmp_path, settings(3), val_sources=DATA))
    assert [e.iteration for e in events] == [1, 2, 3]
    assert set(events[0].losses) >= {"loss_objectness", "loss_classifier", "loss_mask", "loss_occlusion", "loss"}
    assert events[-1].validation is not None and "AP" in events[-1].validation
    rows = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3]
    assert any("validation" in r for r in rows)
    assert read_metadata(tmp_path / "last.safetensors")["extra"]["iteration"] == 3
    seg = Segmenter.load(final, device="cpu")
    frames = seg(tifffile.imread(sample_path("embryo_sample.tif"))[:1])
    assert len(frames) == 1 and frames[0].shape == (500, 500)


def test_resume_continues_where_it_stopped(tmp_path):
    drain(train_detector(tiny_config("fcn"), DATA, tmp_path, settings(2)))
    events, _ = drain(train_detector(tiny_config("fcn"), DATA, tmp_path, settings(4)))
    assert [e.iteration for e in events] == [3, 4]
    rows = [json.loads(x)["iteration"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]


def test_stop_keeps_a_usable_checkpoint(tmp_path):
    gen = train_detector(tiny_config("fcn"), DATA, tmp_path, settings(50))
    for _ in range(3):
        next(gen)
    gen.close()
    meta = read_metadata(tmp_path / "last.safetensors")
    assert meta["extra"]["iteration"] == 3
    Segmenter.load(tmp_path / "last.safetensors", device="cpu")  # a stopped run's checkpoint segments
    events, _ = drain(train_detector(tiny_config("fcn"), DATA, tmp_path, settings(4)))
    assert [e.iteration for e in events] == [4]
    rows = [json.loads(x)["iteration"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows == [1, 2, 3, 4]


def test_failing_run_leaves_earlier_checkpoints_intact(tmp_path):
    drain(train_detector(tiny_config("fcn"), DATA, tmp_path, settings(2)))
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.safetensors")}
    s = settings(6)
    s.lr = 1e12  # diverges
    with pytest.raises(FloatingPointError, match="learning rate"):
        drain(train_detector(tiny_config("fcn"), DATA, tmp_path, s))
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data, name


def test_shape_head_needs_a_shape_model(tmp_path):
    with pytest.raises(ValueError, match="shape model"):
        next(train_detector(tiny_config("vq_refine"), DATA, tmp_path, settings(1)))


def test_heads_training_keeps_the_frozen_backbone_exactly(tmp_path):
    """trainable='heads': the backbone's weights *and* batch-norm statistics stay those of
    the initial model (updating the statistics on a few new frames shifted every feature),
    while the heads do learn."""
    from tiny import save_untrained

    from napari_amodal.checkpoint import load_checkpoint

    init = save_untrained(tmp_path / "init.safetensors", tiny_config("fcn"))
    _, final = drain(train_detector(None, DATA, tmp_path / "run", settings(3, trainable="heads"), init=init))
    before = load_checkpoint(init)[0]
    after = load_checkpoint(final)[0]
    body = [k for k in before if k.startswith("backbone.body.")]
    assert any(k.endswith("running_mean") for k in body)
    for k in body:
        assert (before[k] == after[k]).all(), k
    assert any(not (before[k] == after[k]).all() for k in before if k.startswith("roi_heads."))


def test_anchor_pulls_the_weights_toward_the_start(tmp_path):
    """L2-SP (``anchor``): with the same seed and batches, fine-tuned weights end closer
    to the starting model's than without it; a negative weight is refused."""
    import torch
    from tiny import save_untrained

    from napari_amodal.checkpoint import load_checkpoint

    init = save_untrained(tmp_path / "init.safetensors", tiny_config("fcn"))
    start = load_checkpoint(init)[0]

    def drift(anchor):
        run = tmp_path / f"run{anchor}"
        _, final = drain(train_detector(None, DATA, run, settings(6, lr=0.02, warmup=0, anchor=anchor), init=init))
        after = load_checkpoint(final)[0]
        keys = [k for k in start if start[k].is_floating_point() and "running_" not in k]
        return sum(float(torch.sum((after[k].float() - start[k].float()) ** 2)) for k in keys)

    free, anchored = drift(0.0), drift(50.0)
    assert free > 0
    assert anchored < 0.5 * free, (anchored, free)
    with pytest.raises(ValueError, match="anchor"):
        next(train_detector(None, DATA, tmp_path / "bad", settings(1, anchor=-1.0), init=init))


def test_multi_scale_training_draws_sizes_and_validates_at_the_config_size(tmp_path, monkeypatch):
    from napari_amodal.model.transform import AmodalRCNNTransform

    seen = []
    resize = AmodalRCNNTransform.resize

    def recording(self, image, target=None):
        out = resize(self, image, target)
        seen.append((self.training, max(out[0].shape[-2:])))
        return out

    monkeypatch.setattr(AmodalRCNNTransform, "resize", recording)
    config = tiny_config("fcn")
    drain(train_detector(config, DATA, tmp_path, settings(8, input_sizes=(48, 80)), val_sources=DATA))
    trained = {size for training, size in seen if training}
    assert trained == {48, 80}
    assert {size for training, size in seen if not training} == {config.max_size}
    assert read_metadata(tmp_path / "model.safetensors")["config"]["model"]["max_size"] == config.max_size
    with pytest.raises(ValueError, match="at least 32"):
        drain(train_detector(config, DATA, tmp_path / "x", settings(1, input_sizes=(16,))))
