"""Fine-tuning a trained pipeline on proofread frames (the napari widget and the CLI share it).

:func:`finetune` is a generator over :func:`~napari_amodal.train.loop.train_detector`:
it checks and gathers the data first (nothing on disk changes when the inputs
are bad), optionally refits the shape VQ-VAE on the new masks, then trains and
returns the path of the saved model.

Data are annotation projects (JSON files with a top-level ``napari_amodal_project``
key: their *reviewed* frames are used) and/or plain COCO-amodal files (all frames).
They are gathered into ``out_dir/data/train.json`` and ``out_dir/data/val.json``
(a seeded ``val_fraction`` of the frames, held out for validation), with
``file_name`` made absolute so the images are found wherever the files lie.

Files in ``out_dir`` besides the loop's (``last``, ``best``, ``model.safetensors``,
``log.jsonl``): ``data/``, ``shape.safetensors`` + ``init_refit.safetensors``
(``train="refit_vqvae"``) and ``finetune.json`` (inputs and validation before/after).
With ``name``, the result is also copied to ``user_model_dir()/NAME.safetensors``
(atomically), so it is found by name like any installed model.

Events are :class:`~napari_amodal.train.loop.TrainEvent`; ``event.extra["stage"]``
is ``"baseline"`` (validation of the initial model, ``iteration == 0``),
``"replay"`` (synthetic replay frames are being rendered: one event before the first
sequence and one after each, ``extra["done"]`` of ``extra["total"]`` sequences; the
caller can stop in between), ``"shape"`` (the
refitted shape model's report) or ``"train"``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .loop import TrainEvent

log = logging.getLogger(__name__)

TRAIN_CHOICES = ("heads", "all", "refit_vqvae")
# Defaults of the widget, the CLI and the domain-shift benchmark, chosen there (docs/benchmarks.md,
# "Domain shift and fine-tuning", runs 10-24): with these, 20 corrected frames and under 10 CPU minutes
# gained 0.148-0.167 AP on a style the model handled poorly (0.27) and lost at most 0.012 on the
# original style, over three fine-tuning seeds.
DEFAULTS = {"iterations": 250, "lr": 0.002, "train": "all", "synthetic_replay": 120, "replay_fraction": 0.5,
            "anchor": 1.0, "norm_stats": "update"}
SHAPE_PREFIX = "roi_heads.mask_branch.shape_model."
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FinetuneError(ValueError):
    """Inputs that cannot be fine-tuned on, or a run that failed (with what to do about it)."""


@dataclass
class FinetuneData:
    """The gathered data: COCO-amodal files with absolute image paths."""

    train: Path
    val: Path | None
    n_train: int
    n_val: int


# ---------------------------------------------------------------------------
# data


def is_project_file(path) -> bool:
    """True for an annotation project (a JSON object with the project key)."""
    from ..project import PROJECT_KEY

    try:
        with open(path, encoding="utf-8") as fh:
            d = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(d, dict) and PROJECT_KEY in d


def project_training_file(path, folder) -> Path:
    """The reviewed frames of the project file ``path`` as COCO-amodal JSON in
    ``folder``, pointing at the project's image by absolute path."""
    from .. import project as core

    path = Path(path)
    proj = core.load_project(path)
    if not proj.reviewed:
        raise FinetuneError(f"no reviewed frames in {path}: mark frames reviewed in the Proofread widget first")
    image = proj.image
    candidates = [Path(image["path"]) if image.get("path") else None,
                  path.parent / image["name"] if image.get("name") else None]
    found = next((p for p in candidates if p is not None and p.is_file()), None)
    if found is None:
        raise FinetuneError(f"the image of project {path} ({image.get('path') or image.get('name') or '?'}) "
                            "was not found; put it beside the project or open and save the project again")
    if image.get("hash"):  # the cells were drawn on these pixels: never train them on another image
        from ..io_images import read_stack

        data, _ = read_stack(found)
        core.check_signature(image, core.image_signature(data, found), where=f"project {path.name}")
    moved = core.AnnotationProject.from_frames({**image, "name": str(found.resolve())}, proj.frames,
                                               n_frames=proj.n_frames, reviewed=proj.reviewed,
                                               categories=proj.categories)
    return core.export_reviewed(moved, Path(folder) / f"{path.stem}.reviewed.json")


