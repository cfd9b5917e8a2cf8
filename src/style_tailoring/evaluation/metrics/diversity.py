"""Scene diversity of K samples per prompt: mean pairwise cosine distance and the Vendi score.

Both take image embeddings grouped per prompt, (P, K, D) (normalised here, so raw CLIP embeddings do too), score
each prompt's K samples and average over prompts: they measure how varied the scenes for one prompt are, not how
different the prompts are from each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _cosine_similarities(emb: torch.Tensor) -> torch.Tensor:
    emb = F.normalize(emb.double(), dim=-1)
    return emb @ emb.transpose(1, 2)  # P×K×K


def pairwise_cosine_diversity(emb: torch.Tensor) -> float:
    """Mean over prompts of the mean over pairs i<j of 1 − cos(e_i, e_j): 0 for identical samples, 1 for orthogonal
    ones (2 at most, for opposite ones)."""
    k = emb.shape[1]
    if k < 2:
        raise ValueError("pairwise diversity needs at least 2 samples per prompt")
    sim = _cosine_similarities(emb)
    # the matrix is symmetric, so the mean over ordered pairs i≠j equals the mean over pairs i<j
    mean_off_diagonal = (sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)) / (k * (k - 1))
    return float((1 - mean_off_diagonal).mean())


def vendi_score(emb: torch.Tensor) -> float:
    """Vendi score (Friedman & Dieng, TMLR 2023), averaged over prompts: exp of the Shannon entropy of the eigenvalues
    of S/K, S the K×K cosine-similarity matrix of one prompt's samples. It is the effective number of distinct
    samples, in [1, K]: 1 when all K are identical, K when they are mutually orthogonal.
    """
    k = emb.shape[1]
    eigenvalues = torch.linalg.eigvalsh(_cosine_similarities(emb) / k).clamp(min=0)  # they sum to 1 (trace S = K)
    entropy = -torch.special.xlogy(eigenvalues, eigenvalues).sum(-1)  # xlogy: 0·log 0 = 0
    return float(entropy.exp().mean())


class SceneDiversity(Metric):
    """Pairwise cosine diversity and Vendi score over embeddings accumulated with their prompt index.

    Samples are regrouped by prompt index at compute time, so prompts (or a prompt's seeds) sharded across DDP ranks
    and updated in any order give the same result: the "cat" reduction only has to bring every pair together.
    Every prompt must end up with the same number K of samples.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("prompt_index", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")

    def update(self, prompt_index: torch.Tensor, embeddings: torch.Tensor) -> None:
        """prompt_index (N,) ints, embeddings (N, D)."""
        self.prompt_index.append(torch.as_tensor(prompt_index, device=self.device).long())
        self.embeddings.append(embeddings.float())

    def compute(self) -> dict[str, float]:
        # after a DDP sync each state is one concatenated tensor, before it a list: dim_zero_cat takes both
        index, emb = dim_zero_cat(self.prompt_index), dim_zero_cat(self.embeddings)
        counts = torch.bincount(index)
        counts = counts[counts > 0]
        if not bool((counts == counts[0]).all()):
            raise ValueError(f"every prompt needs the same number of samples, got counts {counts.tolist()}")
        grouped = emb[torch.argsort(index, stable=True)].reshape(len(counts), int(counts[0]), -1)
        return {"diversity": pairwise_cosine_diversity(grouped), "vendi": vendi_score(grouped)}
