"""Label-free adaptation: fine-tune on the frames of a lab's own stacks the model can be trusted on.

:func:`adapt` segments the user's stacks, keeps as pseudo-labels the frames whose cells the
model is sure of (:func:`trusted_frames`), fine-tunes on them with the usual replay of
synthetic frames against forgetting (:func:`~napari_amodal.train.finetune.finetune`: stop,
atomic checkpoints and earlier models intact all hold), and repeats for ``rounds``.
A frame is kept only whole: a cell the model missed in a kept frame would teach it that
the cell is background.

Experimental, reached only from ``benchmarks/adaptation.py``: on the shifted style measured
there the frames the model is sure of are mostly wrong and adapting on them lowers AP
(docs/benchmarks.md, "Label-free adaptation"), so no command or widget offers it yet.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from ..instances import FrameInstances, instance_overlaps
from .finetune import DEFAULTS, FinetuneError
from .loop import TrainEvent

log = logging.getLogger(__name__)

MIN_SCORE = 0.8  # every cell of a kept frame scores at least this
STABLE_IOU = 0.7  # ... and overlaps its own track in the frames before and after this much


def trusted_frames(frames: Sequence[FrameInstances], min_score: float = MIN_SCORE,
                   stable_iou: float = STABLE_IOU) -> list[int]:
    """Indices of the frames of one decoded, tracked time-lapse fit to train on without labels.

    A frame is kept when it shows cells (state ``cells``), none of them carried over by the
    decoder (``inferred``), each scored >= ``min_score``, and when a neighbouring frame (the
    one before or the one after) holds the same cells: as many, on the same tracks, each with
    amodal IoU >= ``stable_iou`` (the model draws them the same way twice, so nothing is
    appearing, vanishing or dividing).
    """
    keep = []
    for t, f in enumerate(frames):
        if not len(f) or f.meta.get("state", "cells") != "cells" or (f.scores < min_score).any():
            continue
        if f.inferred is not None and f.inferred.any():
            continue
        neighbours = [frames[u] for u in (t - 1, t + 1) if 0 <= u < len(frames)]
        if any(len(g) == len(f) and _same_tracks(f, g, stable_iou) for g in neighbours):
            keep.append(t)
    return keep


def _same_tracks(a: FrameInstances, b: FrameInstances, stable_iou: float) -> bool:
    """Whether every cell of ``a`` has a cell of the same track in ``b`` with IoU >= ``stable_iou``."""
    if (a.track_ids < 0).any() or sorted(a.track_ids.tolist()) != sorted(b.track_ids.tolist()):
        return False
    iou, _ = instance_overlaps(a, b)
    same = a.track_ids[:, None] == b.track_ids[None, :]
    return bool((np.where(same, iou, 0).max(1) >= stable_iou).all())


def pseudo_labels(stacks: Sequence, segmenter, folder, rounds_done: int = 0
                  ) -> Generator[tuple[int, int], None, tuple[Path | None, int, int]]:
    """Segment ``stacks`` (TIFF paths) and write their trusted frames as a COCO-amodal file in
    ``folder``; yields ``(stacks done, stacks)``, returns ``(path or None, kept, frames)``."""
    from ..data.coco import write_coco
    from ..io_images import read_stack

    kept, seen = [], 0
    yield 0, len(stacks)
    for i, path in enumerate(stacks):
        image, axes = read_stack(path)
        frames = segmenter(image, axes=axes, file_name=str(Path(path).resolve()))
        seen += len(frames)
        kept += [frames[t] for t in trusted_frames(frames)]
        yield i + 1, len(stacks)
    if not kept:
        return None, 0, seen
    out = Path(folder) / f"pseudo_labels_{rounds_done + 1}.json"
    write_coco(out, kept, [{"id": 1, "name": "blastomere"}], predictions=False)
    return out, len(kept), seen


def adapt(stacks: Sequence, init="bundled", out_dir=None, *, name: str | None = None, rounds: int = 1,
          iterations: int = DEFAULTS["iterations"], device: str = "auto", seed: int = 0, overwrite: bool = False,
          **finetune_options) -> Generator[TrainEvent, None, Path]:
    """Adapt ``init`` to the images of ``stacks`` without annotations.

    Each round: segment the stacks with the current model, keep the trusted frames
    (:func:`trusted_frames`), fine-tune on them into ``out_dir/round_K``. Yields the
    fine-tuning's events and ``stage: pseudo-labels`` ones (``done`` / ``total`` stacks,
    then ``kept`` / ``frames``); returns the last round's model (also saved as ``name``).
    Raises FinetuneError when no frame of the stacks can be trusted.
    """
    from ..segment import Segmenter
    from .finetune import check_name, finetune

    if rounds < 1:
        raise FinetuneError(f"rounds must be at least 1, got {rounds}")
    if out_dir is None:
        raise FinetuneError("out_dir is needed (pseudo-labels, checkpoints and the log go there)")
    missing = [str(p) for p in stacks if not Path(p).is_file()]
    if not stacks or missing:
        raise FileNotFoundError(f"{missing[0]}: no such image file" if missing else "no stacks to adapt to")
    if name is not None:
        from ..models import user_model_dir

        check_name(name)
        if (user_model_dir() / f"{name}.safetensors").exists() and not overwrite:
            raise FinetuneError(f"a model called {name!r} exists already; choose another name or overwrite it")
    options = {k: DEFAULTS[k] for k in ("lr", "train", "synthetic_replay", "replay_fraction", "anchor", "norm_stats")}
    options.update(finetune_options)
    out, model = Path(out_dir), init
    for k in range(rounds):
        segmenter = Segmenter.load(model, device=device)
        folder = out / f"round_{k + 1}"
        steps = pseudo_labels(stacks, segmenter, out, k)
        while True:
            try:
                done, total = next(steps)
            except StopIteration as finished:
                labels, n_kept, n_seen = finished.value
                break
            yield TrainEvent(0, iterations, {}, 0.0, 0.0, extra={"stage": "pseudo-labels", "round": k + 1,
                                                                 "done": done, "total": total})
        if labels is None:
            raise FinetuneError(f"no frame of the {len(stacks)} stack(s) is one the model is sure of: "
                                "nothing to adapt on (proofread a few frames and fine-tune instead)")
        log.info("round %d: %d of %d frames kept as pseudo-labels", k + 1, n_kept, n_seen)
        yield TrainEvent(0, iterations, {}, 0.0, 0.0, extra={"stage": "pseudo-labels", "round": k + 1,
                                                             "kept": n_kept, "frames": n_seen})
        last = k == rounds - 1
        model = yield from finetune(model, [labels], folder, iterations=iterations, device=device, seed=seed + k,
                                    val_fraction=0.0, validate_before=False, name=name if last else None,
                                    overwrite=overwrite, **options)
    return Path(model)
