"""The ``napari-amodal`` console script.

Heavy imports (torch, pycocotools, scikit-image) happen inside the command
functions, after argument parsing, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

log = logging.getLogger("napari_amodal")


class _Progress:
    """A plain progress callback ``(done, total)`` printed as a bar on stderr."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self.label, file=sys.stderr, mininterval=0.5)
        self._bar.update(done - self._bar.n)  # respects tqdm's refresh interval
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None



# ---------------------------------------------------------------------------
# option types: a bad value is a usage error (exit 2) before anything is read or written


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _float_in(low: float, high: float = math.inf, *, open_low: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < low or value > high or (open_low and value == low):
            bound = f"{'>' if open_low else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {bound}")
        return value

    parse.__name__ = "number"
    return parse


COUNT, INDEX = _int_at_least(1), _int_at_least(0)
FRACTION, RATE, NON_NEGATIVE = _float_in(0.0, 1.0), _float_in(0.0, open_low=True), _float_in(0.0)
FINITE = _float_in(-math.inf)
OPTION_TYPES = {  # option -> type, for every numeric option of every command
    "--n-train": COUNT, "--n-test": COUNT, "--size": _int_at_least(16), "--sequences": COUNT, "--frames": COUNT,
    "--planes": COUNT, "--start-cells": COUNT, "--end-cells": COUNT, "--iterations": COUNT, "--batch-size": COUNT,
    "--vqvae-iterations": COUNT, "--mask-size": _int_at_least(8), "--codes": _int_at_least(2), "--val-every": INDEX,
    "--checkpoint-every": COUNT, "--workers": INDEX, "--plane": INDEX, "--channel": INDEX,
    "--replay-synthetic": INDEX, "--persist": COUNT, "--lr": RATE, "--um-per-px": RATE,
    "--minutes-per-frame": RATE, "--score-threshold": FRACTION, "--val-fraction": FRACTION,
    "--replay-fraction": FRACTION, "--anchor": NON_NEGATIVE, "--start-hours": FINITE,
}


class _Parser(argparse.ArgumentParser):
    """Numeric options get their checked type from :data:`OPTION_TYPES` (sub-commands too);
    a usage error is one line, like every other failure (argparse prints its usage block first)."""

    def add_argument(self, *names, **kwargs):
        if names and names[0] in OPTION_TYPES and kwargs.get("type") in (int, float):
            kwargs["type"] = OPTION_TYPES[names[0]]
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

# ---------------------------------------------------------------------------
# commands


def cmd_synth_shapes(args) -> int:
    from .data.shapes import write_shapes_dataset

    progress = _Progress("shapes", args.quiet)
    paths = write_shapes_dataset(
        args.out, n_train=args.n_train, n_test=args.n_test, seed=args.seed, size=args.size, progress=progress
    )
    progress.close()
    for split, p in paths.items():
        print(f"{split}: {p}")
    return 0


def cmd_synth_embryo(args) -> int:
    from .data.embryo import write_embryo_dataset

    progress = _Progress("embryo frames", args.quiet)
    if args.family == "volume":  # its sizes and stages are drawn per sequence unless given
        from .data.embryo_volume import write_volume_dataset as write
    else:
        write = write_embryo_dataset
        args.size, args.start_cells, args.end_cells = args.size or 500, args.start_cells or 1, args.end_cells or 8
    path = write(
        args.out,
        n_sequences=args.sequences,
        n_frames=args.frames,
        seed=args.seed,
        size=args.size,
        n_planes=args.planes,
        start_cells=args.start_cells,
        end_cells=args.end_cells,
        progress=progress,
    )
    progress.close()
    print(f"annotations: {path}")
    return 0


def cmd_evaluate(args) -> int:
    from .data.coco import OcclusionPages, read_amodal
    from .evaluate import evaluate_frames, format_report

    # lazy records: decoded one frame at a time, so memory stays that of one frame's masks
    gt, categories = read_amodal(args.gt, lazy=True)
    pred, _ = read_amodal(args.pred, lazy=True)
    report = evaluate_frames(gt, pred, categories or None, occlusion_of=OcclusionPages(args.pred))
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in report.items()}))
    else:
        print(format_report(report))
    return 0


