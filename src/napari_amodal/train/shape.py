"""Training the shape prior (VQ-VAE, or the VAE baseline) on complete cell masks.

Masks are cut out along their boxes and resampled to ``mask_size`` squared,
exactly as the mask branch sees its targets (RoIAlign of the binary mask inside
a box). Boxes are jittered during training so the prior also knows the slightly
off-centre crops that detector proposals give.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def collect_masks(sources: Sequence, max_masks: int | None = None, seed: int = 0, margin: float = 0.25):
    """All amodal masks of COCO-amodal files, each cut to its box grown by ``margin``
    (enough room for box jitter) -> (list of small bool arrays, boxes (N, 4) in
    the coordinates of those arrays). Frames are decoded one at a time."""
    from ..data.coco import read_amodal

    masks, boxes, groups = [], [], []
    for src in sources:
        records, _ = read_amodal(src, lazy=True)
        for r in records:
            f = r.load()
            h, w = f.shape
            for m, b in zip(f.masks, f.boxes):
                if not (b[2] > b[0] and b[3] > b[1]):
                    continue
                mx, my = margin * (b[2] - b[0]), margin * (b[3] - b[1])
                x0, y0 = int(max(0, b[0] - mx)), int(max(0, b[1] - my))
                x1, y1 = int(min(w, np.ceil(b[2] + mx))), int(min(h, np.ceil(b[3] + my)))
                masks.append(m[y0:y1, x0:x1].copy())
                boxes.append(b - np.array([x0, y0, x0, y0], np.float32))
                groups.append(f"{src}:{r.file_name}")
    if not masks:
        raise ValueError(f"no masks in {', '.join(map(str, sources))}")
    if max_masks and len(masks) > max_masks:
        pick = np.random.default_rng(seed).choice(len(masks), max_masks, replace=False)
        masks, boxes, groups = [masks[i] for i in pick], [boxes[i] for i in pick], [groups[i] for i in pick]
    return masks, np.array(boxes, np.float32), groups


def crop_masks(masks, boxes: np.ndarray, size: int, jitter: float = 0.0, rng=None):
    """RoIAlign-crop masks to their (optionally jittered) boxes -> (N, 1, size, size) float tensor."""
    import torch
    from torchvision.ops import roi_align

    boxes = np.asarray(boxes, np.float32).copy()
    if jitter > 0:
        rng = rng or np.random.default_rng()
        wh = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, 0).reshape(-1, 4)
        boxes += rng.uniform(-jitter, jitter, boxes.shape).astype(np.float32) * wh
    out = []
    for m, b in zip(masks, boxes):
        t = torch.from_numpy(np.ascontiguousarray(m, np.float32))[None, None]
        out.append(roi_align(t, [torch.from_numpy(b[None])], (size, size), 1.0, 0, aligned=False))
    return torch.cat(out) if out else torch.zeros((0, 1, size, size))


def reconstruction_iou(model, crops, batch: int = 256) -> float:
    """Mean IoU (threshold 0.5) of a shape model's reconstructions of (N, 1, M, M) crops."""
    import torch

    model.eval()
    ious = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = crops[i : i + batch]
            rec = model(x)["recon"]
            a, b = x >= 0.5, rec >= 0.5
            inter = (a & b).flatten(1).sum(1).float()
            union = (a | b).flatten(1).sum(1).float().clamp(min=1)
            ious.append(inter / union)
    return float(torch.cat(ious).mean()) if ious else float("nan")


