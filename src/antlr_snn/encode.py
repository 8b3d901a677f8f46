"""Spike coding of static inputs: latency (Sec. 4.2) and rate (Bernoulli) codes.

Both return float spikes ``[T, B, N]`` (features flattened), ready for a network; an empty
batch (``B = 0``) gives ``[T, 0, N]``.

Example:
    >>> import torch
    >>> from antlr_snn import encode
    >>> x = torch.tensor([[1.0, 0.5, 0.0]])
    >>> encode.latency(x, num_steps=30)[:, 0].nonzero().tolist()   # (step, pixel)
    [[0, 0], [12, 1]]
"""
from __future__ import annotations

import torch
from antlr_snn.errors import UserError

__all__ = ["latency", "rate"]


def _check_images(images: torch.Tensor, num_steps: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(images)
    if images.dim() < 2:
        raise UserError(f"images must be [B, ...] with a batch dimension, got shape {tuple(images.shape)}")
    if not isinstance(num_steps, int) or num_steps < 1:
        raise UserError(f"num_steps must be a positive integer, got {num_steps!r}")
    if images.is_complex():
        raise UserError("images must be real, got a complex tensor")
    images = images.flatten(1)  # [B, N]; flatten, unlike reshape(B, -1), allows B = 0
    if not images.is_floating_point():
        images = images.float()
    if images.numel() == 0:
        return images
    if torch.isnan(images).any():
        raise UserError("images contain NaN")
    lo, hi = torch.aminmax(images)
    if lo < 0 or hi > 1:
        raise UserError("image intensities must lie in [0, 1]; divide 8-bit images by 255")
    return images


def latency(images: torch.Tensor, num_steps: int, t_max: int = 24) -> torch.Tensor:
    """Latency code: a pixel ``x`` in (0, 1] spikes once, at step ``floor(t_max (1 - x))``.

    ``x = 0`` never spikes; ``x`` just above 0 spikes at ``t_max - 1``. Needs
    ``t_max <= num_steps`` so that every spike fits. The floor is exact for the values the
    input dtype means: a product within ``t_max * eps(dtype)`` below a step boundary (the
    rounding error of ``x``) goes to that boundary, so an 8-bit gray level ``x = k / 255``
    spikes at exactly ``(t_max (255 - k)) // 255`` in float32 and float64 (float32(1/3) lies
    above 1/3 and would otherwise spike one step early).
    """
    images = _check_images(images, num_steps)
    if not isinstance(t_max, int) or t_max < 1 or t_max > num_steps:
        raise UserError(f"t_max must be an integer in [1, num_steps={num_steps}], got {t_max!r}")
    tol = t_max * torch.finfo(images.dtype).eps
    step = torch.floor(t_max * (1 - images.double()) + tol).long().clamp_max(t_max - 1)
    out = torch.zeros(num_steps, *images.shape, dtype=images.dtype, device=images.device)
    active = images > 0
    out.scatter_(0, step.unsqueeze(0), active.to(images.dtype).unsqueeze(0))
    return out


def rate(images: torch.Tensor, num_steps: int, max_prob: float = 1.0,
         generator: torch.Generator = None) -> torch.Tensor:
    """Rate code: at every step a pixel spikes with probability ``max_prob * x`` (Bernoulli)."""
    images = _check_images(images, num_steps)
    if not (0 < max_prob <= 1):
        raise UserError(f"max_prob must lie in (0, 1], got {max_prob!r}")
    prob = (max_prob * images).unsqueeze(0).expand(num_steps, *images.shape)
    return torch.bernoulli(prob, generator=generator)