def cmd_train_vqvae(args) -> int:
    from .model import get_config
    from .train.shape import train_shape_model

    config = get_config(args.config)
    if args.mask_size:
        config = config.replace(mask_size=args.mask_size)
    if args.codes:
        config = config.replace(num_codes=args.codes)
    bar = _Progress("shape model", args.quiet)
    report = train_shape_model(
        config, args.data, Path(args.out) / "shape.safetensors", val_sources=args.val, iterations=args.iterations,
        batch_size=args.batch_size, seed=args.seed, device=_device(args.device),
        progress=lambda i, n, row: bar(i, n),
    )
    bar.close()
    print(f"held-out reconstruction IoU: {report['val_iou']:.4f}")
    if "perplexity" in report:
        usage = " ".join(f"{u:.2f}" for u in report["usage"])
        print(f"codebook perplexity: {report['perplexity']:.2f} of {config.num_codes}  (use per code: {usage})")
    print(f"saved: {report['path']}")
    return 0


def _device(name: str) -> str:
    from .models import pick_device

    return pick_device(name)


def cmd_train(args) -> int:
    from .atomic import check_folder
    from .model import get_config
    from .train.loop import TrainSettings, train_detector
    from .train.shape import load_shape_model, train_shape_model

    config = get_config(args.config)
    if args.head:
        config = config.replace(mask_head=args.head)
    if args.no_occlusion:
        config = config.replace(occlusion=False)
    out = check_folder(args.out, "--out folder")
    device = _device(args.device)
    settings = TrainSettings(  # checked here, before the shape model may take minutes
        iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=device,
        val_every=args.val_every, checkpoint_every=args.checkpoint_every, num_workers=args.workers,
        input_sizes=tuple(args.input_sizes or ()),
    )
    shape_model = None
    if config.mask_head != "fcn" and args.init is None:
        shape_path = Path(args.vqvae) if args.vqvae else out / "shape.safetensors"
        if not shape_path.exists():
            if args.vqvae:
                raise FileNotFoundError(f"shape model {shape_path} does not exist")
            print(f"no --vqvae given: training the shape model first ({args.vqvae_iterations} iterations)")
            bar = _Progress("shape model", args.quiet)
            report = train_shape_model(config, args.data, shape_path, val_sources=args.val,
                                       iterations=args.vqvae_iterations, seed=args.seed, device=device,
                                       progress=lambda i, n, row: bar(i, n))
            bar.close()
            print(f"shape model: held-out reconstruction IoU {report['val_iou']:.4f}")
        shape_model = load_shape_model(shape_path, config)
    gen = train_detector(config, args.data, out, settings, val_sources=args.val, shape_model=shape_model,
                         init=args.init, resume=not args.restart)
    bar = _Progress("training", args.quiet)
    try:
        while True:
            ev = next(gen)
            bar(ev.iteration, ev.total)
            if ev.validation:
                v = ev.validation
                print(f"\niteration {ev.iteration}: validation AP {v['AP']}, AP50 {v['AP50']}", file=sys.stderr)
    except StopIteration as stop:
        final = stop.value
    bar.close()
    print(f"model: {final}")
    return 0


def cmd_finetune(args) -> int:
    from .atomic import check_folder
    from .train.finetune import finetune

    check_folder(args.out, "--out folder")
    gen = finetune(
        args.init, args.data, args.out, iterations=args.iterations, lr=args.lr, train=args.train,
        device=args.device, val_fraction=args.val_fraction, replay=args.replay,
        replay_fraction=args.replay_fraction, synthetic_replay=args.replay_synthetic, anchor=args.anchor,
        seed=args.seed, name=args.name, batch_size=args.batch_size,
        overwrite=args.force, resume=args.resume,
        val_every=args.val_every,
    )
    bar = _Progress("fine-tuning", args.quiet)
    before = after = None
    try:
        while True:
            ev = next(gen)
            stage = ev.extra.get("stage")
            if stage == "baseline":
                before = ev.validation
            elif stage == "replay":
                if ev.extra["done"] == 0:
                    print(f"rendering {ev.extra['frames']} synthetic frames to replay...", file=sys.stderr)
            elif stage == "shape":
                print(f"shape model refitted: held-out reconstruction IoU {ev.extra['report']['val_iou']:.4f}",
                      file=sys.stderr)
            else:
                bar(ev.iteration, ev.total)
                if ev.validation:
                    after = ev.validation
    except StopIteration as stop:
        final = stop.value
    finally:
        bar.close()

    def ap(v):
        return "n/a" if not v or v.get("AP") is None else f"{v['AP']:.4f} (AP50 {v['AP50']:.4f})"

    if before or after:
        print(f"validation AP before: {ap(before)}")
        print(f"validation AP after:  {ap(after)}")
    else:
        print("no validation (a single frame, or --val-fraction 0)")
    print(f"model: {final}")
    if args.name:
        print(f"available by name: {args.name}")
    return 0


