"""Screenshot of napari with the plugin on the sample data, for the README.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/scripts/make_screenshot.py

Opens the synthetic embryo sample, docks the segmentation and proofreading
widgets, segments every frame with the bundled model through the widget (as a
user would), shows an 8-cell frame and writes docs/images/napari_screenshot.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "images" / "napari_screenshot.png"


def main() -> None:
    # torch before napari: importing torch's triton after Mesa's software OpenGL
    # (llvmpipe, as under Xvfb) is loaded crashes on clashing LLVM symbols
    from napari_amodal._napari.widgets._common import import_compute_stack

    import_compute_stack()
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_amodal._napari.widgets import ProofreadWidget, SegmentationWidget

    viewer = napari.Viewer(title="napari-amodal")
    viewer.window.resize(1500, 900)
    viewer.open_sample("napari-amodal", "embryo")
    for name in ("ground truth cells", "ground truth occlusion"):
        viewer.layers[name].visible = False
    seg = SegmentationWidget(viewer)
    dock = viewer.window.add_dock_widget(seg, name="Amodal segmentation", area="right")
    viewer.window.add_dock_widget(ProofreadWidget(viewer), name="Proofread", area="right", tabify=True)
    dock.raise_()
    seg.image.setCurrentText("embryo (synthetic)")
    seg.scope.setCurrentText("all frames")
    seg.run()
    deadline = time.time() + 600
    while seg.worker is not None and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.05)
    if seg.worker is not None:
        sys.exit("segmentation did not finish in 10 minutes")
    last = viewer.layers["embryo (synthetic)"].data.shape[0] - 1
    viewer.dims.set_current_step(0, last)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    from napari.utils.notifications import notification_manager

    notification_manager.records.clear()  # no start-up toasts over the picture
    for toast in viewer.window._qt_viewer.findChildren(__import__("qtpy").QtWidgets.QWidget, "NapariQtNotification"):
        toast.close()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False, flash=False)
    print(f"wrote {OUT}")
    viewer.close()


if __name__ == "__main__":
    main()
