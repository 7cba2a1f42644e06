"""The bundled model's recipe (recipes/bundled): install.py ships what the recipe says."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from napari_amodal.models import BUNDLED_DIR
from napari_amodal.checkpoint import load_checkpoint, read_metadata, save_checkpoint, sha256

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "bundled"


@pytest.fixture(scope="module")
def install():
    spec = importlib.util.spec_from_file_location("bundled_install", RECIPE / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_model_has_the_recipes_inference_settings():
    """Editing inference.json without restamping the shipped file (install.py --restamp) fails here."""
    recipe = json.loads((RECIPE / "inference.json").read_text())
    model = read_metadata(BUNDLED_DIR / "bundled.safetensors")["config"]["model"]
    assert recipe and {k: model.get(k) for k in recipe} == recipe


def test_inference_files_hold_only_inference_settings(install, tmp_path):
    for name in ("inference.json", "inference_stage3.json"):
        fields = json.loads((RECIPE / name).read_text())
        assert set(fields) <= set(install.INFERENCE_FIELDS), name
    config = {"model": {"box_nms_thresh": 0.5, "box_refine_steps": 0, "fpn_channels": 128}}
    stage3 = install.with_recipe_inference(config, RECIPE / "inference_stage3.json")["model"]
    assert stage3 == {"box_nms_thresh": 0.5, "box_refine_steps": 1, "fpn_channels": 128}
    bad = tmp_path / "bad.json"
    bad.write_text('{"fpn_channels": 64}')  # a training setting: would change what the weights mean
    with pytest.raises(SystemExit, match="not inference-only"):
        install.with_recipe_inference(config, bad)


def _run(folder: Path, value: float, stage_rows: int) -> Path:
    folder.mkdir()
    save_checkpoint(folder / "model.safetensors", {"w": torch.full((3,), value)},
                    {"kind": "detector", "model": {"box_nms_thresh": 0.5, "box_refine_steps": 0}}, {"iteration": 7})
    rows = [{"iteration": i, "loss": 1.0 / i} for i in range(1, stage_rows + 1)]
    rows.append({"iteration": 1, "loss": 1.0})  # a resumed run logs an iteration twice: kept once
    (folder / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


@pytest.mark.parametrize("inference", ["default", "stage3", "as-trained"])
def test_main_ships_the_last_stage_with_all_logs(install, tmp_path, monkeypatch, inference):
    package = tmp_path / "package"
    monkeypatch.setattr(install, "BUNDLED_DIR", package)
    runs = [_run(tmp_path / "s1", 1.0, 2), _run(tmp_path / "s2", 2.5, 3)]
    kwargs = {"default": {}, "stage3": {"inference": RECIPE / "inference_stage3.json"},
              "as-trained": {"inference": None}}[inference]
    install.main([str(r) for r in runs], **kwargs)

    tensors, config, extra = load_checkpoint(package / "bundled.safetensors")
    assert tensors["w"].dtype == torch.float16 and torch.equal(tensors["w"].float(), torch.full((3,), 2.5))
    assert extra["stored_dtype"] == "float16" and extra["stages"] == [str(r) for r in runs]
    expected = {"default": json.loads((RECIPE / "inference.json").read_text()), "stage3": {"box_refine_steps": 1},
                "as-trained": {}}[inference]
    assert config["model"] == {"box_nms_thresh": 0.5, "box_refine_steps": 0, **expected}
    assert (package / "bundled.sha256").read_text().split()[0] == sha256(package / "bundled.safetensors")
    log = [json.loads(line) for line in (package / "bundled_training_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["iteration"]) for r in log] == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3)]


def test_append_ships_the_next_stage_and_keeps_the_shipped_logs(install, tmp_path, monkeypatch):
    package = tmp_path / "package"
    monkeypatch.setattr(install, "BUNDLED_DIR", package)
    install.main([str(_run(tmp_path / "s1", 1.0, 2)), str(_run(tmp_path / "s2", 2.5, 1))])
    install.append_stage(str(_run(tmp_path / "s3", 4.0, 2)))
    tensors, config, extra = load_checkpoint(package / "bundled.safetensors")
    assert torch.equal(tensors["w"].float(), torch.full((3,), 4.0))
    assert extra["stages"] == [str(tmp_path / s) for s in ("s1", "s2", "s3")]
    assert (package / "bundled.sha256").read_text().split()[0] == sha256(package / "bundled.safetensors")
    log = [json.loads(line) for line in (package / "bundled_training_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["iteration"]) for r in log] == [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
