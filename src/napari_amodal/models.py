"""Finding and loading trained models by name or path.

Names resolve, in order, to:

1. ``bundled``: the model shipped inside the package
   (``napari_amodal/models/bundled.safetensors``), checked against its SHA-256
   (``bundled.sha256``) before loading;
2. ``NAME.safetensors`` in each folder of the ``NAPARI_AMODAL_MODELS``
   environment variable (``os.pathsep``-separated; for offline sites), each
   with its ``NAME.sha256`` beside it, checked before loading;
3. ``NAME.safetensors`` in the user model folder (``~/.napari-amodal/models``
   or ``NAPARI_AMODAL_HOME/models``), where fine-tuned models are saved.

Anything else is taken as a path to a ``.safetensors`` checkpoint. Wherever a
model comes from, a ``NAME.sha256`` beside it is checked; fine-tuned models get one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).resolve().parent / "models"
BUNDLED = "bundled"


class ModelNotFoundError(FileNotFoundError):
    pass


class ChecksumError(ValueError):
    pass


def user_model_dir() -> Path:
    """Where fine-tuned models are saved and found by name."""
    home = os.environ.get("NAPARI_AMODAL_HOME")
    return (Path(home) if home else Path.home() / ".napari-amodal") / "models"


def model_dirs() -> list[Path]:
    """Folders searched for models by name, in order (bundled first)."""
    dirs = [BUNDLED_DIR]
    for part in os.environ.get("NAPARI_AMODAL_MODELS", "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part.strip()).expanduser())
    dirs.append(user_model_dir())
    return dirs


def list_models() -> dict[str, Path]:
    """``{name: path}`` of every model found by name (earlier folders win)."""
    found: dict[str, Path] = {}
    for d in model_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.safetensors")):
                found.setdefault(p.stem, p)
    return found


def resolve_model(name_or_path) -> Path:
    """The checkpoint file for a model name or path; a clear error when none exists."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix == ".safetensors" or os.sep in s or (os.altsep and os.altsep in s):
        if not p.exists():
            raise ModelNotFoundError(f"model file {p} does not exist")
        if p.is_dir():
            raise IsADirectoryError(f"{p}: is a folder, not a .safetensors model file")
        return p
    models = list_models()
    if s in models:
        return models[s]
    raise ModelNotFoundError(
        f"no model named {s!r}; known: {', '.join(sorted(models)) or 'none'} "
        f"(searched {', '.join(str(d) for d in model_dirs())})"
    )


def verify_checksum(path: Path, required: bool) -> None:
    """Check a model file against the SHA-256 recorded beside it (``NAME.sha256``).

    ``required``: a missing record is an error (the bundled model, shared model
    folders); otherwise a file without one is loaded as it is.
    """
    from .checkpoint import sha256

    record = path.with_suffix(".sha256")
    if not record.exists():
        if required:
            raise ChecksumError(f"{path}: no checksum file {record.name} beside it (make one with "
                                f"'sha256sum {path.name} > {record.name}', or reinstall)")
        return
    expected = (record.read_text().split() or [""])[0].strip().lower()
    actual = sha256(path)
    if actual != expected:
        raise ChecksumError(f"{path}: checksum mismatch (expected {expected[:12]}..., got {actual[:12]}...); "
                            "the file is damaged or was replaced: copy it again")


def _shared_dirs() -> set[Path]:
    """The package's model folder and those of ``NAPARI_AMODAL_MODELS``: their models must carry a checksum."""
    return {d.resolve() for d in model_dirs()[:-1]}


def load_model(name_or_path="bundled", device="cpu"):
    """Build the model a checkpoint describes and load its weights.

    Returns ``(model, config, extra)``: an :class:`AmodalMaskRCNN` in eval mode on
    ``device``, its :class:`ModelConfig` and the checkpoint's extra metadata.
    Loading reads tensors and JSON only; no code from the file runs.
    """
    from .model import ModelConfig, build_model
    from .checkpoint import CheckpointError, load_checkpoint

    path = resolve_model(name_or_path)
    verify_checksum(path, required=path.parent.resolve() in _shared_dirs())
    tensors, config_dict, extra = load_checkpoint(path)
    if config_dict.get("kind", "detector") != "detector":
        raise CheckpointError(f"{path} holds a {config_dict.get('kind')} model, not a segmentation model")
    config = ModelConfig.from_dict(config_dict["model"])
    model = build_model(config)
    # training state (optimiser, RNG) rides along in resumable checkpoints as "__" keys
    weights = {k: v for k, v in tensors.items() if not k.startswith("__")}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # tensors of the wrong shape
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:200])
        raise CheckpointError(f"{path}: weights do not fit the config ({detail})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the config (missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
        )
    model.eval().to(device)
    return model, config, extra


def pick_device(device: str = "auto") -> str:
    """``auto`` -> cuda, else mps, else cpu; an explicit device is checked."""
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    import re

    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' asked for, but it is not available")
    return device


def device_description(device: str = "auto") -> str:
    """What ``device`` runs on, in words: "CPU (16 cores)", "NVIDIA H200 (cuda:0)", "Apple GPU (mps)"."""
    import os

    import torch

    dev = pick_device(device)
    if dev.startswith("cuda"):
        index = int(dev.split(":")[1]) if ":" in dev else torch.cuda.current_device()
        return f"{torch.cuda.get_device_name(index)} ({dev})"
    if dev == "mps":
        return "Apple GPU (mps)"
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def available_devices() -> list[str]:
    """Devices to offer in a GUI: auto, then those present."""
    import torch

    out = ["auto", "cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out
