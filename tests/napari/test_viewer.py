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


def test_reader_opens_tiff_stack(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open(str(sample_path("embryo_sample.tif")), plugin="napari-amodal")
    assert layers[0].data.ndim == 3
