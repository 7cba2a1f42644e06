"""Fixtures of the napari tests: a private napari-amodal home, and the notifications shown."""

import pytest

from napari_amodal._napari.widgets import _common


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_AMODAL_HOME", str(tmp_path / "home"))  # models, autosaves: never the user's
    return tmp_path / "home"


@pytest.fixture
def errors(monkeypatch):
    """The error notifications shown (their text), in order."""
    seen = []
    monkeypatch.setattr(_common, "show_error", lambda msg: seen.append(str(msg)))
    return seen


@pytest.fixture
def warned(monkeypatch):
    """The warning notifications shown (their text), in order."""
    seen = []
    monkeypatch.setattr(_common, "show_warning", lambda msg: seen.append(str(msg)))
    return seen


@pytest.fixture
def sample_cells(make_napari_viewer):
    """``make(reviewed=())``: a viewer with the sample stack as Image layer "embryo" and its
    ground-truth cells as the cell layer "embryo amodal cells" (linked to it)."""
    import tifffile

    from napari_amodal._napari.layers import META_KEY
    from napari_amodal._napari.widgets._common import cells_layer_tuple, cells_name
    from napari_amodal.data.coco import read_amodal
    from napari_amodal.data.sample import EMBRYO_GT, EMBRYO_STACK, sample_path

    def make(reviewed=()):
        v = make_napari_viewer()
        v.add_image(tifffile.imread(sample_path(EMBRYO_STACK)), name="embryo")
        frames, _ = read_amodal(sample_path(EMBRYO_GT))
        data, kwargs, _ = cells_layer_tuple(frames, stack=True, name=cells_name("embryo"))
        kwargs["metadata"][META_KEY].update(source_image="embryo", reviewed=list(reviewed))
        v.add_shapes(data, **kwargs)
        return v

    return make
