"""Time-lapse decoding on held-out synthetic embryos: counts, cleavage times and divisions.

    python benchmarks/time_lapse.py [--model bundled] [--sequences 6] [--frames 60] [--split heldout|val]

Renders time-lapses of both embryo families (``generalization.heldout``: held-out seeds
hoffman 9000 / volume 9500; ``--split val`` uses the validation seeds 3000 / 3100, the
only ones any setting is chosen on), segments every frame once (scores down to 0.05) and
decodes the detections two ways:

- ``frame``: each frame on its own (score >= 0.5), linked by the IoU tracker (before);
- ``temporal``: :class:`napari_amodal.temporal.TemporalDecoder` (counts decoded over the
  time-lapse, missing cells carried, spurious ones dropped), then the same tracker;
- ``temporal+laptrack``: the same cells, linked by laptrack instead (centroid LAP with gap
  closing and splitting: :func:`napari_amodal.track.link_laptrack`).

Per family and decoder: per-frame count exact / within one, cleavage times t2 ... t8
within one frame of the truth and the median error (frames), divisions' precision and
recall, the Cell Tracking Challenge's TRA and DET (py-ctcmetrics, mean over time-lapses)
and the decoding time per frame. ``--cache DIR`` keeps the raw detections, so a
second run only decodes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generalization import FAMILIES, VAL_SEED, heldout  # noqa: E402


def raw_detections(seg, images, gt, cache: Path | None):
    """Detections of every frame (scores >= 0.05, untracked), from ``cache`` when there."""
    from napari_amodal.instances import FrameInstances

    path = cache / f"{gt[0].file_name}.json" if cache else None
    if path is not None and path.exists():
        rows = json.loads(path.read_text())
        return [FrameInstances.from_rles(r["rles"], tuple(r["shape"]), scores=r["scores"], frame=r["frame"],
                                         file_name=r["file"], meta={"state": r["state"]}) for r in rows]
    raw = list(seg.iter_frames(images, axes="TYX", file_name=gt[0].file_name, track=False))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"rles": f.to_rles(), "shape": list(f.shape), "scores": f.scores.tolist(),
                                     "frame": f.frame, "file": f.file_name, "state": f.meta["state"]} for f in raw]))
    return raw


def decoders(threshold: float):
    from napari_amodal.temporal import decode_time_lapse
    from napari_amodal.track import Tracker, link_laptrack

    def frame(raw):
        tracker = Tracker()
        return [tracker.update(f.select(f.scores >= threshold)) for f in raw]

    def temporal(raw):
        return list(decode_time_lapse(raw, tracker=Tracker()))

    def temporal_laptrack(raw):
        return link_laptrack(temporal(raw))

    return {"frame": frame, "temporal": temporal, "temporal+laptrack": temporal_laptrack}


def ctc_scores(gt, pred) -> dict:
    """The Cell Tracking Challenge's TRA and DET (py-ctcmetrics) of one time-lapse; None when
    the truth or the prediction holds no cell at all (an empty dish: py-ctcmetrics has no
    score for it)."""
    if not any(len(f) for f in gt) or not any(len(f) for f in pred):
        return None
    import contextlib
    import io
    import tempfile

    from ctc_metrics.scripts.evaluate import evaluate_sequence
    from napari_amodal.data.ctc import write_ctc

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        write_ctc(gt, Path(tmp) / "GT", kind="gt")
        write_ctc(pred, Path(tmp) / "RES")
        return evaluate_sequence(str(Path(tmp) / "RES"), str(Path(tmp) / "GT"), metrics=["TRA", "DET"], threads=1)


def score_family(seg, family: str, args) -> dict:
    from napari_amodal.evaluate.time_lapse import cleavage_figures, count_figures, division_figures

    seed = VAL_SEED[family] if args.split == "val" else None
    setting = f"{Path(args.model).stem}-{args.input_size or 'default'}-size"  # detections depend on both
    cache = Path(args.cache) / setting / args.split / family if args.cache else None
    acc = {name: {"count": [], "cleavage": [], "missed": 0, "div": np.zeros(3), "seconds": 0.0, "frames": 0,
                  "TRA": [], "DET": []}
           for name in decoders(args.score_threshold)}
    for images, gt in heldout(family, args.sequences, args.frames, seed=seed):
        raw = raw_detections(seg, images, gt, cache)
        for name, decode in decoders(args.score_threshold).items():
            t0 = time.perf_counter()
            pred = decode(raw)
            a = acc[name]
            a["seconds"] += time.perf_counter() - t0
            a["frames"] += len(pred)
            a["count"] += count_figures(gt, pred)["errors"]
            c = cleavage_figures(gt, pred)
            a["cleavage"] += c["errors"]
            a["missed"] += c["missed"]
            d = division_figures(gt, pred)
            a["div"] += [d["matched"], d["predicted_divisions"], d["true_divisions"]]
            if not args.no_ctc:
                ctc = ctc_scores(gt, pred)
                if ctc is not None:
                    a["TRA"].append(ctc["TRA"])
                    a["DET"].append(ctc["DET"])
    rows = {}
    for name, a in acc.items():
        err, cl = np.array(a["count"]), np.array(a["cleavage"])
        n_div = len(cl) + a["missed"]
        rows[name] = {
            "frames": a["frames"], "count_exact": float(np.mean(err == 0)), "count_within_1": float(np.mean(np.abs(err) <= 1)),
            "cleavage_within_1": float(np.sum(cl <= 1) / max(n_div, 1)), "cleavage_median_error": float(np.median(cl)) if len(cl) else None,
            "cleavages": n_div, "cleavages_missed": a["missed"],
            "division_precision": a["div"][0] / max(a["div"][1], 1), "division_recall": a["div"][0] / max(a["div"][2], 1),
            "true_divisions": int(a["div"][2]), "ms_per_frame": 1000 * a["seconds"] / max(a["frames"], 1),
            "TRA": float(np.mean(a["TRA"])) if a["TRA"] else None, "DET": float(np.mean(a["DET"])) if a["DET"] else None,
        }
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--sequences", type=int, default=6, help="time-lapses per family")
    ap.add_argument("--frames", type=int, default=60, help="frames per time-lapse")
    ap.add_argument("--split", choices=("heldout", "val"), default="heldout")
    ap.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--score-threshold", type=float, default=0.5, help="the frame decoder's threshold")
    ap.add_argument("--cache", help="keep raw detections here and reuse them")
    ap.add_argument("--no-ctc", action="store_true", help="skip the CTC measures (TRA, DET)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--input-size", type=lambda v: v if v in ("auto", "trained") else int(v), default=None,
                    help="network input size: auto (per stack), trained, or pixels (default: what the model says)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    from napari_amodal.segment import Segmenter

    seg = Segmenter.load(args.model, device=args.device, score_threshold=0.05, input_size=args.input_size)
    out = {}
    for family in args.families:
        out[family] = score_family(seg, family, args)
        for name, r in out[family].items():
            ctc = f"TRA {r['TRA']:.3f} DET {r['DET']:.3f} | " if r["TRA"] is not None else ""
            print(f"{family:8s} {name:17s} count exact {r['count_exact']:.3f} within 1 {r['count_within_1']:.3f} | "
                  f"cleavage within 1 frame {r['cleavage_within_1']:.3f} (median {r['cleavage_median_error']}, "
                  f"{r['cleavages_missed']}/{r['cleavages']} never) | divisions P {r['division_precision']:.3f} "
                  f"R {r['division_recall']:.3f} of {r['true_divisions']} | {ctc}{r['frames']} frames, "
                  f"decode {r['ms_per_frame']:.1f} ms/frame")
    print(f"machine: {platform.machine()} {platform.processor() or ''} ({os.cpu_count()} cores), {args.device}; "
          f"model {args.model} (input size {args.input_size or 'default'}); {args.split} split, {args.sequences} x {args.frames} frames per family")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
