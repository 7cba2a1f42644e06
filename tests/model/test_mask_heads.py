import pytest
import torch

from napari_amodal.model.config import get_config
from napari_amodal.model.build import build_mask_branch
from napari_amodal.model.mask_heads import code_loss, latent_loss, project_targets
from napari_amodal.model.vae import ShapeVAE
from napari_amodal.model.vqvae import ShapeVQVAE

C = 16
NUM_CLASSES = 3


def _branch(head, mask_size=32):
    cfg = get_config("lean").replace(mask_head=head, mask_size=mask_size, num_classes=NUM_CLASSES, head_channels=16)
    shape_model = None
    if head == "vae":
        shape_model = ShapeVAE(mask_size)
    elif head.startswith("vq"):
        shape_model = ShapeVQVAE(mask_size)
    return build_mask_branch(cfg, C, shape_model)


def _targets(n_props=(3, 2)):
    """Per-image proposals, matched gt indices, gt masks (64x64) and labels."""
    g = torch.Generator().manual_seed(0)
    props, idxs, masks, labels = [], [], [], []
    for n in n_props:
        xy = torch.rand(n, 2, generator=g) * 30
        props.append(torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 20], 1))
        masks.append((torch.rand(2, 64, 64, generator=g) > 0.5).to(torch.uint8))
        labels.append(torch.tensor([1, 2]))
        idxs.append(torch.randint(0, 2, (n,), generator=g))
    return props, idxs, masks, labels


@pytest.mark.parametrize("head", ["fcn", "vae", "vq", "vq_refine"])
def test_branch_shapes_loss_and_backprop(head):
    branch = _branch(head).train()
    props, idxs, masks, labels = _targets()
    s = branch.roi_size
    feats = torch.randn(5, C, s, s, requires_grad=True)
    out = branch(feats)
    losses = branch.loss(out, props, masks, labels, idxs)
    expected = {
        "fcn": {"loss_mask"},
        "vae": {"loss_code"},
        "vq": {"loss_code"},
        "vq_refine": {"loss_code", "loss_refine"},
    }
    assert set(losses) == expected[head]
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert feats.grad.abs().sum() > 0
    branch.eval()
    with torch.no_grad():
        probs = branch.predict(branch(feats), [torch.tensor([1, 2, 1]), torch.tensor([2, 2])])
    m = 28 if head == "fcn" else 32
    assert [p.shape for p in probs] == [(3, 1, m, m), (2, 1, m, m)]
    assert all(((p >= 0) & (p <= 1)).all() for p in probs)
    if head == "vq_refine":
        assert out["mask_logits"].shape == (5, NUM_CLASSES, 32, 32)
    if head.startswith("vq"):
        assert out["code_logits"].shape == (5, 4, 4, 4)


@pytest.mark.parametrize("head", ["fcn", "vae", "vq", "vq_refine"])
def test_branch_empty_proposals_give_zero_loss_with_grad(head):
    branch = _branch(head).train()
    s = branch.roi_size
    feats = torch.randn(0, C, s, s, requires_grad=True)
    out = branch(feats)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    idxs = [torch.zeros(0, dtype=torch.long)] * 2
    masks = [torch.zeros(0, 64, 64, dtype=torch.uint8)] * 2
    labels = [torch.zeros(0, dtype=torch.long)] * 2
    losses = branch.loss(out, empty, masks, labels, idxs)
    for v in losses.values():
        assert v.item() == 0 and v.requires_grad
    sum(losses.values()).backward()
    assert branch.predict(out, labels)[0].shape[0] == 0


def test_vq_target_codes_are_frozen_encoder_argmax():
    branch = _branch("vq_refine")
    props, idxs, masks, labels = _targets()
    codes = branch.target_codes(props, masks, idxs)
    gt = (project_targets(masks, props, idxs, 32) >= 0.5).float()[:, None]
    vq = branch.shape_model
    z_e = vq.encode(gt)
    dist = ((z_e[:, None] - vq.quantizer.codebook[None, :, :, None, None]) ** 2).sum(2)  # (R, K, G, G)
    assert torch.equal(codes, dist.argmin(1))
    assert codes.shape == (5, 4, 4)


def test_shape_model_is_frozen_and_stays_in_eval():
    branch = _branch("vq")
    branch.train()
    assert not branch.shape_model.training
    assert not any(p.requires_grad for p in branch.shape_model.parameters())
    assert any(k.startswith("shape_model.quantizer.codebook") for k in branch.state_dict())
    # the quantizer's usage buffers do not move while the branch trains
    props, idxs, masks, labels = _targets()
    branch.loss(branch(torch.randn(5, C, 8, 8)), props, masks, labels, idxs)
    assert branch.shape_model.quantizer.usage.sum() == 0


def test_loss_functions_empty_case():
    logits = torch.zeros(0, 4, 2, 2, requires_grad=True)
    assert code_loss(logits, torch.zeros(0, 2, 2, dtype=torch.long)).item() == 0
    assert latent_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, 3)).item() == 0
    # one-hot BCE on a known example
    lg = torch.zeros(1, 2, 1, 1)
    assert code_loss(lg, torch.zeros(1, 1, 1, dtype=torch.long)).item() == pytest.approx(0.693147, rel=1e-5)