def _output_stems(inputs, verb: str) -> list[str]:
    """The output file stem of each input; a ValueError when two would write the same files."""
    from .write import output_stem

    stems = [output_stem(p) for p in inputs]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ValueError(f"inputs would write the same output files: {', '.join(clash)}; "
                         f"{verb} them into separate --out folders")
    return stems


def _segment_on_cluster(args) -> int:
    from .cluster import segment_many

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    for p in args.inputs:  # inputs are checked here, before any worker starts
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: no such image file")
    where = args.scheduler or f"a local cluster of {args.workers} worker(s)"
    print(f"model {args.model}: {len(args.inputs)} stack(s) on {where}", file=sys.stderr)
    bar = _Progress("stacks", args.quiet)
    bar(0, len(args.inputs))
    failed = 0
    results = segment_many(args.inputs, args.out, model=args.model, device=args.device,
                           score_threshold=args.score_threshold, batch_size=args.batch_size,
                           workers=args.workers or 1, threads_per_worker=args.threads_per_worker,
                           scheduler=args.scheduler, input_size=args.input_size, precision=args.precision,
                           tta=args.tta, plane=args.plane, channel=args.channel,
                           temporal=not args.per_frame, linker=args.linker)
    for done, r in enumerate(results, start=1):
        if r.error:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
        else:
            print("  ".join(r.written))
        bar(done, len(args.inputs))
    bar.close()
    if failed:
        print(f"{failed} of {len(args.inputs)} stack(s) failed; the others are written", file=sys.stderr)
    return 1 if failed else 0


