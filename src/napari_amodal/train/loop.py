"""Training the amodal Mask R-CNN: SGD with a step schedule, resumable.

:func:`train_detector` is a generator (the napari widget drains it in a worker,
the CLI with a progress bar): it yields a :class:`TrainEvent` after every
iteration and returns the path of the final checkpoint. Closing the generator
stops training between iterations; the last and the best checkpoints on disk
stay usable.

Files in ``out_dir``:

- ``last.safetensors``: model + optimiser + RNG state every ``checkpoint_every``
  iterations and at the end/stop (resume reads it);
- ``best.safetensors``: the model with the best validation AP so far;
- ``model.safetensors``: the final model (``best`` when validation ran, else last);
- ``log.jsonl``: one line per iteration (losses, lr, seconds) and per validation.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Generator, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """How to train. The step schedule drops the learning rate 10x at
    ``steps`` (fractions of ``iterations``; the paper's 10k and 11k of 12k)."""

    iterations: int = 2000
    batch_size: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 100
    steps: tuple[float, ...] = (10 / 12, 11 / 12)
    grad_clip: float = 10.0
    checkpoint_every: int = 200
    val_every: int = 0  # 0: validate only at the end
    val_max_frames: int = 64
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, used on CUDA only
    num_workers: int = 0
    trainable: str = "all"  # "all" | "heads" (fine-tuning: freeze backbone + FPN)
    # fine-tuning against forgetting (L2-SP, Li et al. 2018): adds anchor/2 * |w - w_start|^2
    # over the trained weights to the loss, pulling them back toward the starting model
    anchor: float = 0.0
    # batch-norm running statistics: "update" (re-estimated from the training batches) or "frozen"
    # (kept from the starting model; fine-tuning on a few frames of a new style would otherwise move
    # them to that style and shift every layer's features for the images the model knew)
    norm_stats: str = "update"
    # multi-scale training: each image is resized to one of these long sides (px), drawn at
    # random, instead of the config's size (so the model meets embryos of every apparent size);
    # validation and the saved config keep the config's size. Empty: the config's size.
    input_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.check()  # when made: before any file is written

    def check(self) -> None:
        """Raise ValueError for settings no run can use (again at the start of a run: fields may
        have been changed since)."""
        if any(int(v) < 32 for v in self.input_sizes):
            raise ValueError(f"input sizes must be at least 32 px, got {list(self.input_sizes)}")
        if self.anchor < 0 or self.lr * self.anchor > 1.0:
            # lr x anchor above ~3.8 makes the pull itself oscillate and diverge (momentum 0.9); 1 keeps it tame
            raise ValueError(f"anchor must be >= 0 and lr x anchor <= 1 (got anchor {self.anchor}, lr {self.lr})")
        if self.norm_stats not in ("update", "frozen"):
            raise ValueError(f"norm_stats must be 'update' or 'frozen', got {self.norm_stats!r}")


@dataclass
class TrainEvent:
    """What a training step reports."""

    iteration: int
    total: int
    losses: dict[str, float]
    lr: float
    seconds: float
    validation: dict | None = None
    checkpoint: str | None = None
    extra: dict = field(default_factory=dict)


def freeze_norms(module) -> None:
    """Put every batch-norm layer of ``module`` in eval mode: its running mean and
    variance stay those of the data it was trained on. Fine-tuning only the heads
    on a few frames of a new style would otherwise re-estimate them from those
    frames and shift the frozen backbone's features for every other image."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def lr_at(it: int, s: TrainSettings) -> float:
    """Learning rate at iteration ``it`` (0-based): linear warm-up, then 10x drops."""
    lr = s.lr * (0.1 ** sum(it >= round(f * s.iterations) for f in s.steps))
    if s.warmup and it < s.warmup:
        lr *= 0.001 + 0.999 * it / s.warmup
    return lr


def _optimizer_tensors(opt) -> tuple[dict, dict]:
    """Flatten an optimiser state into tensors + JSON-able rest (param groups)."""
    import torch

    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"__optim__.{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"]}


def _restore_optimizer(opt, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith("__optim__."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def predict_frames(model, dataset, indices, device, score_threshold=0.05):
    """Run ``model`` on dataset items -> (predicted, ground-truth) FrameInstances lists."""
    import torch

    from ..normalize import to_model_input
    from ..segment import outputs_to_instances

    model.eval()
    preds, gts = [], []
    with torch.inference_mode():
        for i in indices:
            f = dataset.instances(i)
            image = torch.from_numpy(to_model_input(dataset.frame_image(i))).to(device)
            out = model([image])[0]
            p = outputs_to_instances(out, f.shape, score_threshold=score_threshold, file_name=f.file_name, frame=f.frame)
            preds.append(p)
            gts.append(f)
    return preds, gts


def validate(model, dataset, device, max_frames: int = 64) -> dict:
    """AP / AP50 / AP75 / occlusion IoU of ``model`` on (up to ``max_frames``) dataset frames."""
    from ..evaluate import evaluate_frames

    n = len(dataset)
    idx = np.linspace(0, n - 1, min(n, max_frames)).round().astype(int) if max_frames else np.arange(n)
    preds, gts = predict_frames(model, dataset, sorted(set(idx.tolist())), device)
    r = evaluate_frames(gts, preds, dataset.categories or None)
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}


def train_detector(
    config,
    train_sources: Sequence,
    out_dir,
    settings: TrainSettings | None = None,
    *,
    val_sources: Sequence | None = None,
    shape_model=None,
    init: str | Path | None = None,
    resume: bool = True,
    augment=None,
    train_frames: set | None = None,
    replay_sources: Sequence | None = None,
    replay_fraction: float = 0.0,
) -> Generator[TrainEvent, None, Path]:
    """Train (or fine-tune) an amodal Mask R-CNN.

    Args:
        config: :class:`~napari_amodal.model.ModelConfig`.
        train_sources / val_sources: COCO-amodal JSON files.
        out_dir: folder for checkpoints and the log.
        settings: :class:`TrainSettings`.
        shape_model: the trained, frozen VQ-VAE / VAE (needed unless ``fcn`` or ``init``).
        init: a detector checkpoint to start from (fine-tuning); its shape model comes with it.
        resume: continue from ``out_dir/last.safetensors`` when it exists.
        augment: a :class:`~napari_amodal.data.dataset.Augment` (default: the standard one).
        train_frames: use only these ``(file_name, frame)`` keys of the train sources.
        replay_sources / replay_fraction: mix in frames of other files (e.g. synthetic
            data while fine-tuning) with this probability per sample.
    Yields:
        :class:`TrainEvent` per iteration. Returns the path of ``model.safetensors``.
    """
    import torch

    from ..data.dataset import AmodalDataset, Augment
    from ..models import pick_device

    s = settings or TrainSettings()
    s.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(s.device)
    torch.manual_seed(s.seed)
    augment = augment if augment is not None else Augment()
    model, config = _build_model(config, shape_model, init, s, device)
    params = [p for p in model.parameters() if p.requires_grad]
    anchor = _Anchor(params, s.anchor) if s.anchor > 0 else None  # pulls toward the weights before any resume
    opt = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)

    train_set = AmodalDataset(train_sources, augment=augment, seed=s.seed, frames=train_frames)
    replay_set = AmodalDataset(replay_sources, augment=augment, seed=s.seed + 1) if replay_sources else None
    val_set = AmodalDataset(val_sources) if val_sources else None
    runs = _RunFiles(out, model, opt, {"kind": "detector", "model": config.to_dict(), "settings": _jsonable(asdict(s))})
    start = runs.resume(device) if resume and runs.last.exists() else runs.fresh()
    step = _Step(model, opt, params, s, device, anchor)
    validator = (lambda: validate(model, val_set, device, s.val_max_frames)) if val_set is not None else None
    return (yield from _iterate(step, _batches(train_set, replay_set, replay_fraction, s, start), runs, validator,
                                s, start))


def _iterate(step, data, runs, validator, s: TrainSettings, start: int) -> Generator[TrainEvent, None, Path]:
    """Iterations ``start`` .. ``s.iterations``: step, log, validate (keeping the best), save."""
    t_start, done = time.time(), start
    try:
        with open(runs.log_path, "a", encoding="utf-8") as logf:
            for it in range(start, s.iterations):
                event = step(it, *next(data))
                logf.write(json.dumps({"iteration": it + 1, "lr": event.lr, "seconds": round(event.seconds, 3),
                                       **event.losses}) + "\n")
                done = it + 1
                if validator is not None and ((s.val_every and done % s.val_every == 0) or done == s.iterations):
                    event.validation = validator()
                    logf.write(json.dumps({"iteration": done, "validation": event.validation}) + "\n")
                    event.checkpoint = runs.keep_if_best(event.validation.get("AP") or 0.0, done)
                if done % s.checkpoint_every == 0 or done == s.iterations:
                    runs.save(runs.last, True, done)
                logf.flush()
                yield event
    except (GeneratorExit, KeyboardInterrupt):
        # stopped by the caller between iterations, or Ctrl-C: keep the progress made
        # so far (an error instead leaves the checkpoints of the last good save untouched)
        if done > start:
            runs.save(runs.last, True, done)
        raise
    return runs.publish(time.time() - t_start)


def _build_model(config, shape_model, init, s: TrainSettings, device: str):
    """The model to train, on ``device``, and its config (``init``'s when starting from a checkpoint)."""
    from ..model import build_model
    from ..models import load_model

    if init is not None:
        model, config, _ = load_model(init, device)
    else:
        if config.mask_head != "fcn" and shape_model is None:
            raise ValueError(f"mask head {config.mask_head!r} needs a trained shape model (train-vqvae first)")
        model = build_model(config, shape_model)
    model.to(device)
    if s.trainable == "heads":
        for p in model.backbone.body.parameters():
            p.requires_grad_(False)
    return model, config


class _Anchor:
    """The L2-SP pull (Li et al. 2018) toward the starting weights: adds the gradient of
    ``strength``/2 * |w - w_start|^2 to every trained weight's gradient."""

    def __init__(self, params, strength: float):
        self.params, self.strength = params, float(strength)
        self.start = [p.detach().clone() for p in params]

    def pull(self) -> float:
        """Add the pull to the gradients (after clipping, like weight decay: clipping it with
        the loss would cap the pull and stall the task gradient); returns |w - w_start|^2."""
        import torch

        with torch.no_grad():
            diffs = torch._foreach_sub([p.detach() for p in self.params], self.start)
            drift = float(sum(float(torch.sum(d * d)) for d in diffs))
            for p, d in zip(self.params, diffs):
                if p.grad is not None:
                    p.grad.add_(d, alpha=self.strength)
        return drift


class _Step:
    """One SGD iteration: the model in training mode at the training sizes, the loss
    checked, gradients clipped (plus the anchor's pull), the optimiser stepped."""

    def __init__(self, model, opt, params, s: TrainSettings, device: str, anchor: _Anchor | None):
        import torch

        self.model, self.opt, self.params, self.s, self.device, self.anchor = model, opt, params, s, device, anchor
        self.use_amp = s.amp and device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.config_sizes = (model.transform.min_size, model.transform.max_size)
        self.train_sizes = (tuple(int(v) for v in s.input_sizes), max(s.input_sizes)) if s.input_sizes else self.config_sizes

    def __call__(self, it: int, images, targets) -> TrainEvent:
        import torch

        from ..utils import flush_denormals

        t0, s, model = time.time(), self.s, self.model
        self._train_mode()
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        lr = lr_at(it, s)
        for g in self.opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", enabled=self.use_amp), flush_denormals():
            losses = model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {float(total.detach())} at iteration {it + 1} "
                                     f"({ {k: float(v.detach()) for k, v in losses.items()} }); lower the learning rate")
        self.opt.zero_grad(set_to_none=True)
        with flush_denormals():
            self.scaler.scale(total).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip)
        drift = self.anchor.pull() if self.anchor is not None else None
        self.scaler.step(self.opt)
        self.scaler.update()
        model.transform.min_size, model.transform.max_size = self.config_sizes  # validation and saving as configured
        row = {k: round(float(v.detach()), 5) for k, v in losses.items()}
        row["loss"] = round(float(total.detach()), 5)
        if drift is not None:  # |w - w_start|^2 before this step (the penalty is anchor / 2 x that)
            row["drift"] = round(drift, 6)
        return TrainEvent(it + 1, s.iterations, row, lr, time.time() - t0)

    def _train_mode(self) -> None:
        model, s = self.model, self.s
        model.train()
        model.transform.min_size, model.transform.max_size = self.train_sizes
        if s.norm_stats == "frozen":
            freeze_norms(model)
        elif s.trainable == "heads":  # a frozen backbone keeps its normalisation statistics too
            freeze_norms(model.backbone.body)


