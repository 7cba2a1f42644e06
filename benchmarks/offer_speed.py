"""GUI-thread time of a correction offer in the Proofread dock, on a large time-lapse layer.

    xvfb-run -a python benchmarks/offer_speed.py [--frames 200] [--cells 8]

Builds a (T, 500, 500) stack with ``--cells`` static cells per frame and their cell layer,
deletes one cell in frame 10 through the dock, waits for the offer (worked out in a worker)
and accepts it. Prints the seconds of the delete (GUI thread), of the worker, and of the
accept (GUI thread; the Standards' bound for one GUI-thread step is 0.2 s).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--cells", type=int, default=8)
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication
    from skimage.draw import disk

    from napari_amodal._napari.layers import cell_layer_data
    from napari_amodal._napari.widgets import ProofreadWidget
    from napari_amodal.instances import FrameInstances

    shape = (500, 500)
    masks = np.zeros((args.cells, *shape), bool)
    for k in range(args.cells):
        masks[k][disk((100 + 100 * (k // 3), 100 + 150 * (k % 3)), 40, shape=shape)] = True
    images = np.random.default_rng(0).normal(100, 3, (args.frames, *shape)).astype(np.float32)
    images[:, masks.any(0)] += 50
    frames = [FrameInstances.from_masks(masks, track_ids=np.arange(1, args.cells + 1), frame=t) for t in range(args.frames)]
    viewer = napari.Viewer(show=False)
    viewer.add_image(images, name="embryo")
    data, kwargs, _ = cell_layer_data(frames, stack=True, name="cells")
    viewer.add_shapes(data, **kwargs)
    dock = ProofreadWidget(viewer)
    dock.image.setCurrentText("embryo")
    layer = dock.layer
    feats = layer.features
    layer.selected_data = {int(np.flatnonzero((feats["frame"] == 10) & (feats["cell_id"] == 3))[0])}
    t0 = time.time()
    dock.delete_selected()
    delete = time.time() - t0
    t0 = time.time()
    while dock.offers.result is None and time.time() - t0 < 120:
        QApplication.processEvents()
        time.sleep(0.01)
    worker, n = time.time() - t0, len(dock.offers.result or ())
    t0 = time.time()
    dock.accept_offer()
    accept = time.time() - t0
    r = {"shapes": len(data), "offer_frames": n, "delete_s": round(delete, 3), "worker_s": round(worker, 2),
         "accept_s": round(accept, 3)}
    print(r)
    viewer.close()
    return r


if __name__ == "__main__":
    main()
