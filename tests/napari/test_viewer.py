"""napari GUI tests: sample data, reader, writer through a real viewer (Xvfb)."""

import numpy as np
import pytest

from napari_amodal.data.coco import read_coco
from napari_amodal.data.sample import EMBRYO_GT, sample_path

pytestmark = pytest.mark.gui


def test_embryo_sample_loads_with_ground_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-amodal", "embryo")
    names = [layer.name for layer in viewer.layers]
    assert names == ["embryo (synthetic)", "ground truth occlusion", "ground truth cells"]
    image = viewer.layers["embryo (synthetic)"]
    assert image.data.ndim == 3 and image.data.dtype == np.uint8
    cells = viewer.layers["ground truth cells"]
    gt = read_coco(sample_path(EMBRYO_GT))
    assert len(cells.data) >= sum(len(f) for f in gt)
    assert set(cells.features["frame"]) == set(range(image.data.shape[0]))


def test_shapes_sample_loads(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-amodal", "shapes")
    assert viewer.layers["overlapping shapes"].rgb


def test_reader_writer_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open(str(sample_path(EMBRYO_GT)), plugin="napari-amodal")
    cells = layers[0]
    assert cells._type_string == "shapes"
    # edit: delete the first shape, then save through napari's writer
    cells.selected_data = {0}
    cells.remove_selected()
    out = tmp_path / "edited.json"
    viewer.layers.selection = {cells}
    written = viewer.layers.save(str(out), selected=True, plugin="napari-amodal")
    assert written == [str(out)]
    gt = read_coco(sample_path(EMBRYO_GT))
    back = read_coco(out)
    assert sum(len(f) for f in back) == sum(len(f) for f in gt) - 1
    assert back[0].file_name == gt[0].file_name


def test_tiff_stacks_open_with_napari_and_keep_their_axes(make_napari_viewer):
    from napari_amodal._napari.widgets._common import image_axes, image_file

    viewer = make_napari_viewer()
    layers = viewer.open(str(sample_path("embryo_sample.tif")))
    assert layers[0].data.ndim == 3 and image_axes(layers[0]) == "TYX"
    assert image_file(layers[0])[1] == "embryo_sample.tif"


def test_opening_the_widget_after_the_canvas_does_not_crash(tmp_path):
    """torch imported after napari's OpenGL canvas (Mesa llvmpipe under Xvfb) used to
    segfault in triton; run it the way a user does, in a fresh process."""
    import subprocess
    import sys

    code = (
        "import napari\n"
        "v = napari.Viewer(show=False)\n"
        "v.open_sample('napari-amodal', 'embryo')\n"
        "from napari_amodal._napari.widgets import SegmentationWidget\n"
        "SegmentationWidget(v)\n"
        "from napari_amodal.segment import Segmenter\n"
        "print(len(Segmenter.load('bundled')(v.layers[0].data[:1])))\n"
        "v.close()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "1"
