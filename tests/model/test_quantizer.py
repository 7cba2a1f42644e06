import pytest
import torch

from napari_amodal.model.quantizer import VectorQuantizer, codebook_loss, commitment_loss, perplexity


def test_indices_perplexity_and_shapes():
    q = VectorQuantizer(num_codes=4, dim=8)
    z = torch.randn(3, 8, 5, 6)
    zq, losses, idx, ppl = q(z)
    assert zq.shape == z.shape
    assert idx.shape == (3, 5, 6) and idx.dtype == torch.long
    assert idx.min() >= 0 and idx.max() < 4
    assert 1.0 <= ppl.item() <= 4.0 + 1e-5
    assert set(losses) == {"codebook_loss", "commitment_loss"}
    # values of z_q are the codewords
    torch.testing.assert_close(zq, q.embed(idx))


def test_straight_through_gradient_reaches_encoder_and_codebook():
    q = VectorQuantizer(num_codes=4, dim=8)
    z = torch.randn(2, 8, 4, 4, requires_grad=True)
    zq, losses, _, _ = q(z)
    zq.sum().backward(retain_graph=True)
    # straight-through: d(sum z_q)/dz_e = 1
    torch.testing.assert_close(z.grad, torch.ones_like(z))
    z.grad = None
    losses["codebook_loss"].backward(retain_graph=True)
    assert z.grad is None or z.grad.abs().sum() == 0  # stop-gradient on z_e
    assert q.codebook.grad.abs().sum() > 0
    q.codebook.grad = None
    losses["commitment_loss"].backward()
    assert z.grad.abs().sum() > 0
    assert q.codebook.grad is None or q.codebook.grad.abs().sum() == 0  # stop-gradient on e


def test_losses_match_formulas_on_hand_made_example():
    q = VectorQuantizer(num_codes=2, dim=2, dead_code_restart=False)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # two latent vectors: (0.1, -0.2) -> code 0, (0.8, 1.5) -> code 1
    z = torch.tensor([[0.1, 0.8], [-0.2, 1.5]]).view(1, 2, 1, 2)
    _, losses, idx, ppl = q(z)
    assert idx.tolist() == [[[0, 1]]]
    sq = ((0.1**2 + 0.2**2) + (0.2**2 + 0.5**2)) / 4  # mean over 2 vectors x 2 dims
    assert losses["codebook_loss"].item() == pytest.approx(sq)
    assert losses["commitment_loss"].item() == pytest.approx(sq)
    assert ppl.item() == pytest.approx(2.0)
    empty = z[:, :, :0]
    assert codebook_loss(empty, empty).item() == 0 and commitment_loss(empty, empty).item() == 0
    assert perplexity(torch.zeros(0, dtype=torch.long), 2).item() == 1


def test_usage_counts_and_dead_code_restart():
    q = VectorQuantizer(num_codes=4, dim=2, dead_after=5)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.1], [-0.1, 0.1], [100.0, 100.0]]))
    q.train()
    z = torch.randn(4, 2, 4, 4) * 0.1
    for _ in range(4):
        q(z)
    assert q.usage[3] == 0 and q.idle_steps[3] == 4
    assert q.usage.sum() == 4 * z.numel() // 2
    q(z)  # fifth unused step: code 3 restarted from an encoder output
    assert q.codebook[3].abs().max() < 1.0
    _, _, idx, _ = q(torch.cat([z, q.codebook[3].detach().view(1, 2, 1, 1).expand(1, 2, 4, 4)]))
    assert (idx == 3).any()


def test_no_restart_in_eval_or_when_disabled():
    q = VectorQuantizer(num_codes=2, dim=2, dead_after=1, dead_code_restart=False)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
    for _ in range(3):
        q(torch.zeros(1, 2, 2, 2))
    assert q.codebook[1, 0] == 100.0
    q2 = VectorQuantizer(num_codes=2, dim=2, dead_after=1).eval()
    with torch.no_grad():
        q2.codebook.copy_(torch.tensor([[0.0, 0.0], [100.0, 100.0]]))
        q2(torch.zeros(1, 2, 2, 2))
    assert q2.codebook[1, 0] == 100.0 and q2.usage.sum() == 0