def _input_size(text: str):
    if text in ("auto", "trained"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, trained or a number of pixels, got {text!r}") from None


def cmd_segment(args) -> int:
    from .segment import Segmenter
    from .write import segment_files

    _output_stems(args.inputs, "segment")
    if args.workers is not None or args.scheduler:
        return _segment_on_cluster(args)
    from .io_images import read_stack
    from .segment import frames_view

    for inp in args.inputs:  # every input read and checked before the first output is written
        frames_view(*read_stack(inp), args.plane, args.channel)
    segmenter = Segmenter.load(args.model, device=args.device, score_threshold=args.score_threshold,
                               batch_size=args.batch_size, input_size=args.input_size, precision=args.precision,
                               tta=args.tta)
    if not args.quiet:
        print(f"model {args.model} on {segmenter.device} ({segmenter.precision} features)", file=sys.stderr)
    for inp in args.inputs:
        bar = _Progress(Path(inp).name, args.quiet)
        states: dict = {}
        written = segment_files(segmenter, inp, args.out, plane=args.plane, channel=args.channel, progress=bar,
                                states=states, temporal=not args.per_frame, linker=args.linker)
        bar.close()
        print("  ".join(str(p) for p in written))
        empty = states.get("no_cells", 0) + states.get("blank", 0)
        if empty:  # reported, not filled with invented cells
            print(f"{Path(inp).name}: {empty} frame(s) without cells ({states.get('blank', 0)} blank: no contrast; "
                  "the rest empty, compacted or out of focus); their 'state' is in the JSON", file=sys.stderr)
        if states.get("inferred"):
            print(f"{Path(inp).name}: {states['inferred']} cell(s) not detected in their frame but seen before and "
                  "after were carried over ('inferred': true in the JSON)", file=sys.stderr)
    return 0


def cmd_measure(args) -> int:
    from .atomic import check_folder
    from .data.coco import read_amodal
    from .measure import measure, write_measurements

    check_folder(args.out, "--out folder")
    if args.minutes_per_frame is not None and args.minutes_per_frame <= 0:
        raise ValueError(f"--minutes-per-frame must be positive, got {args.minutes_per_frame}")
    if args.start_hours and args.minutes_per_frame is None:
        raise ValueError("--start-hours needs --minutes-per-frame (the frame interval) to place the frames in time")
    stems = _output_stems(args.inputs, "measure")
    hours = args.minutes_per_frame / 60.0 if args.minutes_per_frame is not None else None
    for inp, stem in zip(args.inputs, stems):
        records, _ = read_amodal(inp, lazy=True)  # one frame's masks in memory at a time
        m = measure(records, um_per_px=args.um_per_px, hours_per_frame=hours, start_hours=args.start_hours,
                    score_threshold=args.score_threshold, persist=args.persist)
        written = write_measurements(m, args.out, stem)
        if not args.quiet:
            print(m.summary())
        print("  ".join(str(p) for p in written))
    return 0


def cmd_export(args) -> int:
    from .atomic import check_folder
    from .data.coco import read_amodal
    from .data.ctc import write_ctc
    from .write import output_stem

    if args.score_threshold is not None and not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold must be between 0 and 1, got {args.score_threshold}")
    check_folder(args.out, "--out folder")
    suffix = "_GT" if args.kind == "gt" else "_RES"
    jobs = []  # (records, file_name, folder): every folder is decided before any is written
    for inp in args.inputs:
        records, _ = read_amodal(inp, lazy=True)  # masks are decoded only when a frame is loaded
        for name in dict.fromkeys(r.file_name for r in records):
            stem = output_stem(name) if name else Path(inp).stem
            jobs.append((records, name, Path(args.out) / f"{stem}{suffix}"))
    folders = [str(j[2]) for j in jobs]
    clash = sorted({f for f in folders if folders.count(f) > 1})
    if clash:
        raise ValueError(f"two time-lapses would be exported into the same folder: {', '.join(clash)}; "
                         "export them into separate --out folders")
    for records, name, folder in jobs:
        frames = [r.load() for r in records if r.file_name == name]
        if args.score_threshold is not None:
            frames = [f.select(f.scores >= args.score_threshold) for f in frames]
        print(write_ctc(frames, folder, kind=args.kind))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    from .train.finetune import DEFAULTS as FT  # plain data (no torch import)

    from . import __version__

    p = _Parser(
        prog="napari-amodal",
        description="Amodal instance segmentation of overlapping cells (IVF embryo blastomeres).",
    )
    p.add_argument("--version", action="version", version=f"napari-amodal {__version__}")
    # -q / -v work before or after the command name
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_parser = sub.add_parser

    def add_parser(*a, **k):
        return _add_parser(*a, parents=[common], **k)

    sub.add_parser = add_parser
    sub.required = True

    synth = sub.add_parser("synth", help="render synthetic data with exact amodal ground truth")
    ssub = synth.add_subparsers(dest="kind", metavar="KIND")
    ssub.required = True
    _add_kind = ssub.add_parser
    ssub.add_parser = lambda *a, **k: _add_kind(*a, parents=[common], **k)

    sh = ssub.add_parser("shapes", help="the seed paper's overlapping shapes (224x224 RGB, 1-9 shapes)")
    sh.add_argument("out", type=Path, help="output folder (train/, test/, train.json, test.json)")
    sh.add_argument("--n-train", type=int, default=5000, help="training images (default 5000)")
    sh.add_argument("--n-test", type=int, default=1000, help="test images (default 1000)")
    sh.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(func=cmd_synth_shapes)

    em = ssub.add_parser("embryo", help="embryo time-lapses: TIFF per sequence + COCO-amodal JSON (two families)")
    em.add_argument("--family", choices=["hoffman", "volume"], default="hoffman",
                    help="hoffman: 500 px 8-bit Hoffman-like relief, 1->8 cells (the bundled model's data); "
                         "volume: DIC / phase / bright field from a 3-D refractive-index volume, 256-1024 px, "
                         "8-16 bit, zygote to 16 cells and compaction (default hoffman)")
    em.add_argument("out", type=Path, help="output folder (embryo_NNNN.tif + annotations.json)")
    em.add_argument("--sequences", type=int, default=4, help="number of time-lapses (default 4)")
    em.add_argument("--frames", type=int, default=40, help="frames per time-lapse (default 40)")
    em.add_argument("--planes", type=int, default=1, help="focal planes; >1 writes T,Z,Y,X stacks (default 1)")
    em.add_argument("--size", type=int, help="frame side in pixels (default 500; volume: random 256..1024)")
    em.add_argument("--start-cells", type=int, help="cells in the first frame (default 1; volume: random per sequence)")
    em.add_argument("--end-cells", type=int, help="cells in the last frame (default 8; volume: random, up to 16)")
    em.add_argument("--seed", type=int, default=0)
    em.set_defaults(func=cmd_synth_embryo)

    ev = sub.add_parser("evaluate", help="amodal mask AP (pycocotools) of predictions against ground truth")
    ev.add_argument("gt", type=Path, help="ground-truth COCO-amodal JSON (KINS/COCOA also read)")
    ev.add_argument("pred", type=Path, help="predicted COCO-amodal JSON, matched by (file_name, frame)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    tv = sub.add_parser("train-vqvae", help="train the shape VQ-VAE on complete masks of COCO-amodal data")
    tv.add_argument("--config", default="lean", help="model config: lean, paper or a JSON file (default lean)")
    tv.add_argument("--data", type=Path, nargs="+", required=True, help="COCO-amodal JSON file(s)")
    tv.add_argument("--val", type=Path, nargs="*", help="held-out COCO-amodal JSON (default: 10%% of --data)")
    tv.add_argument("--out", type=Path, required=True, help="folder; writes shape.safetensors")
    tv.add_argument("--iterations", type=int, default=3000)
    tv.add_argument("--batch-size", type=int, default=128)
    tv.add_argument("--mask-size", type=int, help="mask side M (multiple of 8; default from the config)")
    tv.add_argument("--codes", type=int, help="codebook size K (default from the config: 4)")
    tv.add_argument("--device", default="auto")
    tv.add_argument("--seed", type=int, default=0)
    tv.set_defaults(func=cmd_train_vqvae)

    tr = sub.add_parser("train", help="train the amodal Mask R-CNN (resumes from OUT/last.safetensors)")
    tr.add_argument("--config", default="lean", help="model config: lean, paper or a JSON file (default lean)")
    tr.add_argument("--head", choices=["fcn", "vae", "vq", "vq_refine"], help="override the config's mask head")
    tr.add_argument("--no-occlusion", action="store_true", help="switch the occlusion branch off (ablation)")
    tr.add_argument("--data", type=Path, nargs="+", required=True, help="training COCO-amodal JSON file(s)")
    tr.add_argument("--val", type=Path, nargs="*", help="validation COCO-amodal JSON file(s)")
    tr.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, log.jsonl)")
    tr.add_argument("--vqvae", type=Path, help="trained shape model (default: OUT/shape.safetensors, trained if missing)")
    tr.add_argument("--vqvae-iterations", type=int, default=3000)
    tr.add_argument("--init", help="start from this detector checkpoint or model name (fine-tuning)")
    tr.add_argument("--iterations", type=int, default=2000)
    tr.add_argument("--batch-size", type=int, default=2)
    tr.add_argument("--lr", type=float, default=0.02)
    tr.add_argument("--val-every", type=int, default=0, help="validate every N iterations (0: at the end)")
    tr.add_argument("--checkpoint-every", type=int, default=200)
    tr.add_argument("--workers", type=int, default=0, help="data loader processes")
    tr.add_argument("--device", default="auto")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--restart", action="store_true", help="ignore OUT/last.safetensors and start afresh")
    tr.add_argument("--input-sizes", type=int, nargs="+", metavar="PX",
                    help="multi-scale training: resize each image to one of these long sides, at random "
                         "(default: the config's size)")
    tr.set_defaults(func=cmd_train)

    ft = sub.add_parser("finetune", help="fine-tune a model on proofread frames (projects) or COCO-amodal files")
    ft.add_argument("--init", default="bundled", help="model to start from: a name or a .safetensors path (default bundled)")
    ft.add_argument("--data", type=Path, nargs="+", required=True,
                    help="annotation project files (their reviewed frames) and/or COCO-amodal JSON files")
    ft.add_argument("--out", type=Path, required=True, help="output folder (data/, checkpoints, log.jsonl, finetune.json)")
    ft.add_argument("--iterations", type=int, default=FT["iterations"])
    ft.add_argument("--lr", type=float, default=FT["lr"])
    ft.add_argument("--train", choices=["heads", "all", "refit_vqvae"], default=FT["train"],
                    help="heads: freeze the backbone; all; refit_vqvae: retrain the shape VQ-VAE first "
                         f"(default {FT['train']})")
    ft.add_argument("--batch-size", type=int, default=2)
    ft.add_argument("--val-fraction", type=float, default=0.2, help="frames held out for validation (default 0.2)")
    ft.add_argument("--val-every", type=int, default=0, help="validate every N iterations (0: at the end)")
    ft.add_argument("--replay", type=Path, nargs="*", help="COCO-amodal files (e.g. synthetic) mixed in against forgetting")
    ft.add_argument("--replay-synthetic", type=int, default=FT["synthetic_replay"], metavar="N",
                    help="render N synthetic embryo frames (the bundled model's training kind) and replay them "
                         f"against forgetting (default {FT['synthetic_replay']}; 0: none)")
    ft.add_argument("--replay-fraction", type=float, default=FT["replay_fraction"],
                    help=f"chance a training sample is a replayed one (default {FT['replay_fraction']})")
    ft.add_argument("--anchor", type=float, default=FT["anchor"],
                    help="pull the weights toward the starting model's (L2-SP weight) against forgetting "
                         f"(default {FT['anchor']}; 0: off)")
    ft.add_argument("--name", help="also save as NAME in the user model folder (then: --model NAME, napari model list)")
    ft.add_argument("--force", action="store_true", help="replace an existing model called NAME")
    ft.add_argument("--resume", action="store_true", help="continue a stopped run in OUT (otherwise OUT must hold no earlier run)")
    ft.add_argument("--device", default="auto")
    ft.add_argument("--seed", type=int, default=0)
    ft.set_defaults(func=cmd_finetune)

    sg = sub.add_parser("segment", help="segment images / stacks into COCO-amodal predictions")
    sg.add_argument("inputs", type=Path, nargs="+", help="TIFF stacks or images: (Y,X), (T,Y,X), (T,Z,Y,X), (T,Z,C,Y,X); any dtype")
    sg.add_argument("--out", type=Path, required=True, help="output folder")
    sg.add_argument("--model", default="bundled", help="model name or .safetensors path (default bundled)")
    sg.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    sg.add_argument("--plane", type=int, help="focal plane for T,Z stacks (default: the middle one)")
    sg.add_argument("--channel", type=int, help="channel for multi-channel (C) stacks (default: the first)")
    sg.add_argument("--score-threshold", type=float, default=0.5)
    sg.add_argument("--batch-size", type=int, help="frames per forward pass (default 4)")
    sg.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                    help="arithmetic of the backbone: float32 (default) or bfloat16 (faster on CPUs with native "
                         "bfloat16; mask outlines move by about a pixel)")
    sg.add_argument("--tta", action="store_true",
                    help="test-time augmentation: each frame also segmented mirrored, a cell only one view finds "
                         "keeps half its score (twice the time)")
    sg.add_argument("--per-frame", action="store_true",
                    help="segment each frame on its own (default: decode the time-lapse as a whole: counts that "
                         "respect the lineage, missed cells carried over, one-frame spurious cells dropped)")
    sg.add_argument("--linker", choices=("overlap", "laptrack"), default="overlap",
                    help="how cells are linked into tracks: overlap (frame to frame by mask overlap, default) or "
                         "laptrack (the whole time-lapse at the end: gaps closed, divisions by centroid distance)")
    sg.add_argument("--input-size", type=_input_size, metavar="auto|trained|PX",
                    help="network input size: auto (per stack, from the embryo's size), trained, or pixels "
                         "(default: what the model says; the bundled model: auto)")
    sg.add_argument("--workers", type=int, metavar="N",
                    help="segment the stacks on a local Dask cluster of N worker processes (one model each)")
    sg.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                    help="torch threads per worker with --workers / --scheduler (default 1)")
    sg.add_argument("--scheduler", metavar="ADDRESS",
                    help="segment on a running Dask cluster (e.g. tcp://host:8786; docs/cluster.md)")
    sg.set_defaults(func=cmd_segment)

    me = sub.add_parser("measure", help="cell counts, cleavage times t2..t8, sizes and size evenness as CSV")
    me.add_argument("inputs", type=Path, nargs="+", help="COCO-amodal JSON (segment's predictions or proofread annotations)")
    me.add_argument("--out", type=Path, required=True,
                    help="output folder: STEM_cells.csv, STEM_frames.csv, STEM_cleavage.csv, STEM_morphokinetics.csv")
    me.add_argument("--um-per-px", type=float, help="pixel size in µm (default: sizes in pixels)")
    me.add_argument("--minutes-per-frame", type=float, help="frame interval (default: times as frame indices)")
    me.add_argument("--start-hours", type=float, default=0.0,
                    help="time of frame 0 in hours, e.g. after insemination (with --minutes-per-frame; default 0)")
    me.add_argument("--score-threshold", type=float, help="drop cells scored below it (default: keep all in the file)")
    me.add_argument("--persist", type=int, default=2,
                    help="frames a cell count must hold to set a cleavage time (default 2: one miscounted frame does not)")
    me.set_defaults(func=cmd_measure)

    ex = sub.add_parser("export", help="tracks as Cell Tracking Challenge folders (label images + res_track.txt)")
    ex.add_argument("inputs", type=Path, nargs="+", help="COCO-amodal JSON with track ids (segment's predictions)")
    ex.add_argument("--out", type=Path, required=True,
                    help="output folder: one STEM_RES (or STEM_GT) folder per time-lapse, replaced as a whole")
    ex.add_argument("--kind", choices=("res", "gt"), default="res",
                    help="res: maskTTT.tif + res_track.txt; gt: TRA/man_trackTTT.tif + TRA/man_track.txt")
    ex.add_argument("--score-threshold", type=float, help="drop cells scored below it (default: keep all in the file)")
    ex.set_defaults(func=cmd_export)

    de = sub.add_parser("demo", help="run the main job on the bundled sample data")
    de.add_argument("--out", type=Path, default=Path("napari-amodal-demo"), help="output folder")
    de.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    # before torch loads OpenMP: idle worker threads sleep instead of spinning, which
    # keeps a shared 2-core machine from slowing down 5x when another job runs
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2), --help and --version (0): a status, not an exit
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (every failure becomes one line; -v adds the traceback)
        code, message = describe_failure(e, verbose=args.verbose)
        if args.verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        print(f"napari-amodal {args.command}: error: {message}", file=sys.stderr)
        return code


