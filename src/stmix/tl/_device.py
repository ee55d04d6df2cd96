"""Choosing where to compute."""

from __future__ import annotations

import torch

from stmix import _options


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA, then Apple MPS, then the CPU; anything else as torch reads it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"{_options.name('device')} must be 'auto', 'cpu', 'cuda', 'mps'..., not {device!r}."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{_options.arg('device', 'cuda')} was asked for, but torch sees no CUDA GPU; use "
            f"{_options.arg('device', 'auto')}."
        )
    return resolved


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context elsewhere (bf16 is slow on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
