import pytest

from napari_amodal.model.config import FORMAT_VERSION, ModelConfig, get_config


@pytest.mark.parametrize("name", ["paper", "lean"])
def test_json_round_trip(name, tmp_path):
    cfg = get_config(name).replace(mask_head="vae", occlusion=False)
    path = tmp_path / "config.json"
    cfg.save(path)
    again = get_config(str(path))
    assert again == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["format_version"] == FORMAT_VERSION


def test_builtin_values():
    paper, lean = get_config("paper"), get_config("lean")
    assert paper.backbone == "resnet50" and paper.min_size == 800 and paper.rpn_post_nms_top_n_test == 1000
    assert paper.num_codes == 4 and paper.occlusion_loss_weight == 0.01
    assert lean.backbone == "resnet18" and lean.min_size <= 320 and lean.box_detections_per_img == 32


def test_rejects_bad_values():
    with pytest.raises(ValueError):
        ModelConfig(mask_head="unet")
    with pytest.raises(ValueError):
        ModelConfig(mask_size=30)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"unknown_field": 1})
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ValueError):
        get_config("no-such-config")
