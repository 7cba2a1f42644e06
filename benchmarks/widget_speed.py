"""The napari widget's segmentation against the command line's, on one stack, in one run.

    xvfb-run -a python benchmarks/widget_speed.py [--frames 200]    # or from a desktop session

Both run one core (``Segmenter.iter_frames``): the command line (``write.segment_files``) writes
JSON, occlusion TIFF and overlay; the widget's worker job (``segment_job``) turns each frame into
polygons and features for a Shapes layer. Reported: frames/s of each on a 500 x 500 uint8 stack
(the bundled sample, cycled), the model's loading included, after a warm-up of both; their
ratio; and the seconds the GUI thread then spends putting the results into layers
(``SegmentationWidget.add_results``), during which the viewer does not respond.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _stacks import sample_stack


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    args = ap.parse_args(argv)

    import napari
    import tifffile
    import torch

    from napari_amodal._napari.widgets.segmentation import SegmentationWidget, segment_job
    from napari_amodal.segment import Segmenter
    from napari_amodal.utils import drain
    from napari_amodal.write import segment_files

    stack = sample_stack(args.frames)
    job = {"model": "bundled", "device": "cpu", "score_threshold": 0.5, "axes": "TYX", "plane": None,
           "file_name": "stack.tif", "temporal": True}

    def widget_job(frames):
        return drain(segment_job(stack=frames, holder={}, **job))

    def cli_job(frames, folder):
        path = Path(folder) / "stack.tif"
        tifffile.imwrite(path, frames, metadata={"axes": "TYX"})
        segment_files(Segmenter.load("bundled", device="cpu"), path, Path(folder) / "out")

    with tempfile.TemporaryDirectory() as tmp:
        widget_job(stack[:4]), cli_job(stack[:4], tmp)  # warm-up of both paths
        t = time.perf_counter()
        cli_job(stack, tmp)
        cli = time.perf_counter() - t
    t = time.perf_counter()
    result = widget_job(stack)
    widget = time.perf_counter() - t

    viewer = napari.Viewer(show=False)
    image = viewer.add_image(stack, name="stack")
    dock = SegmentationWidget(viewer)
    t = time.perf_counter()
    dock.add_results(image, result, {"axes": "TYX", "plane": None})
    gui = time.perf_counter() - t
    viewer.close()

    n = args.frames
    print(f"CPU, torch {torch.get_num_threads()} threads; {n} frames of 500 x 500, model loading included")
    print(f"command line (segment_files):  {n / cli:6.2f} frames/s ({cli:.1f} s)")
    print(f"widget worker (segment_job):   {n / widget:6.2f} frames/s ({widget:.1f} s), "
          f"{cli / widget:.2f}x the command line's")
    print(f"GUI thread, results into layers: {gui:.2f} s for {result.n_cells} cells")


if __name__ == "__main__":
    main()
