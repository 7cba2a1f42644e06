"""Shape VAE: the continuous-latent baseline of the VQ shape code.

Same encoder and decoder as :class:`~napari_amodal.model.vqvae.ShapeVQVAE`, but
the encoder predicts a Gaussian ``(mean, logvar)`` per latent cell instead of
snapping to a codeword. Trained on masks like the VQ-VAE (reconstruction BCE +
``kl_weight`` * KL to N(0, I)), then frozen; the ``vae`` mask head regresses the
posterior mean of the ground-truth mask and decodes it with the frozen decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .vqvae import ShapeDecoder, ShapeEncoder, check_mask_size, reconstruction_loss


def kl_loss(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch."""
    if mean.numel() == 0:
        return mean.sum() * 0
    kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp())
    return kl.flatten(1).sum(1).mean()


class ShapeVAE(nn.Module):
    """VAE over ``M x M`` amodal masks with a ``(D, M/8, M/8)`` Gaussian latent.

    Args:
        mask_size: M (multiple of 8).
        embed_dim: D, latent channels per cell.
        kl_weight: weight of the KL term in ``loss``.
    """

    def __init__(self, mask_size: int = 64, embed_dim: int = 16, kl_weight: float = 1e-3) -> None:
        super().__init__()
        check_mask_size(mask_size)
        self.mask_size = mask_size
        self.embed_dim = embed_dim
        self.kl_weight = kl_weight
        self.encoder = ShapeEncoder(2 * embed_dim)
        self.decoder = ShapeDecoder(embed_dim)

    @property
    def grid_size(self) -> int:
        return self.mask_size // 8

    def encode(self, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 1, M, M)`` -> ``(mean, logvar)``, each ``(B, D, M/8, M/8)``."""
        mean, logvar = self.encoder(masks).chunk(2, dim=1)
        return mean, logvar.clamp(-10.0, 10.0)

    @torch.no_grad()
    def latent(self, masks: Tensor) -> Tensor:
        """Posterior mean ``(B, D, M/8, M/8)``: the regression target of the ``vae`` head."""
        return self.encode(masks)[0]

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, D, M/8, M/8)`` -> mask probabilities ``(B, 1, M, M)``."""
        return self.decoder(z).sigmoid()

    def forward(self, masks: Tensor) -> dict[str, Tensor]:
        """Returns ``recon (B, 1, M, M)`` probs, ``loss``, ``recon_loss``, ``kl_loss``, ``mean``."""
        mean, logvar = self.encode(masks)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        logits = self.decode_logits(z)
        recon = reconstruction_loss(logits, masks)
        kl = kl_loss(mean, logvar)
        return {
            "recon": logits.sigmoid(),
            "loss": recon + self.kl_weight * kl,
            "recon_loss": recon,
            "kl_loss": kl,
            "mean": mean,
        }
