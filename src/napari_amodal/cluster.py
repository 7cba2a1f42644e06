"""Many stacks on a Dask cluster: one task per stack, one model per worker (no Qt).

``segment_many`` sends each input to a ``dask.distributed`` worker, which loads the model
once (kept for the worker's later stacks) and runs :func:`napari_amodal.write.segment_files`
there, so every output is written atomically by the worker that made it, exactly as one
process would write it. The cluster is a ``LocalCluster`` of ``workers`` processes on this
machine, or an existing one at ``scheduler`` (dask-jobqueue on SLURM / PBS, dask-cuda GPU
workers: see docs/cluster.md); the output folder must then be on a file system the workers share.
A stack that fails is reported with its error and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StackResult", "segment_many", "segment_on_worker"]

_SEGMENTERS: dict[tuple, object] = {}  # per worker process: one loaded model per settings


@dataclass
class StackResult:
    """What became of one input: the files written, or the error that stopped it."""

    input: str
    written: list[str] = field(default_factory=list)
    states: dict = field(default_factory=dict)
    error: str | None = None
    worker: str = ""
    peak_mb: float = 0.0  # the worker process's peak resident memory so far (MB)


def segment_on_worker(path: str, out_dir: str, model: str, device: str, threads: int, settings: dict,
                      options: dict) -> StackResult:
    """(Runs on a worker.) Segment one stack into ``out_dir``; errors are returned, not raised,
    so the caller reports them and the other stacks go on. ``settings``: keyword arguments of
    :class:`~napari_amodal.segment.Segmenter` (one loaded model per distinct settings and
    worker); ``options``: of :func:`~napari_amodal.write.segment_files`."""
    import torch

    from .segment import Segmenter
    from .write import segment_files

    torch.set_num_threads(max(int(threads), 1))
    key = (model, device, tuple(sorted(settings.items())))
    states: dict = {}
    try:
        if key not in _SEGMENTERS:
            _SEGMENTERS[key] = Segmenter.load(model, device=device, **settings)
        written = segment_files(_SEGMENTERS[key], path, out_dir, states=states, **options)
    except Exception as e:  # noqa: BLE001 - one bad stack must not stop the others
        message = str(e) if Path(path).name in str(e) else f"{Path(path).name}: {e}"
        return StackResult(path, error=message, worker=_worker_name(), peak_mb=_peak_mb())
    return StackResult(path, [str(p) for p in written], states, worker=_worker_name(), peak_mb=_peak_mb())


def _worker_name() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def segment_many(inputs: Sequence, out_dir, *, model: str = "bundled", device: str = "cpu",
                 score_threshold: float = 0.5, batch_size: int | None = None, workers: int = 2,
                 threads_per_worker: int = 1, scheduler: str | None = None, input_size=None,
                 precision: str = "float32", tta: bool = False, **options) -> Iterator[StackResult]:
    """Segment ``inputs`` (TIFF stacks) on a Dask cluster; yields a :class:`StackResult` per
    stack as each finishes (any order).

    Args:
        inputs: stack paths; their outputs go to ``out_dir`` as with ``segment``.
        model, device, score_threshold, batch_size, input_size, precision, tta: as
            :class:`~napari_amodal.segment.Segmenter`.
        workers: processes of the LocalCluster started here (ignored with ``scheduler``).
        threads_per_worker: torch threads per worker (workers x threads = the cores to use).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``) instead.
        options: keyword arguments of :func:`~napari_amodal.write.segment_files`
            (``plane``, ``channel``, ``temporal``, ``linker``).
    """
    from distributed import Client, LocalCluster, as_completed

    if scheduler is None and int(workers) < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    out = str(Path(out_dir).resolve())
    settings = {"score_threshold": float(score_threshold), "batch_size": batch_size, "input_size": input_size,
                "precision": precision, "tta": bool(tta)}
    cluster = None
    if scheduler is None:
        # one thread per worker process: each task is one stack, torch brings its own threads
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"OMP_NUM_THREADS": str(threads_per_worker),
                                                            "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            futures = {client.submit(segment_on_worker, str(Path(p).resolve()), out, model, device,
                                     threads_per_worker, settings, options, key=f"segment-{i}-{Path(p).name}",
                                     pure=False): str(p)
                       for i, p in enumerate(inputs)}
            for fut in as_completed(list(futures)):
                try:
                    yield fut.result()
                except Exception as e:  # noqa: BLE001 - a worker that died with its task
                    yield StackResult(futures[fut], error=f"{Path(futures[fut]).name}: the worker running it was lost "
                                                          f"({type(e).__name__}: {e})")
    finally:
        if cluster is not None:
            cluster.close()
