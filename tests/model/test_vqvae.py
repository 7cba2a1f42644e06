import torch

from _shapes import ellipse_masks, mask_iou
from napari_amodal.model.vae import ShapeVAE
from napari_amodal.model.vqvae import ShapeVQVAE


def test_shapes_and_round_trip():
    m = ShapeVQVAE(mask_size=32, num_codes=4, embed_dim=16).eval()
    x = ellipse_masks(3, 32, torch.Generator().manual_seed(1))
    z_e = m.encode(x)
    assert z_e.shape == (3, 16, 4, 4)
    z_q, losses, idx, ppl = m.quantize(z_e)
    out = m(x)
    assert out["recon"].shape == (3, 1, 32, 32)
    assert out["indices"].shape == (3, 4, 4)
    torch.testing.assert_close(m.decode(z_q), out["recon"])
    torch.testing.assert_close(m.decode_code(m.code_indices(x)), out["recon"])
    torch.testing.assert_close(out["loss"], out["recon_loss"] + out["codebook_loss"] + 0.25 * out["commitment_loss"])
    assert 1 <= out["perplexity"].item() <= 4
    # a one-hot soft code decodes like the hard code
    soft = torch.nn.functional.one_hot(idx, 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(m.decode_soft_code(soft), out["recon"])


def test_mask_size_64_latent_grid():
    m = ShapeVQVAE(mask_size=64)
    assert m.encode(torch.zeros(1, 1, 64, 64)).shape == (1, 16, 8, 8)
    assert m.grid_size == 8


def test_short_training_reconstructs_ellipses():
    g = torch.Generator().manual_seed(0)
    m = ShapeVQVAE(mask_size=32)
    test = ellipse_masks(64, 32, g)
    m.eval()
    with torch.no_grad():
        iou_untrained = mask_iou(m(test)["recon"] > 0.5, test).item()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(100):
        out = m(ellipse_masks(8, 32, g))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        out = m(test)
    iou = mask_iou(out["recon"] > 0.5, test).item()
    assert iou > 0.8 and iou > iou_untrained + 0.2, (iou, iou_untrained)
    assert (m.quantizer.usage > 0).all()  # all K codes used


def test_shape_vae_shapes_and_loss():
    m = ShapeVAE(mask_size=32, embed_dim=8)
    x = ellipse_masks(2, 32, torch.Generator().manual_seed(2))
    out = m(x)
    assert out["recon"].shape == (2, 1, 32, 32) and out["mean"].shape == (2, 8, 4, 4)
    out["loss"].backward()
    m.eval()
    torch.testing.assert_close(m.decode(m.latent(x)), m(x)["recon"])
