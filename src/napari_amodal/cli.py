"""The ``napari-amodal`` console script.

Heavy imports (torch, pycocotools, scikit-image) happen inside the command
functions, after argument parsing, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
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
    path = write_embryo_dataset(
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
    from .data.coco import load_occlusion_maps, read_amodal
    from .evaluate import evaluate_frames, format_report

    gt, categories = read_amodal(args.gt)
    pred, _ = read_amodal(args.pred)
    load_occlusion_maps(pred, args.pred)
    report = evaluate_frames(gt, pred, categories or None)
    if args.json:
        print(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in report.items()}))
    else:
        print(format_report(report))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, quiet=args.quiet)
    return 0


# ---------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="napari-amodal",
        description="Amodal instance segmentation of overlapping cells (IVF embryo blastomeres).",
    )
    p.add_argument("--version", action="version", version=f"napari-amodal {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    synth = sub.add_parser("synth", help="render synthetic data with exact amodal ground truth")
    ssub = synth.add_subparsers(dest="kind", metavar="KIND")
    ssub.required = True

    sh = ssub.add_parser("shapes", help="the seed paper's overlapping shapes (224x224 RGB, 1-9 shapes)")
    sh.add_argument("out", type=Path, help="output folder (train/, test/, train.json, test.json)")
    sh.add_argument("--n-train", type=int, default=5000, help="training images (default 5000)")
    sh.add_argument("--n-test", type=int, default=1000, help="test images (default 1000)")
    sh.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(func=cmd_synth_shapes)

    em = ssub.add_parser("embryo", help="embryo time-lapses: 500x500 8-bit Hoffman-like frames, 1->8 cells")
    em.add_argument("out", type=Path, help="output folder (embryo_NNNN.tif + annotations.json)")
    em.add_argument("--sequences", type=int, default=4, help="number of time-lapses (default 4)")
    em.add_argument("--frames", type=int, default=40, help="frames per time-lapse (default 40)")
    em.add_argument("--planes", type=int, default=1, help="focal planes; >1 writes T,Z,Y,X stacks (default 1)")
    em.add_argument("--size", type=int, default=500, help="frame side in pixels (default 500)")
    em.add_argument("--start-cells", type=int, default=1, help="cells in the first frame (default 1)")
    em.add_argument("--end-cells", type=int, default=8, help="cells in the last frame (default 8)")
    em.add_argument("--seed", type=int, default=0)
    em.set_defaults(func=cmd_synth_embryo)

    ev = sub.add_parser("evaluate", help="amodal mask AP (pycocotools) of predictions against ground truth")
    ev.add_argument("gt", type=Path, help="ground-truth COCO-amodal JSON (KINS/COCOA also read)")
    ev.add_argument("pred", type=Path, help="predicted COCO-amodal JSON, matched by (file_name, frame)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    de = sub.add_parser("demo", help="run the main job on the bundled sample data")
    de.add_argument("--out", type=Path, default=Path("napari-amodal-demo"), help="output folder")
    de.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as e:  # includes AmodalFormatError
        print(f"napari-amodal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
