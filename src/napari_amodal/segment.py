"""Segmenter: a trained model applied to frames, stacks and time-lapses.

``Segmenter.segment(...)`` is a generator: it yields ``(done, total)`` after each
batch of frames and *returns* the list of :class:`FrameInstances` (with their
occlusion maps), so the CLI, the napari widget and tests share one code path and
the caller can stop between batches (close the generator; the frames done so far
are in :attr:`Segmenter.last_results`). ``iter_frames`` streams results one frame
at a time for long stacks.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Generator, Iterator, Sequence

import numpy as np

from .instances import FrameInstances, masks_to_boxes

log = logging.getLogger(__name__)

Progress = tuple[int, int]


def frames_view(stack: np.ndarray, axes: str | None = None, plane: int | None = None,
                channel: int | None = None) -> tuple[np.ndarray, str]:
    """Normalise an image or stack to a sequence of 2D frames.

    Args:
        stack: (Y, X), (T, Y, X), (T, Z, Y, X), (T, Z, C, Y, X) -- any order of
            T, Z, C before Y, X -- each optionally with a trailing RGB(A) axis S;
            integers or floats of any width.
        axes: e.g. ``"TZYX"`` to say what the axes are; guessed from the shape otherwise.
        plane: focal plane for stacks with a Z axis (default: the middle one).
        channel: channel for stacks with a C axis (default: the first).
    Returns:
        ``(frames, axes)`` with frames shaped (T, Y, X) or (T, Y, X, S); a
        view (lazy arrays stay lazy).
    """
    from .io_images import guess_axes

    stack = stack if hasattr(stack, "dtype") and hasattr(stack, "shape") else np.asarray(stack)
    dtype = np.dtype(stack.dtype)
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"images must be integer or float, got {dtype}")
    axes = (axes or guess_axes(stack.shape)).upper()
    if len(axes) != stack.ndim:
        raise ValueError(f"axes {axes!r} do not match an image of shape {stack.shape}")
    core = axes[:-1] if axes.endswith("S") else axes
    if set(axes) - set("TZCYXS") or len(set(axes)) != len(axes) or not core.endswith("YX") or "S" in core:
        raise ValueError(f"cannot segment axes {axes!r}: expected Y and X last (T, Z, C and RGB S optional)")
    for name, index, label in (("Z", plane, "focal plane"), ("C", channel, "channel")):
        if name in axes:
            stack, axes = _take_axis(stack, axes, name, index, label)
    if "T" not in axes:
        stack, axes = stack[None], "T" + axes
    if min(stack.shape[1:3]) < 16:
        raise ValueError(f"frames of {tuple(stack.shape[1:3])} pixels are too small to segment (16 x 16 at least)")
    return stack, axes


def _take_axis(stack, axes: str, name: str, index: int | None, label: str):
    """One index along axis ``name`` (default: the middle plane for Z, the first channel for C)."""
    k = axes.index(name)
    n = stack.shape[k]
    index = (n // 2 if name == "Z" else 0) if index is None else int(index)
    if not 0 <= index < n:
        raise ValueError(f"{label} {index} is outside 0..{n - 1}")
    return stack[(slice(None),) * k + (index,)], axes.replace(name, "")


EMBRYO_PX = 125  # embryo width (px) at the model's input that the bundled model sees best (hoffman val median)
PROBE_FRAMES = 3  # frames of a stack segmented at the trained size to measure its embryo
MAX_UPSCALE = 1.72  # input sizes up to 1.72 x the trained one (224 -> 384)


def embryo_extent(frames: Sequence[FrameInstances]) -> float | None:
    """Median over ``frames`` of the side of the box around all their cells (px), None if no cells."""
    sides = []
    for f in frames:
        if len(f):
            b = f.boxes
            sides.append(max(b[:, 2].max() - b[:, 0].min(), b[:, 3].max() - b[:, 1].min()))
    return float(np.median(sides)) if sides else None


BLANK_STD = 0.004  # below this spread of the normalised frame (1 grey level in 8 bits) nothing can be seen


def frame_state(image, n_cells: int) -> str:
    """What a segmented frame is, for the file and the summary: ``cells``,
    ``no_cells`` (nothing found: an empty dish, a compacted embryo, out of focus)
    or ``blank`` (no contrast at all: lamp off, saturated, a dropped frame).
    ``image``: the model's input (3, H, W) in [0, 1] (tensor or array). A frame
    without contrast is blank whatever the model found in it."""
    if float(image[0].std()) < BLANK_STD:
        return "blank"
    return "cells" if n_cells else "no_cells"


def outputs_to_instances(
    output: dict,
    shape: tuple[int, int],
    *,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    file_name: str = "",
    frame: int = 0,
) -> FrameInstances:
    """One image's model output -> FrameInstances.

    ``output``: ``boxes (N, 4)``, ``labels (N,)``, ``scores (N,)``, ``masks
    (N, 1, H, W)`` probabilities (or booleans, already thresholded), optional ``occlusion
    (H, W)`` probabilities (torch tensors). Cells below ``score_threshold`` or with empty
    masks are dropped.
    """
    import torch

    scores = output["scores"].detach().float().cpu().numpy()
    keep = scores >= score_threshold
    masks = output["masks"][:, 0]
    masks = masks if masks.dtype == torch.bool else masks >= mask_threshold  # bool: pasted at the threshold
    masks = masks.cpu().numpy()[keep] if len(scores) else np.zeros((0, *shape), bool)
    labels = output["labels"].cpu().numpy()[keep]
    scores = scores[keep]
    nonempty = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
    masks, labels, scores = masks[nonempty], labels[nonempty], scores[nonempty]
    occ = output.get("occlusion")
    occ = None if occ is None else occ.detach().float().cpu().numpy().astype(np.float32)
    return FrameInstances(
        masks=masks.reshape(len(masks), *shape),
        boxes=masks_to_boxes(masks),
        scores=scores.astype(np.float32),
        labels=labels.astype(np.int64),
        track_ids=np.full(len(masks), -1, np.int64),
        parent_ids=np.full(len(masks), -1, np.int64),
        occlusion=occ,
        file_name=file_name,
        frame=int(frame),
    )


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where oneDNN runs
    bfloat16 convolutions faster than float32 ones; emulated bfloat16 is slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private check: absent in some builds
        return False


class Segmenter:
    """A loaded model and the settings to run it.

    Args:
        model: an :class:`~napari_amodal.model.AmodalMaskRCNN` (moved to ``device``, eval mode).
        device: ``auto`` (CUDA, else MPS, else CPU) or a torch device string.
        score_threshold: minimum detection score of a kept cell (0..1).
        mask_threshold: probability above which a pixel belongs to a mask.
        batch_size: frames per forward pass (default 4: on a 2-core CPU 1.4x the frames/s of one
            at a time, the same cells; docs/benchmarks.md).
        input_size: the long side (px) frames are resized to for the network: ``None`` what
            the model's config says (``auto_input_size``: "auto", else the trained size);
            ``"trained"`` the trained size; ``"auto"`` per stack, from the trained size up to 1.72x of it, so
            that the embryo (measured on a few frames at the trained size) is as large as
            the model saw it best; or a number.
        precision: ``"float32"`` or ``"bfloat16"``: the type the backbone and the occlusion
            branch compute in (``AmodalMaskRCNN.feature_dtype``; boxes and masks are always
            decoded in float32). bfloat16 is 1.25x faster on a CPU with native bfloat16
            (:func:`cpu_has_bfloat16`) but moves mask outlines (IoU 0.98-0.99 with float32's),
            so float32 is the default.
        channels_last: run the network on NHWC tensors (default: on the CPU, where oneDNN's
            convolutions and pooling run 1.15x faster on them; the same cells).
        tta: test-time augmentation: every frame is also segmented mirrored left-right and the
            two answers merged (:mod:`napari_amodal.tta`: a cell found in one view only keeps
            half its score). Twice the network time.
    """

    def __init__(self, model, device: str = "auto", score_threshold: float = 0.5, mask_threshold: float = 0.5,
                 batch_size: int | None = None, config=None, name: str = "", input_size: int | str | None = None,
                 precision: str = "float32", channels_last: bool | None = None, tta: bool = False):
        from .models import pick_device

        self.device = pick_device(device)
        self.model = model.eval().to(self.device)
        self.config = config
        self.name = name
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.batch_size = batch_size or 4
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
        self.precision = precision
        self.tta = bool(tta)
        self.channels_last = self.device == "cpu" if channels_last is None else bool(channels_last)
        self.last_results: list[FrameInstances] = []
        if input_size is None and getattr(config, "auto_input_size", False):
            input_size = "auto"  # what the model's config asks for
        if input_size == "trained":
            input_size = None
        if not (input_size is None or input_size == "auto" or (isinstance(input_size, int) and input_size >= 32)):
            raise ValueError(f"input size must be 'auto', 'trained' or a number of pixels >= 32, got {input_size!r}")
        self.input_size = input_size
        transform = getattr(self.model, "transform", None)  # absent in models scripted for tests
        self.trained_size = int(transform.max_size) if transform is not None else None
        # the pair the model was trained with, restored after every stack (min may differ from max)
        self._trained = (transform.min_size, transform.max_size) if transform is not None else None
        if input_size is not None and self.trained_size is None:
            raise ValueError("this model does not resize its input: input_size must be None")

    @classmethod
    def load(cls, name_or_path="bundled", device: str = "auto", **kwargs) -> "Segmenter":
        """A Segmenter for a model name (``bundled``, or one in a model folder) or a checkpoint path."""
        from .models import load_model, pick_device

        dev = pick_device(device)
        model, config, _ = load_model(name_or_path, dev)
        return cls(model, dev, config=config, name=str(name_or_path), **kwargs)

    # ------------------------------------------------------------------
    def iter_frames(
        self,
        stack: np.ndarray,
        *,
        axes: str | None = None,
        plane: int | None = None,
        channel: int | None = None,
        frames: Sequence[int] | None = None,
        file_name: str = "",
        track: bool = True,
        tracker=None,
        temporal: bool = True,
    ) -> Iterator[FrameInstances]:
        """Segment frames one batch at a time, yielding one FrameInstances per frame.

        Memory stays bounded by one batch: the stack may be a memory-mapped or
        lazily read array; each frame is converted when its batch comes. With
        ``track``, consecutive frames are linked (:class:`~napari_amodal.track.Tracker`):
        cells get track ids that persist over time and parent ids at divisions;
        ``tracker`` continues an existing one (see :meth:`Tracker.continue_from`).
        With ``temporal`` (and ``track``), the frames are decoded as one time-lapse
        (:mod:`napari_amodal.temporal`): counts that respect the lineage, a missed cell
        carried from the frame before (``inferred``), a one-frame spurious one dropped;
        each frame then comes a few frames later. Without it, each frame keeps the cells
        scored >= ``score_threshold``.
        """
        from .temporal import TemporalDecoder
        from .track import Tracker

        tracker = (tracker or Tracker()) if track else None
        decoder = TemporalDecoder(tracker=tracker, threshold=self.score_threshold) if track and temporal else None
        # the decoder weighs every detection the model gives; its own cut-off stays 0.05
        threshold = min(self.score_threshold, 0.05) if decoder is not None else self.score_threshold

        view, _ = frames_view(stack, axes, plane, channel)
        indices = list(range(len(view))) if frames is None else [int(t) for t in frames]
        for t in indices:
            if not 0 <= t < len(view):
                raise ValueError(f"frame {t} is outside 0..{len(view) - 1}")
        size = self.stack_input_size(view, indices)
        with self._configured(size):
            yield from self._iter_batches(view, indices, file_name, threshold, decoder, tracker)

    @contextmanager
    def _configured(self, size: int | None):
        """The model set up for one stack and put back as trained afterwards (it may be shared,
        e.g. with fine-tuning): see :meth:`_set_model`."""
        try:
            self._set_model(size, running=True)
            yield
        finally:
            self._set_model(None, running=False)

    def _set_model(self, size: int | None, running: bool) -> None:
        """While ``running``: frames resized to ``size`` px (long side; None: as trained),
        features in :attr:`precision`, NHWC tensors with :attr:`channels_last`, masks pasted as
        booleans at :attr:`mask_threshold` box by box; otherwise all as trained."""
        import torch

        self._set_input_size(size)
        if hasattr(self.model, "feature_dtype"):
            self.model.feature_dtype = torch.bfloat16 if running and self.precision == "bfloat16" else None
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last if running else torch.contiguous_format)
        transform = getattr(self.model, "transform", None)
        if hasattr(transform, "binary_mask_threshold"):
            transform.binary_mask_threshold = self.mask_threshold if running else None

    def _set_input_size(self, size: int | None) -> None:
        """Resize frames to ``size`` px (long side) for the network; None: as trained."""
        if self._trained is None:
            return
        if size is None:
            self.model.transform.min_size, self.model.transform.max_size = self._trained
        else:
            self.model.transform.min_size = (int(size),)
            self.model.transform.max_size = int(size)

    def stack_input_size(self, view, indices: Sequence[int]) -> int | None:
        """The network input size for this stack (see ``input_size``; None: as trained): with
        "auto", a few frames spread over ``indices`` are segmented at the trained size first."""
        if self.input_size is None:
            return None
        if self.input_size != "auto":
            return int(self.input_size)
        import torch

        from .normalize import to_model_input
        from .utils import flush_denormals

        probe = [indices[int(i)] for i in np.linspace(0, len(indices) - 1, min(PROBE_FRAMES, len(indices)))]
        images = [torch.from_numpy(to_model_input(np.asarray(view[t]))).to(self.device) for t in dict.fromkeys(probe)]
        with self._configured(None), torch.inference_mode(), flush_denormals():
            outputs = self.model(images)
        found = [outputs_to_instances(out, tuple(x.shape[-2:]), score_threshold=0.5) for out, x in zip(outputs, images)]
        side = embryo_extent(found)
        if side is None:
            return None
        at_trained = side * self.trained_size / max(view.shape[1:3])  # the embryo at the trained size (px)
        scale = float(np.clip(EMBRYO_PX / max(at_trained, 1.0), 1.0, MAX_UPSCALE))
        size = int(round(self.trained_size * scale / 32) * 32)
        log.debug("embryo %.0f px at %d: input size %d", at_trained, self.trained_size, size)
        return size

    def _iter_batches(self, view, indices, file_name, threshold, decoder, tracker) -> Iterator[FrameInstances]:
        import torch

        from .normalize import to_model_input

        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            images = [torch.from_numpy(to_model_input(np.asarray(view[t]))).to(self.device) for t in batch]
            for t, inst, img in zip(batch, self._detect(images, threshold, file_name, batch), images):
                inst.meta["state"] = frame_state(img, len(inst))
                if inst.meta["state"] == "blank" and len(inst):  # anything found there is invented
                    inst = inst.select(np.zeros(len(inst), bool))
                if decoder is not None:
                    yield from decoder.push(inst)
                else:
                    yield tracker.update(inst) if tracker is not None else inst
        if decoder is not None:
            yield from decoder.flush()

    def _detect(self, images, threshold: float, file_name: str, frames) -> list[FrameInstances]:
        """One forward pass (two with :attr:`tta`) over model inputs (3, H, W) -> their instances."""
        import torch

        from .utils import flush_denormals

        def run(batch):
            with torch.inference_mode(), flush_denormals():
                outputs = self.model(batch)
            return [outputs_to_instances(out, tuple(img.shape[-2:]), score_threshold=threshold / 2 if self.tta else threshold,
                                         mask_threshold=self.mask_threshold, file_name=file_name, frame=t)
                    for t, out, img in zip(frames, outputs, batch)]

        found = run(images)
        if not self.tta:
            return found
        from .tta import merge_views, unflip

        mirrored = run([img.flip(-1) for img in images])
        merged = [merge_views(a, unflip(b)) for a, b in zip(found, mirrored)]
        return [m.select(m.scores >= threshold) for m in merged]

    def segment(self, stack: np.ndarray, **kwargs) -> Generator[Progress, None, list[FrameInstances]]:
        """Generator: yields ``(done, total)`` per frame, returns the frames' instances.

        Keyword arguments as :meth:`iter_frames`. If the caller stops early
        (``close()``), :attr:`last_results` holds the frames finished so far.
        """
        view, _ = frames_view(stack, kwargs.get("axes"), kwargs.get("plane"), kwargs.get("channel"))
        frames = kwargs.get("frames")
        total = len(view) if frames is None else len(frames)
        self.last_results = results = []
        yield 0, total
        for inst in self.iter_frames(stack, **kwargs):
            results.append(inst)
            yield len(results), total
        return results

    def __call__(self, stack: np.ndarray, **kwargs) -> list[FrameInstances]:
        """Run :meth:`segment` to the end and return its result."""
        from .utils import drain

        return drain(self.segment(stack, **kwargs))
