"""Where the time of ``napari-amodal segment`` goes, stage by stage.

    python benchmarks/profile_segment.py [--frames 200] [--model bundled] [--device cpu] [--threads 2]

Segments a 500 x 500 uint8 TIFF (the bundled sample time-lapse, cycled) end to end as
``segment`` does (``write.segment_files``: read, network, decoding over time, tracking,
COCO-amodal JSON, occlusion TIFF, overlay PNG) with timers wrapped around each stage, and
prints seconds, milliseconds per frame and share of the whole. Start-up (importing torch,
torchvision and napari-amodal, loading the model) is measured in a fresh process.

Stages are exclusive: the network's sub-modules (resize, backbone, occlusion branch, RPN,
box head, mask branch, mask pasting) add up to the network, and "other" is what no timer
covered (Python glue, the generator plumbing). Timers cost a few microseconds a call.
On a GPU the network's stages are only meaningful with CUDA synchronised, which this
script does at each timer (slower than a real run, but the split is right).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _stacks import sample_stack

STARTUP = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import torchvision
t2 = time.perf_counter()
import napari_amodal.cli, napari_amodal.segment, napari_amodal.write
t3 = time.perf_counter()
from napari_amodal.segment import Segmenter
seg = Segmenter.load(sys.argv[1], device=sys.argv[2])
t4 = time.perf_counter()
print(json.dumps({"import torch": t1 - t0, "import torchvision": t2 - t1,
                  "import napari_amodal": t3 - t2, "load the model": t4 - t3}))
"""


class Timers:
    """Cumulative seconds per stage; nested stages are subtracted from their parent."""

    def __init__(self, sync=None):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, start, time spent in children]
        self._sync = sync or (lambda: None)

    def start(self, name: str) -> None:
        self._sync()
        self._stack.append([name, time.perf_counter(), 0.0])

    def stop(self) -> None:
        self._sync()
        name, t0, inner = self._stack.pop()
        spent = time.perf_counter() - t0
        self.seconds[name] += spent - inner
        self.calls[name] += 1
        if self._stack:
            self._stack[-1][2] += spent

    def wrap(self, owner, attr: str, name: str, generator: bool = False) -> None:
        """Time calls of ``owner.attr`` (a generator's results are consumed inside the timer)."""
        func = getattr(owner, attr)

        @functools.wraps(func)
        def timed(*args, **kwargs):
            self.start(name)
            try:
                out = func(*args, **kwargs)
                return iter(list(out)) if generator else out
            finally:
                self.stop()

        setattr(owner, attr, timed)

    def hook(self, module, name: str) -> None:
        """Time ``module``'s forward."""
        module.register_forward_pre_hook(lambda *_: self.start(name))
        module.register_forward_hook(lambda *_: self.stop())


def install(timers: Timers, seg) -> None:
    """Wrap every stage of ``write.segment_files`` and the model's forward."""
    import tifffile

    from napari_amodal import io_images, normalize, overlay, segment, temporal, track
    from napari_amodal.data import coco

    timers.wrap(io_images, "read_stack", "read the TIFF (open, metadata)")
    timers.wrap(normalize, "to_model_input", "decode + normalise a frame")
    model = seg.model
    timers.hook(model.transform, "network: resize + batch")
    timers.hook(model.backbone, "network: backbone (ResNet + FPN)")
    if model.occlusion is not None:
        timers.hook(model.occlusion, "network: occlusion branch")
    timers.hook(model.rpn, "network: RPN")
    timers.hook(model.roi_heads, "network: box head + NMS")
    timers.hook(model.roi_heads.mask_roi_pool, "network: mask branch (RoIAlign, codes, decoder, refine)")
    timers.hook(model.roi_heads.mask_branch, "network: mask branch (RoIAlign, codes, decoder, refine)")
    timers.wrap(model.transform, "postprocess", "network: paste masks at full resolution")
    timers.wrap(segment, "outputs_to_instances", "masks to instances (threshold, boxes)")
    timers.wrap(segment, "frame_state", "masks to instances (threshold, boxes)")
    timers.wrap(temporal.TemporalDecoder, "push", "decode over time + track", generator=True)
    timers.wrap(temporal.TemporalDecoder, "flush", "decode over time + track", generator=True)
    timers.wrap(track.Tracker, "update", "decode over time + track")
    timers.wrap(tifffile.TiffWriter, "write", "write: occlusion TIFF page")
    timers.wrap(overlay, "draw_instances", "write: overlay")
    timers.wrap(overlay, "montage", "write: overlay")
    timers.wrap(coco, "masks_to_rles", "write: masks to RLE")
    timers.wrap(json, "dumps", "write: JSON text")


def profile(model: str, frames: int, device: str) -> dict:
    """(in a subprocess) one timed ``segment_files`` run after a short warm-up run."""
    import tifffile
    import torch

    from napari_amodal.segment import Segmenter
    from napari_amodal.write import segment_files

    stack = sample_stack(frames)
    seg = Segmenter.load(model, device=device)
    sync = torch.cuda.synchronize if seg.device.startswith("cuda") else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stack.tif"
        tifffile.imwrite(path, stack, compression="zlib", metadata={"axes": "TYX"})
        tifffile.imwrite(Path(tmp) / "warm.tif", stack[:4], metadata={"axes": "TYX"})
        segment_files(seg, Path(tmp) / "warm.tif", Path(tmp) / "warm")
        timers = Timers(sync)
        install(timers, seg)
        t = time.perf_counter()
        segment_files(seg, path, Path(tmp) / "out")
        total = time.perf_counter() - t
    return {"total": total, "frames": frames, "stages": dict(timers.seconds), "threads": torch.get_num_threads()}


def _child(code_or_file: list[str]) -> dict:
    out = subprocess.run([sys.executable, *code_or_file], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(run: dict, startup: dict) -> None:
    n, total = run["frames"], run["total"]
    stages = dict(run["stages"])
    stages["other (glue, generators)"] = total - sum(stages.values())
    print(f"{n} frames of 500 x 500 in {total:.2f} s = {n / total:.2f} frames/s ({run['threads']} torch threads)")
    print(f"{'stage':58s} {'s':>7s} {'ms/frame':>9s} {'share':>6s}")
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"{name:58s} {s:7.2f} {1000 * s / n:9.1f} {100 * s / total:5.1f}%")
    net = sum(s for k, s in stages.items() if k.startswith("network"))
    print(f"{'network in all':58s} {net:7.2f} {1000 * net / n:9.1f} {100 * net / total:5.1f}%")
    print("start-up, fresh process:", ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()),
          f"= {sum(startup.values()):.2f} s")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        print(json.dumps(profile(argv[1], int(argv[2]), argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    startup = _child(["-c", STARTUP, args.model, args.device])
    run = _child([__file__, "_child", args.model, str(args.frames), args.device])
    report(run, startup)


if __name__ == "__main__":
    main()
