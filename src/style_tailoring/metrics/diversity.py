"""Scene diversity of K samples per prompt: mean pairwise cosine distance and the Vendi score.

Both work on L2-normalised image embeddings grouped per prompt, (P, K, D), and are averaged over prompts.
Vendi (Friedman & Dieng, 2023) is exp of the Shannon entropy of the eigenvalues of K/n, K the cosine-similarity
matrix: the effective number of distinct samples, from 1 (all the same) to n (all orthogonal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def pairwise_cosine_diversity(emb: torch.Tensor) -> float:
    emb = F.normalize(emb.float(), dim=-1)
    k = emb.shape[1]
    sim = emb @ emb.transpose(1, 2)  # P×K×K
    off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)
    return float((1 - off_diagonal / (k * (k - 1))).mean())


def vendi_score(emb: torch.Tensor) -> float:
    emb = F.normalize(emb.double(), dim=-1)
    k = emb.shape[1]
    eigenvalues = torch.linalg.eigvalsh(emb @ emb.transpose(1, 2) / k).clamp(min=0)
    entropy = -(eigenvalues * torch.log(eigenvalues.where(eigenvalues > 0, torch.ones_like(eigenvalues)))).sum(-1)
    return float(entropy.exp().mean())


class SceneDiversity(Metric):
    """Accumulates (prompt index, embedding) pairs; ranks holding different prompts sync by concatenation."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("prompt_index", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, prompt_index: torch.Tensor, embeddings: torch.Tensor) -> None:
        self.prompt_index.append(prompt_index.long())
        self.embeddings.append(embeddings.float())

    def compute(self) -> dict[str, float]:
        index = torch.cat(self.prompt_index) if isinstance(self.prompt_index, list) else self.prompt_index
        emb = torch.cat(self.embeddings) if isinstance(self.embeddings, list) else self.embeddings
        order = torch.sort(index, stable=True).indices
        index, emb = index[order], emb[order]
        counts = torch.bincount(index)
        k = int(counts[counts > 0].min())
        if not bool((counts[counts > 0] == k).all()):
            raise ValueError("every prompt needs the same number of samples")
        grouped = emb.reshape(-1, k, emb.shape[-1])
        return {"diversity": pairwise_cosine_diversity(grouped), "vendi": vendi_score(grouped)}
