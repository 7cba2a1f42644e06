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