# input the user can fix (a wrong file, option or value): exit 2, like argparse's usage errors
USAGE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, ValueError, KeyError)


# what torch's allocators say when an allocation fails (CPU: a RuntimeError; CUDA: OutOfMemoryError)
OUT_OF_MEMORY = ("can't allocate memory", "not enough memory", "out of memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a failed allocation: Python's MemoryError or torch's allocator errors."""
    return isinstance(e, MemoryError) or (
        isinstance(e, RuntimeError) and any(s in str(e).lower() for s in OUT_OF_MEMORY))


def describe_failure(e: BaseException, verbose: bool = False) -> tuple[int, str]:
    """Exit status and one line for a failure: 2 for bad input (files, options,
    values), 1 for runtime failures (disk full, permissions, memory, anything else).
    An unexpected failure's line points to ``-v`` unless ``verbose`` (the traceback is shown)."""
    import errno

    if isinstance(e, USAGE_ERRORS):  # includes AmodalFormatError, CheckpointError
        return 2, str(e) or type(e).__name__
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        if e.errno == errno.ENOSPC:
            return 1, f"{where}no space left on the device (earlier files are intact)"
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return 1, f"{where}permission denied (earlier files are intact)"
        return 1, f"{where}{e.strerror or e}"
    if is_out_of_memory(e):
        return 1, ("out of memory (earlier files are intact; try --batch-size 1, a smaller --input-size, "
                   "or a machine with more memory)")
    first = (str(e).strip().splitlines() or [""])[0]
    return 1, f"{type(e).__name__}: {first}" + ("" if verbose else " (run with -v for the traceback)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
