"""Tiny models and data for the training-loop tests (module level so workers can pickle them)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

N_FEATURES, N_CLASSES, VOCAB = 8, 6, 17


class TinyClassifier(nn.Module):
    """(B, 8) -> (B, 6) logits, with dropout so that resume must restore the RNG."""

    def __init__(self, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, N_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyLM(nn.Module):
    """(B, T) token ids -> (B, T, V) logits: embedding, dropout, linear."""

    def __init__(self, dim: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.emb(idx)))


class NoisyDataset(Dataset):
    """Learnable classification data whose samples get random noise at load time
    (stands in for random augmentation drawn from the global torch generator)."""

    def __init__(self, n: int = 60, seed: int = 0, noise: float = 0.1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, N_FEATURES, generator=g)
        w = torch.randn(N_FEATURES, N_CLASSES, generator=torch.Generator().manual_seed(1234))
        self.y = (self.x @ w).argmax(dim=1)
        self.noise = noise
        self.calls = 0
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.x[i] + self.noise * torch.randn(N_FEATURES), self.y[i]

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def mixup(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp with soft (B, C) targets, drawing from the global torch/numpy generators."""
    x, y = batch
    lam = float(np.random.beta(0.8, 0.8))
    perm = torch.randperm(x.shape[0])
    y1 = nn.functional.one_hot(y, N_CLASSES).float()
    return lam * x + (1 - lam) * x[perm], lam * y1 + (1 - lam) * y1[perm]


def token_array(n: int = 600, seed: int = 0) -> np.ndarray:
    """A 1-D uint16 token array with learnable structure (next = (3 * cur + 1) % V mostly)."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 0
    for i in range(1, n):
        out[i] = (3 * out[i - 1] + 1) % VOCAB if rng.random() < 0.8 else rng.integers(VOCAB)
    return out
