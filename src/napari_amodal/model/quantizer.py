"""Vector quantiser with the VQ-VAE paper's codebook and commitment losses.

``z_e`` (encoder output) is snapped to its nearest codeword ``e_k``. The codebook
is a learned parameter trained by the *codebook loss* ``||sg[z_e] - e||^2``; the
encoder is kept close to its codeword by the *commitment loss*
``||z_e - sg[e]||^2`` (weighted by ``beta`` in the caller's total loss).
Gradients reach the encoder through the straight-through estimator.

Codebook use is visible: every call returns the code indices and the perplexity
(``exp`` of the entropy of code use: 1 = one code used, K = all used evenly), and
per-code usage counts are kept in buffers. A code unused for ``dead_after``
training steps is restarted from a random encoder output of the current batch, so
all K codes stay alive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def codebook_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """``mean ||sg[z_e] - e||^2``: moves codewords towards encoder outputs."""
    if z_e.numel() == 0:
        return z_q.sum() * 0
    return F.mse_loss(z_q, z_e.detach())


def commitment_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
    """``mean ||z_e - sg[e]||^2``: keeps encoder outputs near their codeword."""
    if z_e.numel() == 0:
        return z_e.sum() * 0
    return F.mse_loss(z_e, z_q.detach())


def perplexity(indices: Tensor, num_codes: int) -> Tensor:
    """``exp(entropy)`` of the code histogram of ``indices`` (any shape), in ``[1, K]``."""
    if indices.numel() == 0:
        return torch.ones((), device=indices.device)
    p = torch.bincount(indices.flatten(), minlength=num_codes).float() / indices.numel()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantiser for channel-first latents.

    Args:
        num_codes: K, the number of codewords.
        dim: D, the channel dimension of the latents.
        beta: commitment weight; stored here so the caller's total loss can use
            ``codebook + beta * commitment``.
        dead_code_restart: restart codes unused for ``dead_after`` training steps.
        dead_after: training steps without use after which a code is dead.

    Buffers:
        usage: ``(K,) float``, how many latent vectors each code received (training).
        idle_steps: ``(K,) long``, training steps since each code was last used.
    """

    def __init__(
        self,
        num_codes: int = 4,
        dim: int = 16,
        beta: float = 0.25,
        dead_code_restart: bool = True,
        dead_after: int = 20,
    ) -> None:
        super().__init__()
        self.num_codes = num_codes
        self.dim = dim
        self.beta = beta
        self.dead_code_restart = dead_code_restart
        self.dead_after = dead_after
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("idle_steps", torch.zeros(num_codes, dtype=torch.long))

    def nearest(self, z_e: Tensor) -> Tensor:
        """Indices ``(B, H, W) long`` of the nearest codeword to each vector of ``z_e (B, D, H, W)``."""
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + self.codebook.pow(2).sum(1)[None, :]
        b, _, h, w = z_e.shape
        return dist.argmin(1).view(b, h, w)

    def embed(self, indices: Tensor) -> Tensor:
        """Codewords for ``indices (B, H, W)`` as ``(B, D, H, W)``."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def embed_soft(self, weights: Tensor) -> Tensor:
        """Convex mix of codewords for ``weights (B, K, H, W)`` (rows sum to 1) as ``(B, D, H, W)``."""
        return torch.einsum("bkhw,kd->bdhw", weights, self.codebook)

    def forward(self, z_e: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        """Quantise ``z_e``.

        Args:
            z_e: ``(B, D, H, W)`` encoder output.

        Returns:
            quantized: ``(B, D, H, W)``, equal in value to the codewords, with the
                gradient of ``z_e`` (straight-through).
            losses: ``codebook_loss`` and ``commitment_loss`` (unweighted scalars).
            indices: ``(B, H, W) long`` in ``[0, K)``.
            perplexity: scalar in ``[1, K]``.
        """
        indices = self.nearest(z_e)
        z_q = self.embed(indices)
        losses = {"codebook_loss": codebook_loss(z_e, z_q), "commitment_loss": commitment_loss(z_e, z_q)}
        # Straight-through estimator: forward uses z_q, backward copies dL/dz_q to z_e.
        quantized = z_e + (z_q - z_e).detach()
        if self.training:
            self._update_usage(z_e, indices)
        return quantized, losses, indices, perplexity(indices, self.num_codes)

    @torch.no_grad()
    def _update_usage(self, z_e: Tensor, indices: Tensor) -> None:
        counts = torch.bincount(indices.flatten(), minlength=self.num_codes).to(self.usage)
        self.usage += counts
        used = counts > 0
        self.idle_steps[used] = 0
        self.idle_steps[~used] += 1
        if not self.dead_code_restart:
            return
        dead = torch.where(self.idle_steps >= self.dead_after)[0]
        if dead.numel() == 0 or indices.numel() == 0:
            return
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)
        pick = torch.randint(flat.shape[0], (dead.numel(),), device=flat.device)
        self.codebook.data[dead] = flat[pick]
        self.idle_steps[dead] = 0

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, "
            f"dead_code_restart={self.dead_code_restart}, dead_after={self.dead_after}"
        )
