import pytest
import torch

from _shapes import two_cell_sample
from napari_amodal.model import AmodalMaskRCNN, ShapeVQVAE, build_model, get_config

HEADS = ["fcn", "vae", "vq", "vq_refine"]
SIZE = 128


def _config(head, occlusion=True):
    return get_config("lean").replace(mask_head=head, occlusion=occlusion, min_size=SIZE, max_size=SIZE)


def _empty_target(h=SIZE, w=SIZE):
    return {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, h, w, dtype=torch.uint8),
        "occlusion": torch.zeros(h, w),
    }


def _expected_losses(head, occlusion):
    names = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    names |= {
        "fcn": {"loss_mask"},
        "vae": {"loss_code"},
        "vq": {"loss_code"},
        "vq_refine": {"loss_code", "loss_refine"},
    }[head]
    if occlusion:
        names.add("loss_occlusion")
    return names


@pytest.mark.parametrize("occlusion", [True, False])
@pytest.mark.parametrize("head", HEADS)
def test_train_step_and_eval_contract(head, occlusion):
    model = build_model(_config(head, occlusion))
    image, target = two_cell_sample(SIZE)
    model.train()
    # one image with cells, one empty frame
    losses = model([image, image * 0.5], [target, _empty_target()])
    assert set(losses) == _expected_losses(head, occlusion)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())

    model.eval()
    h, w = 100, 120  # non-square, not the resize size: outputs come back at input resolution
    with torch.no_grad():
        out = model([image[:, :h, :w]])
    assert len(out) == 1
    det = out[0]
    n = det["boxes"].shape[0]
    assert det["boxes"].shape == (n, 4) and det["labels"].shape == (n,) and det["scores"].shape == (n,)
    assert det["masks"].shape == (n, 1, h, w) and det["masks"].dtype == torch.float32
    assert n <= model.roi_heads.detections_per_img
    if occlusion:
        assert det["occlusion"].shape == (h, w)
        assert ((det["occlusion"] >= 0) & (det["occlusion"] <= 1)).all()
    else:
        assert "occlusion" not in det


def test_all_empty_batch_trains():
    model = build_model(_config("vq_refine"))
    image, _ = two_cell_sample(SIZE)
    losses = model([image], [_empty_target()])
    assert losses["loss_code"].item() == 0 and losses["loss_refine"].item() == 0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def test_missing_occlusion_map_is_ignored():
    model = build_model(_config("fcn"))
    image, target = two_cell_sample(SIZE)
    del target["occlusion"]
    losses = model([image], [target])
    assert losses["loss_occlusion"].item() == 0


def test_occlusion_target_resized_like_image():
    model = build_model(_config("fcn"))
    image, target = two_cell_sample(64)
    images, targets = model.transform([image], [target])
    occ = targets[0]["occlusion"]
    assert occ.shape == images.image_sizes[0] == (SIZE, SIZE)
    assert set(occ.unique().tolist()) <= {0.0, 1.0}
    assert occ.sum() == pytest.approx(4 * target["occlusion"].sum())


@pytest.mark.parametrize("head", HEADS)
def test_overfits_one_image(head):
    torch.manual_seed(0)
    model = build_model(_config(head))
    image, target = two_cell_sample(SIZE)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    model.train()
    history = []
    for _ in range(20):
        losses = model([image], [target])
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        history.append(total.item())
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.7 * first, history


def test_shape_model_frozen_inside_model_and_in_state_dict():
    vq = ShapeVQVAE(mask_size=32)
    model = build_model(_config("vq_refine"), vq)
    model.train()
    assert model.roi_heads.mask_branch.shape_model is vq
    assert not vq.training and not any(p.requires_grad for p in vq.parameters())
    keys = model.state_dict().keys()
    assert "roi_heads.mask_branch.shape_model.quantizer.codebook" in keys
    clone = build_model(_config("vq_refine"))
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.roi_heads.mask_branch.shape_model.quantizer.codebook, vq.quantizer.codebook)


def test_shape_model_size_must_match_config():
    with pytest.raises(ValueError):
        build_model(_config("vq"), ShapeVQVAE(mask_size=64))


def test_paper_config_builds_resnet50_fpn():
    cfg = get_config("paper")
    model = build_model(cfg)
    assert isinstance(model, AmodalMaskRCNN)
    assert type(model.backbone.body.layer1[0]).__name__ == "Bottleneck"  # ResNet-50 blocks
    assert model.backbone.out_channels == 256
    assert model.rpn._post_nms_top_n["testing"] == 1000
    assert model.transform.min_size == (800,)
    assert model.roi_heads.mask_branch.refinement is not None
    assert model.roi_heads.mask_branch.shape_model.mask_size == 64
    assert model.occlusion is not None and model.occlusion.loss_weight == 0.01