def train_shape_model(
    config,
    train_sources: Sequence,
    out: str | Path,
    *,
    val_sources: Sequence | None = None,
    iterations: int = 3000,
    batch_size: int = 128,
    lr: float = 2e-3,
    jitter: float = 0.08,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Train the shape model that ``config.mask_head`` needs and save it to ``out``.

    Returns a report: ``val_iou`` (held-out reconstruction IoU; from a 10 %
    split of the training masks when no ``val_sources``), ``perplexity`` and
    per-code ``usage`` for the VQ-VAE, ``seconds``, ``path``.
    """
    import torch

    from ..model import build_shape_model
    from ..checkpoint import save_checkpoint

    if config.mask_head == "fcn":
        raise ValueError("the fcn mask head needs no shape model")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    masks, boxes, groups = collect_masks(train_sources, seed=seed)
    if val_sources:
        vmasks, vboxes, _ = collect_masks(val_sources, max_masks=2000, seed=seed)
    else:
        # hold out whole stacks (~10 %): neighbouring frames of one cell look alike,
        # so a random split of masks would flatter the reconstruction IoU
        names = sorted(set(groups))
        held = set(rng.permutation(names)[: max(1, len(names) // 10)]) if len(names) > 1 else set()
        is_val = np.array([g in held for g in groups]) if held else (np.arange(len(masks)) % 10 == 0)
        vmasks, vboxes = [m for m, v in zip(masks, is_val) if v], boxes[is_val]
        masks, boxes = [m for m, v in zip(masks, is_val) if not v], boxes[~is_val]
    size = config.mask_size
    val = crop_masks(vmasks, vboxes, size).to(device)
    # a fixed pool of jittered crops per epoch keeps the RoIAlign cost out of the loop
    model = build_shape_model(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    t0 = time.time()
    pool = None
    log_rows = []
    for it in range(iterations):
        if pool is None or it % 500 == 0:
            pool = crop_masks(masks, boxes, size, jitter=jitter, rng=rng).to(device)
            flips = rng.random(len(pool)) < 0.5
            pool[torch.from_numpy(flips)] = pool[torch.from_numpy(flips)].flip(-1)
        idx = torch.from_numpy(rng.integers(0, len(pool), batch_size))
        model.train()
        outputs = model(pool[idx])
        opt.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        opt.step()
        sched.step()
        if progress is not None or it % 100 == 0:
            row = {k: float(v.detach()) for k, v in outputs.items() if torch.is_tensor(v) and v.numel() == 1}
            row["iteration"] = it + 1
            log_rows.append(row)
            if progress is not None:
                progress(it + 1, iterations, row)
    report = {"val_iou": reconstruction_iou(model, val), "seconds": round(time.time() - t0, 1),
              "n_train_masks": len(masks), "n_val_masks": len(vmasks)}
    quantizer = getattr(model, "quantizer", None)
    if quantizer is not None:
        with torch.no_grad():
            idx = model.code_indices(val)
        from ..model.quantizer import perplexity

        counts = torch.bincount(idx.flatten(), minlength=config.num_codes).float()
        report["usage"] = (counts / counts.sum()).tolist()
        report["perplexity"] = float(perplexity(idx, config.num_codes))
    path = save_checkpoint(
        out,
        model.state_dict(),
        {"kind": "shape", "model": config.to_dict()},
        {"report": report, "iterations": iterations, "seed": seed, "train": [str(s) for s in train_sources]},
    )
    report["path"] = str(path)
    log.info("shape model: val IoU %.4f, saved to %s", report["val_iou"], path)
    return report


def load_shape_model(path, config=None):
    """A trained shape model from a checkpoint saved by :func:`train_shape_model`."""
    from ..model import ModelConfig, build_shape_model
    from ..checkpoint import CheckpointError, load_checkpoint

    tensors, cfg, _ = load_checkpoint(path)
    if cfg.get("kind") != "shape":
        raise CheckpointError(f"{path} is not a shape-model checkpoint")
    saved = ModelConfig.from_dict(cfg["model"])
    if config is not None and (config.mask_size, config.num_codes, config.embed_dim) != (
        saved.mask_size, saved.num_codes, saved.embed_dim
    ):
        raise ValueError(f"{path}: shape model was trained for mask_size={saved.mask_size}, "
                         f"K={saved.num_codes}, D={saved.embed_dim}; the config asks otherwise")
    model = build_shape_model(config or saved)
    model.load_state_dict(tensors)
    return model.eval()
