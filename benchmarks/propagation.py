"""User actions to correct a time-lapse fully, with and without corrections that propagate.

    python benchmarks/propagation.py [--model bundled] [--sequences 2] [--frames 100] [--split heldout|val]

Renders time-lapses of both embryo families (``generalization.heldout``), segments each with
the model and lets a simulated user correct it to the truth, frame by frame, one cell at a
time: a predicted cell that matches no true one (IoU < 0.5) is deleted, a true cell nothing
matches is drawn, a matched cell with IoU < 0.8 is redrawn. Each of these is one action.
With propagation (``napari_amodal.propagate``), after every correction the same correction
is offered for the following frames; the user looks at the offer and presses one key: accept
(when it leaves fewer errors in those frames than there were) or reject; or goes to the last
frame where it is right and accepts it up to there (two actions). Each key press is one action. Reported: actions per 100 frames both ways and their ratio, offers made and
accepted, and the frames an offer covered on average.
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

MATCH_IOU, GOOD_IOU = 0.5, 0.8


def frame_errors(pred, truth) -> list[tuple]:
    """What is wrong in one frame: ``("redraw", i, j)``, ``("delete", i)``, ``("draw", j)``
    with ``i`` a predicted and ``j`` a true cell, worst kind first."""
    from scipy.optimize import linear_sum_assignment

    from napari_amodal.instances import instance_overlaps

    iou = instance_overlaps(pred, truth)[0] if len(pred) and len(truth) else np.zeros((len(pred), len(truth)))
    rows, cols = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
    matched = iou[rows, cols] >= MATCH_IOU
    rows, cols = rows[matched], cols[matched]
    errors = [("redraw", i, j) for i, j in zip(rows, cols) if iou[i, j] < GOOD_IOU]
    errors += [("delete", i) for i in sorted(set(range(len(pred))) - set(rows))]
    errors += [("draw", j) for j in sorted(set(range(len(truth))) - set(cols))]
    return errors


def correct(frames, truth, images, propagate: bool) -> dict:
    """Simulate the user on one time-lapse; returns the counts of actions and offers."""
    from napari_amodal.propagate import Offer, apply_offer, offer

    frames = list(frames)
    next_id = max([int(f.track_ids.max()) for f in frames if len(f)] + [0]) + 1
    fixes = keys = offers = accepted = covered = 0
    kinds = {k: [0, 0] for k in ("delete", "redraw", "draw")}  # offers made, accepted
    for t in range(len(frames)):
        for _ in range(100):  # a frame never needs more; guards against a fix that does not stick
            errors = frame_errors(frames[t], truth[t])
            if not errors:
                break
            error = errors[0]
            edit, next_id = _edit_for(error, frames[t], truth[t], t, next_id)
            before = frames
            frames = apply_offer(frames, Offer(edit, [t], {t: np.array([error[1]]) if error[0] != "draw" else
                                                            np.zeros(0, int)}, {t: edit.added},
                                                 {t: np.asarray(edit.added_ids, np.int64)}))
            fixes += 1
            if not propagate:
                continue
            proposal = offer(before, images, edit, direction=1)
            if not len(proposal):
                continue
            offers += 1
            kinds[error[0]][0] += 1
            n, gain = _best_prefix(frames, truth, proposal)
            keys += 1 if n in (0, len(proposal)) else 2  # reject / accept, or go to the frame + accept up to it
            if gain > 0:
                frames = apply_offer(frames, proposal.up_to(n))
                accepted, covered = accepted + 1, covered + n
                kinds[error[0]][1] += 1
    return {"frames": len(frames), "fixes": fixes, "keys": keys, "actions": fixes + keys,
            "offers": offers, "accepted": accepted, "frames_per_accepted_offer": covered / max(accepted, 1),
            **{f"{k}_offers_accepted": v for k, v in kinds.items()}}


def _edit_for(error, frame, truth, t, next_id):
    from napari_amodal.propagate import Edit

    empty = np.zeros((0, *frame.shape), bool)
    if error[0] == "delete":
        return Edit(t, frame.masks[error[1]][None], empty), next_id
    if error[0] == "redraw":
        return Edit(t, frame.masks[error[1]][None], truth.masks[error[2]][None], (int(frame.track_ids[error[1]]),)), next_id
    return Edit(t, empty, truth.masks[error[1]][None], (next_id,)), next_id + 1


def _best_prefix(frames, truth, proposal) -> tuple[int, int]:
    """How many of the offer's frames the user accepts (the prefix that removes the most
    errors) and how many errors that removes."""
    from napari_amodal.propagate import apply_offer

    after = apply_offer(frames, proposal)
    gains = [len(frame_errors(frames[t], truth[t])) - len(frame_errors(after[t], truth[t])) for t in proposal.frames]
    running = np.cumsum(gains)
    n = int(np.argmax(running)) + 1
    return (n, int(running[n - 1])) if running[n - 1] > 0 else (0, 0)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--sequences", type=int, default=2, help="time-lapses per family")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--families", nargs="*", choices=FAMILIES, default=list(FAMILIES))
    ap.add_argument("--split", choices=("heldout", "val"), default="heldout")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)

    from napari_amodal.segment import Segmenter

    seg = Segmenter.load(args.model, device="cpu")
    rows = []
    for family in args.families:
        seed = VAL_SEED[family] if args.split == "val" else None
        for i, (images, truth) in enumerate(heldout(family, args.sequences, args.frames, seed=seed)):
            t0 = time.time()
            frames = seg(images, axes="TYX")
            row = {"family": family, "sequence": i, "cells": int(sum(len(g) for g in truth))}
            for mode in (False, True):
                r = correct(frames, truth, images, propagate=mode)
                for k, v in r.items():
                    row[f"{k}_{'with' if mode else 'without'}"] = v
            row["ratio"] = row["actions_without"] / max(row["actions_with"], 1)
            row["seconds"] = round(time.time() - t0, 1)
            rows.append(row)
            print_row(row)
    total = lambda k: sum(r[k] for r in rows)  # noqa: E731
    n = total("frames_without")
    # a rejected offer needs no key when the user simply goes on editing (the next edit withdraws it)
    ignored = total("actions_with") - (total("offers_with") - total("accepted_with"))
    print(f"all: {total('actions_without') * 100 / n:.1f} actions per 100 frames without propagation, "
          f"{total('actions_with') * 100 / n:.1f} with ({total('actions_without') / max(total('actions_with'), 1):.2f}x fewer; "
          f"{total('actions_without') / max(ignored, 1):.2f}x when rejected offers are ignored, not keyed); "
          f"machine: {platform.machine()} ({os.cpu_count()} cores), {args.split} split, model {args.model}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


def print_row(r: dict) -> None:
    per100 = lambda k: r[k] * 100 / r["frames_without"]  # noqa: E731
    print(f"{r['family']:8s} #{r['sequence']} ({r['frames_without']} frames, {r['cells']} true cells): "
          f"without {per100('actions_without'):6.1f} actions/100 frames | with {per100('actions_with'):6.1f} "
          f"({per100('fixes_with'):.1f} fixes + {per100('keys_with'):.1f} keys; {r['accepted_with']}/{r['offers_with']} "
          f"offers accepted, {r['frames_per_accepted_offer_with']:.1f} frames each; "
          + " ".join(f"{k} {r[f'{k}_offers_accepted_with'][1]}/{r[f'{k}_offers_accepted_with'][0]}" for k in ("delete", "redraw", "draw"))
          + f") -> {r['ratio']:.2f}x fewer "
          f"[{r['seconds']:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
