r"""Mixing-partner samplers: one call draws a partner for every anchor of a batch, on the device.

All samplers index the training spots ``0 .. n - 1`` and return the partners together with the
edge weight :math:`w_{ij}` of each pair for the loss (by default the probability with which the
partner was drawn). They use torch's global random generator, so ``torch.manual_seed`` makes a
run repeatable.

============  ==========================================  ===================================
method        candidates of anchor i                      probability of partner j
============  ==========================================  ===================================
``snr``       k nearest (spatial) training spots          expression kernel, eq. 6
``knn``       k nearest (spatial) training spots          uniform
``cmixup``    all other training spots                    expression kernel (C-Mixup)
``mixup``     all other training spots                    uniform
============  ==========================================  ===================================
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor


class PartnerSampler(ABC):
    """Draws one mixing partner per anchor."""

    @abstractmethod
    def __call__(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Partners (same shape as ``anchors``, long) and edge weights (float)."""

    @abstractmethod
    def to(self, device: torch.device | str) -> PartnerSampler:
        """Return the sampler with its tables on ``device``."""


class CandidateSampler(PartnerSampler):
    """Partners drawn from a fixed candidate list per anchor (``snr``, ``knn``).

    Parameters
    ----------
    candidates
        (n, k) long: the candidates of each anchor (padding entries carry probability 0).
    probs
        (n, k): the probability of each candidate; rows sum to 1.
    edge
        (n, k): edge weight of each pair; default ``probs``.
    """

    def __init__(self, candidates: Tensor, probs: Tensor, edge: Tensor | None = None):
        if candidates.shape != probs.shape or candidates.ndim != 2:
            raise ValueError("candidates and probs must be (n, k) tensors of one shape.")
        self.candidates = candidates.long()
        self.probs = probs.float()
        self.edge = self.probs if edge is None else edge.float()

    @classmethod
    def from_csr(
        cls,
        indptr: np.ndarray,
        indices: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        edge: np.ndarray | None = None,
    ) -> CandidateSampler:
        """From CSR rows over the training spots; ``weights=None`` draws uniformly.

        An anchor without candidates is paired with itself (probability 1, edge weight 0): its
        mixed sample is the spot itself.
        """
        indptr, indices = np.asarray(indptr), np.asarray(indices)
        n = len(indptr) - 1
        degree = np.diff(indptr)
        if weights is None:
            weights = np.repeat(1.0 / np.maximum(degree, 1), degree)
        k = max(int(degree.max(initial=0)), 1)
        rows = np.repeat(np.arange(n), degree)
        slot = np.arange(len(indices)) - indptr[rows]
        candidates = np.repeat(np.arange(n)[:, None], k, axis=1)
        probs = np.zeros((n, k))
        edges = np.zeros((n, k))
        candidates[rows, slot] = indices
        probs[rows, slot] = weights
        edges[rows, slot] = weights if edge is None else edge
        probs[degree == 0, 0] = 1.0
        return cls(torch.from_numpy(candidates), torch.from_numpy(probs), torch.from_numpy(edges))

    def __call__(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """One multinomial draw over each anchor's candidate row."""
        pick = torch.multinomial(self.probs[anchors], 1).squeeze(1)
        return self.candidates[anchors, pick], self.edge[anchors, pick]

    def to(self, device: torch.device | str) -> CandidateSampler:
        """Return the sampler with its tables on ``device``."""
        return CandidateSampler(
            self.candidates.to(device), self.probs.to(device), self.edge.to(device)
        )


class DenseSampler(PartnerSampler):
    """Partners drawn from a dense (n, n) probability matrix with a zero diagonal (``cmixup``).

    ``edge`` (n, n) gives the edge weight of each pair; default the probabilities themselves.
    """

    def __init__(self, probs: Tensor, edge: Tensor | None = None):
        if probs.ndim != 2 or probs.shape[0] != probs.shape[1]:
            raise ValueError("probs must be a square (n, n) matrix.")
        if edge is not None and edge.shape != probs.shape:
            raise ValueError("edge must have the shape of probs.")
        self.probs = probs.float()
        self.edge = self.probs if edge is None else edge.float()

    def __call__(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """One multinomial draw over each anchor's row of the matrix."""
        partners = torch.multinomial(self.probs[anchors], 1).squeeze(1)
        return partners, self.edge[anchors, partners]

    def to(self, device: torch.device | str) -> DenseSampler:
        """Return the sampler with its matrices on ``device``."""
        return DenseSampler(self.probs.to(device), self.edge.to(device))


class UniformSampler(PartnerSampler):
    """Any other training spot of the anchor's group, uniformly (``mixup``, ``cutmix``).

    Without ``groups`` every spot is one group. The edge weight is ``1 / (group size - 1)``; an
    anchor alone in its group is paired with itself (edge weight 0): its mixed sample is the
    spot itself.

    Parameters
    ----------
    n
        Number of training spots.
    groups
        (n,) long: each spot's group (its section); partners never cross groups.
    """

    def __init__(self, n: int, groups: Tensor | None = None):
        n = int(n)
        if n < 2:
            raise ValueError("Mixing needs at least two training spots.")
        self.n = n
        if groups is None:
            groups = torch.zeros(n, dtype=torch.long)
        groups = torch.as_tensor(groups).long()
        if groups.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), not {tuple(groups.shape)}.")
        # spots sorted by group: a partner is a shift within the anchor's block of that order
        self.members = torch.argsort(groups, stable=True)
        sorted_groups = groups[self.members]
        _, sizes = torch.unique_consecutive(sorted_groups, return_counts=True)
        starts = torch.cumsum(sizes, 0) - sizes
        block = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
        self.rank = torch.empty(n, dtype=torch.long)
        self.rank[self.members] = torch.arange(n)
        self.start = torch.empty(n, dtype=torch.long)
        self.size = torch.empty(n, dtype=torch.long)
        self.start[self.members] = starts[block]
        self.size[self.members] = sizes[block]

    def __call__(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Shift each anchor by a uniform 1 .. size - 1 within its group: never itself."""
        size = self.size[anchors]
        start = self.start[anchors]
        many = size > 1
        shift = (torch.rand(anchors.shape, device=anchors.device) * (size - 1)).long() + 1
        shift = torch.where(many, torch.minimum(shift, size - 1), torch.zeros_like(shift))
        local = (self.rank[anchors] - start + shift) % size
        partners = self.members[start + local]
        weight = torch.where(
            many, 1.0 / (size - 1).clamp(min=1).float(), torch.zeros_like(shift, dtype=torch.float)
        )
        return partners, weight

    def to(self, device: torch.device | str) -> UniformSampler:
        """Return the sampler with its tables on ``device``."""
        moved = object.__new__(UniformSampler)
        moved.n = self.n
        for name in ("members", "rank", "start", "size"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved
