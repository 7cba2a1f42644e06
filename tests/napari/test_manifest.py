"""The manifest is found through the entry point, valid, and every python_name imports."""

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _manifest():
    from npe2 import PluginManifest

    return PluginManifest.from_distribution("napari-amodal")


def test_manifest_found_through_entry_point_and_valid():
    pm = _manifest()
    assert pm.name == "napari-amodal"
    keys = {s.key for s in pm.contributions.sample_data}
    assert keys == {"embryo", "shapes"}
    assert pm.contributions.readers and pm.contributions.writers


def test_categories_menus_and_licence_follow_the_plugin_template():
    pm = _manifest()
    assert set(pm.categories) >= {"Segmentation", "Annotation", "Measurement"}
    menus = pm.contributions.menus
    assert {m.command for m in menus["napari/layers/segment"]} >= {"napari-amodal.segmentation_widget"}
    assert "napari-amodal.timelapse_widget" in {m.command for m in menus["napari/layers/measure"]}
    from importlib.metadata import metadata

    meta = metadata("napari-amodal")
    assert meta["License-Expression"] == "BSD-3-Clause" and (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause")
    assert "all" in (meta.get_all("Provides-Extra") or [])


def test_every_python_name_imports():
    pm = _manifest()
    names = [c.python_name for c in pm.contributions.commands if c.python_name]
    assert names
    for name in names:
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_top_level_manifest_is_the_package_manifest():
    assert (ROOT / "napari.yaml").resolve() == (ROOT / "src/napari_amodal/napari.yaml").resolve()


def test_import_is_light():
    code = "import sys, napari_amodal, napari_amodal.cli; print(sorted(m for m in ('torch','qtpy','PyQt5','napari') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_built_wheel_carries_manifest_and_sample_data(tmp_path):
    """Build a wheel, then validate the manifest from the wheel alone (a clean import path)."""
    r = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheel = next(tmp_path.glob("napari_amodal-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_amodal/napari.yaml" in names
    assert any(n.startswith("napari_amodal/sample_data/embryo_sample") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import importlib.metadata as md, napari_amodal;"
        "assert napari_amodal.__file__.startswith(sys.argv[1]), napari_amodal.__file__;"
        "from npe2 import PluginManifest;"
        "pm = PluginManifest.from_distribution('napari-amodal');"
        "pm.validate_imports();"
        "import napari_amodal.data.sample as s; s.sample_path('embryo_sample.tif');"
        "print(pm.name)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "napari-amodal", r.stderr[-3000:]