def write_reviewed_stack(project, image, folder, axes: str | None = None) -> Path:
    """The reviewed frames of an in-memory ``project`` and its image stack
    (napari layers) as ``folder/<name>.reviewed.tif`` + ``.json`` (frames renumbered)."""
    import tifffile

    from .. import project as core

    frames = core.reviewed_frames(project)
    if not frames:
        raise FinetuneError(f"no reviewed frames in {project.file_name or 'the cell layer'}: "
                            "mark frames reviewed in the Proofread widget first")
    data = np.asarray(image)
    axes = axes or ("TYX" if data.ndim == 3 else "YX")
    if "T" not in axes:
        data, axes = data[None], "T" + axes
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(project.file_name or "layer").stem or "layer"
    tif = folder / f"{stem}.reviewed.tif"
    stack = np.ascontiguousarray(data[[f.frame for f in frames]])
    tifffile.imwrite(tif, stack, metadata={"axes": axes}, compression="zlib")
    sub = core.AnnotationProject.from_frames(
        {"name": tif.name, "path": str(tif)}, [replace(f, frame=i) for i, f in enumerate(frames)],
        n_frames=len(frames), reviewed=range(len(frames)), categories=project.categories,
    )
    return core.export_reviewed(sub, folder / f"{stem}.reviewed.json")


