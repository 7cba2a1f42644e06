"""Workers of the docks: they never starve Qt's own thread-pool work (a hang, not a slowness)."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

PROBE = textwrap.dedent('''
    import time
    from qtpy.QtCore import QThreadPool, Qt
    from qtpy.QtGui import QImage
    from qtpy.QtWidgets import QApplication
    from napari_amodal._napari.widgets._common import new_worker

    app = QApplication([])
    QThreadPool.globalInstance().setMaxThreadCount(2)  # as on a 2-core machine
    stop = []

    def spin():  # Python code: it needs the interpreter lock the GUI thread holds below
        while not stop:
            sum(range(1000))

    workers = [new_worker(spin, _start_thread=False) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    image = QImage(3000, 3000, QImage.Format_RGB888)
    image.fill(0)
    image.scaled(1000, 1000, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)  # Qt splits this over its pool
    stop.append(1)
    print("scaled")
''')


def test_two_busy_workers_leave_room_for_qts_image_scaling():
    """napari's progress animation scales a GIF on the GUI thread, and Qt does that in its
    global thread pool, where napari's workers run too: with two of them busy on a 2-thread
    pool the viewer hung for good (seen when an offer was worked out as a segmentation
    started). In a subprocess, so a hang fails this test instead of the whole run."""
    try:
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the GUI thread hung waiting for Qt's thread pool, full of our workers")
    assert "scaled" in out.stdout, out.stderr[-2000:]
