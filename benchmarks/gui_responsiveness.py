"""How long napari stops responding while the docks segment, show, edit, undo, save, load and export.

    xvfb-run -a python benchmarks/gui_responsiveness.py [--frames 60 500]   # or from a desktop

Per stack length: a viewer is shown with a 500 x 500 uint8 stack (the bundled sample, cycled)
and the Segmentation dock runs the bundled model on all frames, as a user's click on Run does;
then the Proofread dock deletes a cell, undoes it, saves the project, loads it again and exports
the reviewed frames. A 10 ms Qt timer measures the gaps between event-loop turns from each action
until its work is done (and 0.3 s after): a gap is time in which the viewer cannot react. Beside
them, as the baseline of the same run, napari's own cost of moving the time slider one frame with
the cell layer shown (what napari does with that many shapes, before any of our code). Target
(issue 22): no gap over 0.2 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _stacks import sample_stack


def gaps_while(app, action, busy, timeout: float = 900.0) -> tuple[float, float]:
    """Run ``action()`` and turn the event loop until ``busy()`` is False (then 0.3 s more);
    returns (longest gap between 10 ms timer ticks, seconds until done)."""
    from qtpy.QtCore import QTimer

    ticks = [time.perf_counter()]
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    action()
    done = None
    while time.perf_counter() - t0 < timeout:
        app.processEvents()
        time.sleep(0.002)
        if done is None and not busy():
            done = time.perf_counter()
        if done is not None and time.perf_counter() - done > 0.3:
            break
    timer.stop()
    ticks.append(time.perf_counter())
    if done is None:
        raise SystemExit(f"not done within {timeout:.0f} s")
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return max(gaps), done - t0


def slider_steps(app, viewer, n: int) -> float:
    """The longest time napari takes to move the time slider one frame and draw it."""
    worst = 0.0
    for t in range(1, n + 1):
        t0 = time.perf_counter()
        viewer.dims.set_current_step(0, t)
        app.processEvents()
        worst = max(worst, time.perf_counter() - t0)
    return worst


def measure(frames: int, out: Path) -> dict:
    """The longest gaps (s) for one stack length."""
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_amodal._napari.widgets import ProofreadWidget, SegmentationWidget

    viewer = napari.Viewer(show=True)
    viewer.add_image(sample_stack(frames), name="stack")
    seg = SegmentationWidget(viewer)
    viewer.window.add_dock_widget(seg)
    seg.image.setCurrentText("stack")
    seg.scope.setCurrentText("all frames")
    app = QApplication.instance()
    for _ in range(20):  # first paint before the clock starts
        app.processEvents()
        time.sleep(0.01)
    row = {"frames": frames}
    row["segment + show"], row["run s"] = gaps_while(app, seg.run_button.click, lambda: seg.worker is not None)
    cells = viewer.layers["stack amodal cells"]
    row["cells"] = len(cells.data)
    row["napari slider step"] = slider_steps(app, viewer, 5)

    proof = ProofreadWidget(viewer)
    proof.timer.stop()
    viewer.window.add_dock_widget(proof)
    proof.image.setCurrentText("stack")
    viewer.dims.set_current_step(0, 3)
    proof.mark_reviewed()
    first = int(np.flatnonzero(np.asarray(cells.features["frame"]) == 3)[0])

    def delete():
        cells.selected_data = {first}
        proof.delete_selected()

    def offering():
        worker = proof.offers.worker
        return worker is not None and worker.is_running

    row["delete (+ offer)"], _ = gaps_while(app, delete, offering)
    row["undo"], _ = gaps_while(app, proof.undo, lambda: False)
    path = out / "project.json"
    row["save"], _ = gaps_while(app, lambda: proof.save(path), lambda: bool(proof.jobs))
    row["load"], _ = gaps_while(app, lambda: proof.load(path), lambda: bool(proof.jobs))
    row["export"], _ = gaps_while(app, lambda: proof.export(out / "train.json"), lambda: bool(proof.jobs))
    viewer.close()
    return row


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[60, 500])
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            rows.append(measure(n, Path(tmp)))
            print(f"{n} frames done", flush=True)
    keys = ["napari slider step", "segment + show", "delete (+ offer)", "undo", "save", "load", "export"]
    print("longest event-loop gap (s) per action, target 0.2 s; napari's slider step is the baseline")
    print(f"{'frames':>6s} {'cells':>6s} {'run s':>6s} " + " ".join(f"{k:>18s}" for k in keys))
    for r in rows:
        print(f"{r['frames']:6d} {r['cells']:6d} {r['run s']:6.1f} " + " ".join(f"{r[k]:18.2f}" for k in keys))
    return rows


if __name__ == "__main__":
    main()