def test_mobilenet_backbone_trains_and_predicts():
    cfg = _config("vq").replace(backbone="mobilenet_v3_large", fpn_channels=64)
    model = build_model(cfg)
    image, target = two_cell_sample(SIZE)
    losses = model([image], [target])
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        det = model([image])[0]
    assert det["masks"].shape[1:] == (1, SIZE, SIZE)


def test_masks_for_given_boxes_have_image_size_and_follow_the_boxes():
    from napari_amodal.model import build_model, masks_for_boxes
    from tiny import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config("fcn"))
    image = torch.rand(3, 96, 120)
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0], [60.0, 10.0, 110.0, 40.0]])
    masks = masks_for_boxes(model, image, boxes)
    assert masks.shape == (2, 96, 120)
    # pasted masks live inside their boxes only
    assert masks[0, :, 60:].abs().sum() == 0 and masks[1, 50:, :].abs().sum() == 0
    assert model.training  # the model's mode is restored


def test_box_refine_steps_reapply_the_box_head_to_detections():
    """Test-time iterative box regression: same detections and scores, boxes regressed once
    more by the box head for their class, masks predicted in the refined boxes."""
    torch.manual_seed(0)
    cfg = _config("fcn", occlusion=False).replace(num_classes=3, box_score_thresh=0.0)
    model = build_model(cfg).eval()
    heads = model.roi_heads
    image, _ = two_cell_sample(SIZE)  # SIZE x SIZE: the transform does not resize it
    with torch.no_grad():
        plain = model([image])[0]
        boxes, labels = plain["boxes"], plain["labels"]
        # expected, computed without refine_boxes: the box head's regression for each label's column
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        _, reg = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, [boxes], images.image_sizes)))
        expected = torch.stack([
            heads.box_coder.decode_single(reg[k : k + 1, 4 * lab : 4 * lab + 4], boxes[k : k + 1])[0]
            for k, lab in enumerate(labels.tolist())
        ]).clamp(0, SIZE)
        heads.box_refine_steps = 1
        refined = model([image])[0]
        masks = heads.mask_branch.predict(
            heads.mask_branch(heads.mask_roi_pool(features, [refined["boxes"]], images.image_sizes)), [labels]
        )[0]
        # a batch: an image without detections beside the same image with them
        pair, _ = model.transform([image, image])
        both = heads.refine_boxes(model.backbone(pair.tensors), [boxes[:0], boxes], [labels[:0], labels],
                                  pair.image_sizes)
    assert len(boxes) > 0 and set(labels.tolist()) == {1, 2}  # both classes' columns are exercised
    torch.testing.assert_close(refined["scores"], plain["scores"])
    torch.testing.assert_close(refined["labels"], labels)
    torch.testing.assert_close(refined["boxes"], expected)
    assert not torch.allclose(refined["boxes"], boxes)  # the untrained head moves them
    # masks come from the refined boxes (pasted at full size by the transform)
    pasted = model.transform.postprocess([{"boxes": refined["boxes"], "masks": masks}], images.image_sizes,
                                         [(SIZE, SIZE)])[0]["masks"]
    torch.testing.assert_close(refined["masks"], pasted)
    assert both[0].shape == (0, 4)
    torch.testing.assert_close(both[1], expected)


def test_refined_box_that_would_vanish_keeps_its_place():
    torch.manual_seed(0)
    model = build_model(_config("fcn", occlusion=False)).eval()
    heads = model.roi_heads
    with torch.no_grad():  # a regression that pushes every box far outside the image
        heads.box_predictor.bbox_pred.weight.zero_()
        heads.box_predictor.bbox_pred.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0] + [1000.0, 1000.0, 0.0, 0.0]))
        features = {k: torch.rand(1, model.backbone.out_channels, SIZE // s, SIZE // s)
                    for k, s in zip(["0", "1", "2", "3", "pool"], [4, 8, 16, 32, 64])}
        boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
        out = heads.refine_boxes(features, [boxes], [torch.tensor([1])], [(SIZE, SIZE)])[0]
    torch.testing.assert_close(out, boxes)


def test_box_refine_steps_in_config():
    cfg = get_config("lean")
    assert cfg.box_refine_steps == 0  # torchvision's behaviour unless a config asks
    assert build_model(cfg.replace(box_refine_steps=2, min_size=SIZE, max_size=SIZE)).roi_heads.box_refine_steps == 2
    with pytest.raises(ValueError, match="box_refine_steps"):
        cfg.replace(box_refine_steps=-1)