def prepare_data(data: Sequence, folder, val_fraction: float = 0.2, seed: int = 0) -> FinetuneData:
    """Check the inputs and gather them into ``folder/train.json`` and ``folder/val.json``.

    ``data`` items are project files (reviewed frames) or COCO-amodal files (all
    frames). A seeded ``val_fraction`` of the frames is held out (at least one
    when there are two or more frames, never all). Raises :class:`FinetuneError`
    (or FileNotFoundError) with the file at fault before anything is trained.
    """
    from ..data.coco import read_amodal, write_coco

    if not data:
        raise FinetuneError("no training data: give annotation projects or COCO-amodal files")
    if not 0.0 <= val_fraction < 1.0:
        raise FinetuneError(f"val_fraction must be in [0, 1), got {val_fraction}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames, categories, seen = [], [], set()
    for item in data:
        src = Path(item)
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such project or annotation file")
        coco = project_training_file(src, folder) if is_project_file(src) else src
        try:
            got, cats = read_amodal(coco)
        except (ValueError, KeyError, TypeError) as e:
            raise FinetuneError(f"bad annotations in {src}: {e}") from None
        if not got:
            raise FinetuneError(f"no frames in {src}")
        for c in cats:
            if c not in categories:
                categories.append(c)
        for f in got:
            image = (coco.parent / f.file_name).resolve()
            if not image.is_file():
                raise FileNotFoundError(f"image {image} named by {src} does not exist")
            key = (str(image), int(f.frame))
            if key not in seen:
                seen.add(key)
                frames.append(replace(f, file_name=str(image), scores=np.ones(len(f), np.float32)))
    if not sum(len(f) for f in frames):
        raise FinetuneError(f"no cells in the training frames of {', '.join(map(str, data))}")
    n = len(frames)
    n_val = 0 if n < 2 or val_fraction <= 0 else min(n - 1, max(1, round(val_fraction * n)))
    order = np.random.default_rng(seed).permutation(n)
    val_idx = set(order[:n_val].tolist())
    train = [f for i, f in enumerate(frames) if i not in val_idx]
    val = [f for i, f in enumerate(frames) if i in val_idx]
    categories = categories or [{"id": 1, "name": "blastomere"}]
    write_coco(folder / "train.json", train, categories, predictions=False)
    val_path = None
    if val:
        val_path = folder / "val.json"
        write_coco(val_path, val, categories, predictions=False)
    return FinetuneData(folder / "train.json", val_path, len(train), len(val))


# ---------------------------------------------------------------------------
# models


def check_name(name: str) -> str:
    """A model name that can be saved and found again (not ``bundled``, no path)."""
    from ..models import BUNDLED

    if not _NAME.match(name or "") or name.endswith(".safetensors") or name == BUNDLED:
        raise FinetuneError(f"model name {name!r}: use letters, digits, '_', '-', '.' (and not {BUNDLED!r})")
    return name


def publish_model(path, name: str) -> Path:
    """Copy the weights of checkpoint ``path`` (no optimiser state) to
    ``user_model_dir()/NAME.safetensors`` atomically; the model is then found by name."""
    from ..atomic import atomic_write_text
    from ..checkpoint import load_checkpoint, save_checkpoint, sha256
    from ..models import user_model_dir

    check_name(name)
    tensors, config, extra = load_checkpoint(path)
    weights = {k: v for k, v in tensors.items() if not k.startswith("__")}
    extra = {k: v for k, v in extra.items() if k != "optimizer"}
    target = user_model_dir() / f"{name}.safetensors"
    record = target.with_suffix(".sha256")
    record.unlink(missing_ok=True)  # an old record must never vouch for the new weights
    saved = save_checkpoint(target, weights, config, {**extra, "name": name, "source": str(path)})
    atomic_write_text(record, f"{sha256(saved)}  {saved.name}\n")  # checked on every load
    return saved


def stopped_result(out_dir) -> Path | None:
    """The model a stopped run offers: ``best`` when this run validated, else ``last``
    (None: the run saved nothing, e.g. it was stopped before training began)."""
    from ..checkpoint import read_metadata

    out = Path(out_dir)
    last = out / "last.safetensors"
    if not last.is_file():
        return None
    best_ap = read_metadata(last)["extra"].get("best_ap", -1.0)
    best = out / "best.safetensors"
    return best if best_ap is not None and best_ap >= 0 and best.is_file() else last


def swap_shape_model(init_path, shape_model, out) -> Path:
    """Save the detector of ``init_path`` with ``shape_model`` in place of its own
    (at ``roi_heads.mask_branch.shape_model``) to ``out``."""
    from ..checkpoint import load_checkpoint, save_checkpoint

    tensors, config, _ = load_checkpoint(init_path)
    weights = {k: v for k, v in tensors.items() if not k.startswith("__")}
    old = {k for k in weights if k.startswith(SHAPE_PREFIX)}
    new = {SHAPE_PREFIX + k: v for k, v in shape_model.state_dict().items()}
    if old != set(new):
        raise FinetuneError(f"{init_path}: its shape model does not match the refitted one")
    weights.update(new)
    return save_checkpoint(out, weights, config, {"init": str(init_path)})


# ---------------------------------------------------------------------------
# the routine


SYNTHETIC_REPLAY_SEED = 5000  # never used by the bundled recipe (1000-3000) or the benchmarks (7000+, 9000)
SYNTHETIC_FRAMES_PER_SEQUENCE = 10


def synthetic_replay_steps(folder, n_frames: int, seed: int = SYNTHETIC_REPLAY_SEED):
    """Generator: render ``n_frames`` synthetic embryo frames (2 to 8 cells, the bundled
    model's randomised appearance) into ``folder/seed<seed>`` as replay data, one
    sequence at a time; yields ``(done, total)`` sequences (``(0, total)`` first) and
    returns the COCO-amodal JSON.

    Closing it between sequences keeps the sequences rendered so far (each with its own
    part file), and the next call renders only the rest. A finished set of that size and
    seed is reused as it is.
    """
    from ..data.coco import read_coco, write_coco
    from ..data.embryo import EMBRYO_CATEGORIES, write_embryo_dataset

    folder = Path(folder) / f"seed{seed}"  # image names do not carry the seed: one folder per seed
    path = folder / f"synthetic_{n_frames}.json"
    if path.exists():
        return path
    n_seq = -(-n_frames // SYNTHETIC_FRAMES_PER_SEQUENCE)
    per = SYNTHETIC_FRAMES_PER_SEQUENCE  # in the part names: parts of another sequence length never mix in
    parts = [folder / f".part_{per}f_{i:04d}.json" for i in range(n_seq)]
    yield 0, n_seq
    for i, part in enumerate(parts):
        if not part.exists():  # sequence i depends only on (seed, i): parts of any earlier run fit
            write_embryo_dataset(folder, 1, n_frames=SYNTHETIC_FRAMES_PER_SEQUENCE, seed=seed, start_cells=2,
                                 json_name=part.name, first=i)
        yield i + 1, n_seq
    frames = [f for part in parts for f in read_coco(part)][:n_frames]
    # file names stay relative to the folder all these JSONs are in
    write_coco(path, frames, EMBRYO_CATEGORIES, predictions=False)
    for part in folder.glob(".part_*.json"):  # those of larger interrupted renders too
        part.unlink()
    return path


def synthetic_replay_data(folder, n_frames: int, seed: int = SYNTHETIC_REPLAY_SEED, progress=None) -> Path:
    """:func:`synthetic_replay_steps` run to the end; ``progress(done, total)`` per sequence."""
    from ..utils import drain

    return drain(synthetic_replay_steps(folder, n_frames, seed), (lambda step: progress(*step)) if progress else None)


def finetune(
    init="bundled",
    data: Sequence = (),
    out_dir=None,
    *,
    iterations: int = DEFAULTS["iterations"],
    lr: float = DEFAULTS["lr"],
    train: str = DEFAULTS["train"],
    device: str = "auto",
    val_fraction: float = 0.2,
    replay: Sequence | None = None,
    replay_fraction: float = DEFAULTS["replay_fraction"],
    synthetic_replay: int = 0,
    anchor: float = DEFAULTS["anchor"],
    norm_stats: str = DEFAULTS["norm_stats"],
    seed: int = 0,
    name: str | None = None,
    batch_size: int = 2,
    val_every: int = 0,
    shape_iterations: int = 500,
    validate_before: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> Generator[TrainEvent, None, Path]:
    """Fine-tune the model ``init`` (a name such as ``bundled``, or a checkpoint path).

    Args:
        data: annotation project files (their reviewed frames) and/or COCO-amodal files.
        out_dir: folder for the gathered data, checkpoints and the log.
        train: ``heads`` (backbone frozen), ``all``, or ``refit_vqvae`` (first retrain
            the shape VQ-VAE on the new masks for ``shape_iterations``, swap it into
            the detector, then train the heads).
        val_fraction: share of the frames held out for validation (AP before/after).
        replay / replay_fraction: COCO-amodal files (e.g. synthetic data) mixed in with
            this probability per sample, against forgetting.
        synthetic_replay: also render this many synthetic embryo frames (the kind the
            bundled model was trained on) into ``out_dir/data/synthetic`` and replay them.
        anchor: pull the trained weights toward the starting ones (L2-SP: adds
            ``anchor / 2 * |w - w_start|^2`` to the loss; 0: off), against forgetting.
        norm_stats: ``update`` (batch-norm running statistics re-estimated from the
            fine-tuning batches) or ``frozen`` (kept from ``init``), against forgetting.
        name: also save the result as ``user_model_dir()/NAME.safetensors``.
        val_every: validate every N iterations (0: at the end only); the best model wins.
        resume: continue from ``out_dir/last.safetensors`` of an earlier (stopped) run.
            Without it, an ``out_dir`` that holds an earlier run is refused (never overwritten).
        overwrite: replace an existing model called ``name`` (refused otherwise, before training).
    Yields:
        :class:`TrainEvent` (see the module docstring). Returns the saved model's path.
        Closing the generator stops between iterations and keeps ``last`` (and ``best``).
    Raises:
        FinetuneError / FileNotFoundError: bad inputs, before anything is written
        outside ``out_dir/data``; FinetuneError for a run out of memory. Earlier
        checkpoints and models stay as they were.
    """
    from ..atomic import atomic_write_text
    from ..models import pick_device
    from .loop import TrainSettings, train_detector

    out = Path(out_dir) if out_dir is not None else None
    _check_options(train, out, iterations, lr, anchor, norm_stats, synthetic_replay, replay_fraction, name,
                   overwrite, resume, replay)
    init_path, config = _detector_to_start_from(init, train)
    device = pick_device(device)
    prepared = _prepare(data, out, val_fraction, seed)
    replay = list(replay or [])
    if synthetic_replay:
        replay.append((yield from _render_replay(out, synthetic_replay, iterations)))
    log.info("fine-tuning %s on %d frames (%d held out)", init_path, prepared.n_train, prepared.n_val)
    val_sources = [prepared.val] if prepared.val else None
    summary = {"init": str(init_path), "data": [str(d) for d in data], "train": train, "iterations": iterations,
               "lr": lr, "n_train": prepared.n_train, "n_val": prepared.n_val, "replay": [str(r) for r in replay],
               "replay_fraction": replay_fraction if replay else 0.0, "anchor": anchor, "norm_stats": norm_stats,
               "before": None, "after": None}  # finetune.json
    if validate_before and val_sources:
        summary["before"] = yield from _baseline(init_path, val_sources, device, iterations)
    start_from = init_path
    if train == "refit_vqvae":
        start_from = yield from _refit_shape(config, init_path, prepared, out, shape_iterations, seed, device,
                                             iterations, summary)
    settings = TrainSettings(iterations=iterations, batch_size=batch_size, lr=lr, warmup=min(50, iterations // 10),
                             checkpoint_every=max(1, min(100, iterations // 4 or 1)), val_every=val_every, seed=seed,
                             device=device, trainable="all" if train == "all" else "heads", anchor=anchor,
                             norm_stats=norm_stats)
    gen = train_detector(config, [prepared.train], out, settings, val_sources=val_sources, init=start_from,
                         resume=resume, replay_sources=replay or None, replay_fraction=replay_fraction if replay else 0.0)
    final = yield from _train_stage(gen, device, out, summary)
    result = publish_model(final, name) if name else final  # name checked free (or overwrite) at the start
    summary["model"] = str(final)
    summary["published"] = str(result) if name else None
    atomic_write_text(out / "finetune.json", json.dumps(summary, indent=2, default=str))
    return result


def _check_options(train, out, iterations, lr, anchor, norm_stats, synthetic_replay, replay_fraction, name,
                   overwrite, resume, replay) -> None:
    """FinetuneError / FileNotFoundError for options no run can use, before anything is written."""
    if train not in TRAIN_CHOICES:
        raise FinetuneError(f"train must be one of {', '.join(TRAIN_CHOICES)}, got {train!r}")
    if out is None:
        raise FinetuneError("out_dir is needed (checkpoints and the log go there)")
    if iterations < 1 or lr <= 0:
        raise FinetuneError(f"need iterations >= 1 and lr > 0 (got {iterations}, {lr})")
    if anchor < 0 or lr * anchor > 1.0:
        raise FinetuneError(f"need anchor >= 0 and learning rate x anchor <= 1 (got anchor {anchor}, lr {lr}): "
                            "a stronger pull makes training oscillate")
    if norm_stats not in ("update", "frozen"):
        raise FinetuneError(f"norm_stats must be 'update' or 'frozen', got {norm_stats!r}")
    if synthetic_replay < 0 or not 0.0 <= replay_fraction <= 1.0:
        raise FinetuneError(f"need synthetic_replay >= 0 and 0 <= replay_fraction <= 1 "
                            f"(got {synthetic_replay}, {replay_fraction})")
    if name is not None:
        check_name(name)
        from ..models import user_model_dir

        if (user_model_dir() / f"{name}.safetensors").exists() and not overwrite:
            raise FinetuneError(f"a model called {name!r} exists already; choose another name or overwrite it")
    earlier = [p.name for p in out.glob("*.safetensors")] + (["log.jsonl"] if (out / "log.jsonl").exists() else [])
    if earlier and not resume:
        raise FinetuneError(f"{out} holds an earlier run ({', '.join(sorted(earlier))}); "
                            "choose a new output folder, or resume that run")
    for r in replay or ():
        if not Path(r).is_file():
            raise FileNotFoundError(f"{r}: no such replay file")


def _detector_to_start_from(init, train: str):
    """``(path, ModelConfig)`` of the model to fine-tune; FinetuneError if it cannot be."""
    from ..checkpoint import read_metadata
    from ..model import ModelConfig
    from ..models import resolve_model

    init_path = resolve_model(init)
    meta = read_metadata(init_path)
    if meta["config"].get("kind", "detector") != "detector":
        raise FinetuneError(f"{init_path} is not a segmentation model")
    config = ModelConfig.from_dict(meta["config"]["model"])
    if train == "refit_vqvae" and config.mask_head == "fcn":
        raise FinetuneError("refit_vqvae: the model's fcn mask head has no shape model; train heads or all")
    return init_path, config


def _prepare(data, out: Path, val_fraction: float, seed: int) -> FinetuneData:
    """:func:`prepare_data` into ``out/data``; a run refused for its data leaves no new folder behind."""
    fresh = not out.exists()
    try:
        return prepare_data(data, out / "data", val_fraction, seed)
    except Exception:
        if fresh:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _render_replay(out: Path, n_frames: int, iterations: int) -> Generator[TrainEvent, None, Path]:
    """Stage ``replay``: render the synthetic replay frames, one event per sequence (the caller
    can stop in between); returns their annotation file."""
    steps = synthetic_replay_steps(out / "data" / "synthetic", n_frames)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as rendered:
            return rendered.value
        yield TrainEvent(0, iterations, {}, 0.0, 0.0,
                         extra={"stage": "replay", "frames": n_frames, "done": done, "total": total})


def _baseline(init_path, val_sources, device: str, iterations: int) -> Generator[TrainEvent, None, dict]:
    """Stage ``baseline``: the starting model's scores on the held-out frames."""
    from ..data.dataset import AmodalDataset
    from ..models import load_model
    from .loop import validate

    model, _, _ = load_model(init_path, device)
    before = validate(model, AmodalDataset(val_sources), device)
    yield TrainEvent(0, iterations, {}, 0.0, 0.0, validation=before, extra={"stage": "baseline"})
    return before


def _refit_shape(config, init_path, prepared, out: Path, shape_iterations: int, seed: int, device: str,
                 iterations: int, summary: dict) -> Generator[TrainEvent, None, Path]:
    """Stage ``shape``: retrain the VQ-VAE on the new masks and swap it into the detector;
    returns the detector to train from."""
    from .shape import load_shape_model, train_shape_model

    report = train_shape_model(config, [prepared.train], out / "shape.safetensors",
                               iterations=shape_iterations, batch_size=64, seed=seed, device=device)
    start_from = swap_shape_model(init_path, load_shape_model(report["path"], config), out / "init_refit.safetensors")
    summary["shape"] = {k: v for k, v in report.items() if k != "usage"}
    yield TrainEvent(0, iterations, {}, 0.0, report["seconds"], extra={"stage": "shape", "report": report})
    return start_from


def _train_stage(gen, device: str, out: Path, summary: dict) -> Generator[TrainEvent, None, Path]:
    """Stage ``train``: the detector's training loop, its events passed on (the last validation
    kept as ``summary["after"]``), running out of memory said as a FinetuneError."""
    import torch

    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        except (RuntimeError, MemoryError) as e:
            oom = (MemoryError, *([torch.OutOfMemoryError] if hasattr(torch, "OutOfMemoryError") else []))
            if isinstance(e, oom) or "out of memory" in str(e):
                raise FinetuneError(
                    f"fine-tuning ran out of memory on {device}: use a smaller batch, train 'heads', or the cpu "
                    f"device. Checkpoints saved so far in {out} are intact."
                ) from e
            raise
        event.extra.setdefault("stage", "train")
        if event.validation is not None:
            summary["after"] = event.validation
        try:
            yield event
        except GeneratorExit:
            gen.close()  # the loop saves last.safetensors
            raise