def _batches(train_set, replay_set, replay_fraction: float, s: TrainSettings, start: int):
    """Endless ``(images, targets)`` batches: epochs of a seeded shuffle (the epoch a resumed
    run is in first), each sample replaced by a replay frame with ``replay_fraction``."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from ..data.dataset import collate

    epoch = start // max(1, len(train_set) // s.batch_size)
    rng = np.random.default_rng([s.seed, 7])
    while True:
        train_set.epoch = epoch
        gen = torch.Generator().manual_seed(s.seed * 1000 + epoch)
        loader = DataLoader(train_set, batch_size=s.batch_size, sampler=RandomSampler(train_set, generator=gen),
                            collate_fn=collate, num_workers=s.num_workers, drop_last=len(train_set) >= s.batch_size)
        for images, targets in loader:
            if replay_set is not None:
                for k in range(len(images)):
                    if rng.random() < replay_fraction:
                        images[k], targets[k] = replay_set[int(rng.integers(len(replay_set)))]
            yield images, targets
        epoch += 1


class _RunFiles:
    """The files of one training run in ``out`` (see the module docstring): saving and
    resuming the last state, keeping the best model, publishing the final one."""

    def __init__(self, out: Path, model, opt, config: dict):
        self.out, self.model, self.opt, self.config = out, model, opt, config
        self.last, self.log_path = out / "last.safetensors", out / "log.jsonl"
        self.best_ap = -1.0

    def fresh(self) -> int:
        if self.log_path.exists():
            self.log_path.unlink()
        return 0

    def resume(self, device: str) -> int:
        """Model, optimiser and RNG state from ``last.safetensors``; log lines of the iterations
        after it dropped (they are redone). Returns the iteration to continue from."""
        import torch

        from ..atomic import atomic_write_text
        from ..checkpoint import load_checkpoint

        tensors, _, extra = load_checkpoint(self.last, device=device)
        self.model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("__")})
        _restore_optimizer(self.opt, tensors, extra["optimizer"])
        start, self.best_ap = int(extra["iteration"]), float(extra.get("best_ap", -1.0))
        if "__rng__.torch" in tensors:
            torch.set_rng_state(tensors["__rng__.torch"].cpu())
        if self.log_path.exists():
            lines = [x for x in self.log_path.read_text().splitlines() if x.strip()]
            kept = [x for x in lines if json.loads(x).get("iteration", 0) <= start]
            if len(kept) != len(lines):
                atomic_write_text(self.log_path, "".join(x + "\n" for x in kept))
        log.info("resumed from %s at iteration %d", self.last, start)
        return start

    def save(self, path: Path, with_state: bool, it: int) -> Path:
        import torch

        from ..checkpoint import save_checkpoint

        tensors = dict(self.model.state_dict())
        extra = {"iteration": it, "best_ap": self.best_ap}
        if with_state:
            opt_tensors, opt_meta = _optimizer_tensors(self.opt)
            tensors.update(opt_tensors)
            tensors["__rng__.torch"] = torch.get_rng_state()
            extra["optimizer"] = opt_meta
        return save_checkpoint(path, tensors, self.config, extra)

    def keep_if_best(self, ap: float, it: int) -> str | None:
        """Save ``best.safetensors`` when ``ap`` beats every validation so far; its path, or None."""
        if ap <= self.best_ap:
            return None
        self.best_ap = ap
        return str(self.save(self.out / "best.safetensors", False, it))

    def publish(self, seconds: float) -> Path:
        """Write ``model.safetensors``: the best model when validation ran, else the last."""
        from ..checkpoint import load_checkpoint, save_checkpoint

        # a best.safetensors counts only if this run (or the run it resumed) wrote it
        best = self.out / "best.safetensors"
        src = best if self.best_ap >= 0 and best.exists() else self.last
        tensors, _, extra = load_checkpoint(src)
        final = self.out / "model.safetensors"
        save_checkpoint(final, {k: v for k, v in tensors.items() if not k.startswith("__")}, self.config,
                        {"iteration": extra.get("iteration"), "best_ap": self.best_ap, "seconds": round(seconds, 1)})
        return final


def _jsonable(d: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
