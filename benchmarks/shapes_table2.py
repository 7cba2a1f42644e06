"""The seed paper's Table II protocol on synthetic overlapping shapes.

    python benchmarks/shapes_table2.py --out runs/table2 [--iterations 3000] [--n-train 5000] [--n-test 1000]

Trains ``fcn``, ``vae``, ``vq``, ``vq_refine`` (occlusion branch off) and
``vq_refine`` + occlusion with the same data, budget and seed, and prints the
amodal mask AP of each on the test split. The paper reports 0.809 / 0.849 /
0.865 (fcn / vae / vq_refine) at 12k iterations of batch 16 on a GPU; state the
budget you ran with. Each variant resumes from its folder if interrupted.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

VARIANTS = [
    ("fcn", "fcn", False),
    ("vae", "vae", False),
    ("vq", "vq", False),
    ("vq_refine", "vq_refine", False),
    ("vq_refine+occlusion", "vq_refine", True),
]


def shapes_config(head: str, occlusion: bool):
    """The lean config adapted to 224 px shape images with 3 classes."""
    from napari_amodal.model import get_config

    return get_config("lean").replace(
        name=f"shapes-{head}{'-occ' if occlusion else ''}", num_classes=4, mask_head=head, occlusion=occlusion,
        min_size=224, max_size=224, anchor_sizes=(8, 16, 32, 64, 128), image_mean=(0.5, 0.5, 0.5),
        image_std=(0.29, 0.29, 0.29),
    )


def drain(gen):
    from napari_amodal.utils import drain as run_to_end

    def show(ev):
        if ev.iteration % 100 == 0:
            print(f"  iteration {ev.iteration}/{ev.total} loss {ev.losses['loss']:.3f}", flush=True)

    return run_to_end(gen, show)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--shape-iterations", type=int, default=2000)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=0, help="data loader processes (default 0: in the main process)")
    ap.add_argument("--only", nargs="*", help="run only these variants")
    ap.add_argument("--shape-models-only", action="store_true",
                    help="train the shape models the variants need, then stop (before variants share them)")
    args = ap.parse_args(argv)

    import torch

    from napari_amodal.data.coco import atomic_write_text, read_amodal
    from napari_amodal.data.dataset import AmodalDataset
    from napari_amodal.data.shapes import write_shapes_dataset
    from napari_amodal.evaluate import evaluate_frames
    from napari_amodal.models import pick_device
    from napari_amodal.train.loop import TrainSettings, predict_frames, train_detector
    from napari_amodal.train.shape import load_shape_model, train_shape_model

    device = pick_device(args.device)
    data = args.out / "data"
    if not (data / "test.json").exists():
        write_shapes_dataset(data, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    train, test = [data / "train.json"], data / "test.json"
    # variants can run in separate processes (--only): results accumulate in one file
    table = args.out / "table2.json"
    results = json.loads(table.read_text()) if table.exists() else {}
    for name, head, occlusion in VARIANTS:
        if args.only and name not in args.only:
            continue
        config = shapes_config(head, occlusion)
        run = args.out / name
        shape_model = None
        if head != "fcn":
            kind = "vae" if head == "vae" else "vq"
            shape_path = args.out / f"shape-{kind}.safetensors"
            if not shape_path.exists():
                print(f"{name}: training the shape model", flush=True)
                train_shape_model(config, train, shape_path, iterations=args.shape_iterations, seed=args.seed,
                                  device=device)
            if args.shape_models_only:
                continue
            shape_model = load_shape_model(shape_path, config)
        elif args.shape_models_only:
            continue
        print(f"{name}: training {args.iterations} iterations, batch {args.batch_size}", flush=True)
        t0 = time.time()
        settings = TrainSettings(iterations=args.iterations, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 device=device, checkpoint_every=200, num_workers=args.workers)
        final = drain(train_detector(config, train, run, settings, shape_model=shape_model))
        from napari_amodal.models import load_model

        model, _, _ = load_model(final, device)
        ds = AmodalDataset([test])
        preds, gts = predict_frames(model, ds, range(len(ds)), device)
        r = evaluate_frames(gts, preds, read_amodal(test)[1])
        entry = {"AP": r["AP"], "AP50": r["AP50"], "AP75": r["AP75"], "train_seconds": round(time.time() - t0),
                 "iterations": args.iterations, "batch_size": args.batch_size, "seed": args.seed, "device": device,
                 "mixed_precision": settings.amp and device.startswith("cuda")}
        results = json.loads(table.read_text()) if table.exists() else {}  # re-read: another process may have written
        results[name] = entry
        atomic_write_text(table, json.dumps(results, indent=2))
        print(f"{name}: AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  AP75 {r['AP75']:.3f}", flush=True)
        del model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    print(f"\nTable II protocol, {args.iterations} iterations x batch {args.batch_size}, seed {args.seed}, "
          f"{args.n_train} train / {args.n_test} test images, device {device} ({platform.machine()})")
    paper = {"fcn": 0.809, "vae": 0.849, "vq_refine": 0.865}
    order = [v[0] for v in VARIANTS]
    print(f"{'variant':22s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s}   paper AP   (budget of each row)")
    for name in [n for n in order if n in results]:
        r = results[name]
        ref = f"{paper[name]:.3f}" if name in paper else "  -"
        print(f"{name:22s} {r['AP']:6.3f} {r['AP50']:6.3f} {r['AP75']:6.3f}   {ref}      "
              f"{r.get('iterations', '?')} it x batch {r.get('batch_size', '?')}")


if __name__ == "__main__":
    main()
