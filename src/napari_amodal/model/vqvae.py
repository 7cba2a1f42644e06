"""Shape VQ-VAE: a discrete shape code for RoI-sized amodal masks.

Architecture as in the paper: the encoder is three stride-2 4x4 convolutions
(32, 64, 128 filters), two residual blocks and a 1x1 convolution to the embedding
dimension, so a ``(1, M, M)`` mask becomes a ``(D, M/8, M/8)`` latent; the decoder
is one convolution, two residual blocks and three transposed convolutions, ending
in a sigmoid. Trained first on ground-truth amodal masks (cropped to their box and
resized to ``M x M``), then frozen and used by the ``vq`` mask heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantizer import VectorQuantizer


class ResidualBlock(nn.Sequential):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, as in the VQ-VAE paper."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        hidden = hidden or channels // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + super().forward(x)


class ShapeEncoder(nn.Sequential):
    """``(B, 1, M, M)`` masks in [0, 1] -> ``(B, out_dim, M/8, M/8)``."""

    def __init__(self, out_dim: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        w1, w2, w3 = widths
        super().__init__(
            nn.Conv2d(1, w1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(w2, w3, 4, stride=2, padding=1),
            ResidualBlock(w3),
            ResidualBlock(w3),
            nn.ReLU(),
            nn.Conv2d(w3, out_dim, 1),
        )


class ShapeDecoder(nn.Sequential):
    """``(B, in_dim, M/8, M/8)`` latents -> ``(B, 1, M, M)`` mask *logits* (sigmoid applied by callers)."""

    def __init__(self, in_dim: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        w1, w2, w3 = widths
        super().__init__(
            nn.Conv2d(in_dim, w3, 3, padding=1),
            ResidualBlock(w3),
            ResidualBlock(w3),
            nn.ReLU(),
            nn.ConvTranspose2d(w3, w2, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(w2, w1, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(w1, 1, 4, stride=2, padding=1),
        )


def reconstruction_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Mean binary cross-entropy between mask logits and target masks (same shape)."""
    if masks.numel() == 0:
        return logits.sum() * 0
    return F.binary_cross_entropy_with_logits(logits, masks.to(logits.dtype))


def check_mask_size(mask_size: int) -> None:
    if mask_size % 8 != 0 or mask_size < 8:
        raise ValueError(f"mask_size must be a positive multiple of 8, got {mask_size}")


class ShapeVQVAE(nn.Module):
    """VQ-VAE over ``M x M`` amodal masks with a K-word codebook.

    Args:
        mask_size: M, the mask resolution (a multiple of 8); the code grid is ``M/8 x M/8``.
        num_codes: K, codebook size (paper: 4).
        embed_dim: D, codeword dimension (paper: 16).
        beta: commitment weight (paper: 0.25).

    Data: masks are ``(B, 1, M, M)`` float in [0, 1] (binary in training).
    """

    def __init__(self, mask_size: int = 64, num_codes: int = 4, embed_dim: int = 16, beta: float = 0.25) -> None:
        super().__init__()
        check_mask_size(mask_size)
        self.mask_size = mask_size
        self.num_codes = num_codes
        self.embed_dim = embed_dim
        self.encoder = ShapeEncoder(embed_dim)
        self.quantizer = VectorQuantizer(num_codes, embed_dim, beta=beta)
        self.decoder = ShapeDecoder(embed_dim)

    @property
    def grid_size(self) -> int:
        """Side of the code grid, ``M / 8``."""
        return self.mask_size // 8

    def encode(self, masks: Tensor) -> Tensor:
        """``(B, 1, M, M)`` -> continuous latents ``z_e (B, D, M/8, M/8)``."""
        return self.encoder(masks)

    def quantize(self, z_e: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """See :meth:`VectorQuantizer.forward`: ``(z_q, losses, indices, perplexity)``."""
        return self.quantizer(z_e)

    def decode_logits(self, z_q: Tensor) -> Tensor:
        """``(B, D, M/8, M/8)`` -> mask logits ``(B, 1, M, M)``."""
        return self.decoder(z_q)

    def decode(self, z_q: Tensor) -> Tensor:
        """``(B, D, M/8, M/8)`` -> mask probabilities ``(B, 1, M, M)``."""
        return self.decoder(z_q).sigmoid()

    def decode_code(self, indices: Tensor) -> Tensor:
        """Code indices ``(B, M/8, M/8) long`` -> mask probabilities ``(B, 1, M, M)``."""
        return self.decode(self.quantizer.embed(indices))

    def decode_soft_code(self, weights: Tensor) -> Tensor:
        """Per-cell code weights ``(B, K, M/8, M/8)`` (summing to 1 over K) -> probabilities ``(B, 1, M, M)``."""
        return self.decode(self.quantizer.embed_soft(weights))

    @torch.no_grad()
    def code_indices(self, masks: Tensor) -> Tensor:
        """``(B, 1, M, M)`` masks -> nearest code indices ``(B, M/8, M/8) long``."""
        return self.quantizer.nearest(self.encode(masks))

    def forward(self, masks: Tensor) -> dict[str, Tensor]:
        """Encode, quantise and decode ``masks (B, 1, M, M)``.

        Returns a dict with ``recon (B, 1, M, M)`` probabilities, ``loss`` =
        ``recon_loss + codebook_loss + beta * commitment_loss``, the three terms,
        ``perplexity`` and ``indices (B, M/8, M/8)``.
        """
        z_e = self.encode(masks)
        z_q, q_losses, indices, ppl = self.quantize(z_e)
        logits = self.decode_logits(z_q)
        recon_loss = reconstruction_loss(logits, masks)
        loss = recon_loss + q_losses["codebook_loss"] + self.quantizer.beta * q_losses["commitment_loss"]
        return {
            "recon": logits.sigmoid(),
            "loss": loss,
            "recon_loss": recon_loss,
            "codebook_loss": q_losses["codebook_loss"],
            "commitment_loss": q_losses["commitment_loss"],
            "perplexity": ppl,
            "indices": indices,
        }
