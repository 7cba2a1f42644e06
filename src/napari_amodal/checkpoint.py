"""Checkpoints: safetensors weights with the JSON config inside, written atomically.

One file ``NAME.safetensors`` holds the tensors and, in its string metadata,
``format`` (``napari-amodal``), ``format_version``, ``config`` (the model config
as JSON) and ``extra`` (JSON: iteration, metrics, optimiser state reference...).
A ``NAME.json`` beside it repeats config and extra for people and tools; the
loader reads only the safetensors file, so the pair can never disagree.

Loading never executes code from the file (safetensors holds raw tensors and
strings only; no pickle).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

FORMAT = "napari-amodal"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a napari-amodal checkpoint, or one from a newer version."""


def save_checkpoint(path, tensors: Mapping[str, Any], config: Mapping, extra: Mapping | None = None) -> Path:
    """Save ``tensors`` (a state_dict) with ``config`` to ``path`` (``.safetensors``).

    Shared-storage tensors are copied so safetensors accepts them. The previous
    file stays intact until the new one is completely on disk.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(dict(config), sort_keys=True),
        "extra": json.dumps(dict(extra or {}), sort_keys=True, default=str),
    }
    from .atomic import atomic_path, atomic_write_text

    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config), "extra": dict(extra or {})}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True, default=str))
    return path


def read_metadata(path) -> dict:
    """``{format_version, config, extra}`` of a checkpoint, without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-amodal checkpoint (format {meta.get('format')!r})")
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this napari-amodal understands ({FORMAT_VERSION}); upgrade"
        )
    return {"format_version": version, "config": json.loads(meta["config"]), "extra": json.loads(meta.get("extra", "{}"))}


def load_checkpoint(path, device: str = "cpu") -> tuple[dict, dict, dict]:
    """Load ``(tensors, config, extra)``; raises CheckpointError for foreign files."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    tensors = load_file(str(path), device=device)
    return tensors, meta["config"], meta["extra"]


def sha256(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (for bundled-model checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
