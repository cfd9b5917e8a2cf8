"""Raters: each gives every candidate image `aligned` (0/1: does it show what the prompt asks?) and `style` (1-5).

- `JudgeRater`: any judge of the judge protocol (style_tailoring.evaluation.judges), e.g. the Sticker World's:
  aligned = every prompted attribute right, style = the style score mapped onto 1-5.
- `ClipRetrievalRater`: an independent rater, so curation is not graded by the judge that also evaluates: aligned =
  a CLIP model retrieves the image's own prompt among the candidate captions; style is left to another rater.
- `NoisyRater`: several simulated people, each flipping `aligned` with probability `flip` and moving `style` by one
  with probability `flip`, merged by majority (aligned) and median (style): for studying rating noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


@dataclass(frozen=True)
class Rating:
    aligned: int  # 0 or 1
    style: Optional[int]  # 1..5, or None when this rater does not rate style


def style_grade(score: float) -> int:
    """A style probability in [0, 1] as a 1-5 grade: 1 below 0.2, ..., 5 from 0.8 up."""
    return int(min(5, max(1, 1 + int(score * 5))))


class JudgeRater:
    name = "judges"

    def __init__(self, judge):
        self.judge = judge

    def rate(self, images: torch.Tensor, prompts: list[str]) -> list[Rating]:
        scores = self.judge.score(images, prompts)
        aligned = torch.nan_to_num(torch.as_tensor(scores["alignment"], dtype=torch.float64), nan=0.0)
        style = torch.as_tensor(scores["style_score"], dtype=torch.float64)
        return [Rating(int(a >= 1.0), style_grade(float(s))) for a, s in zip(aligned.tolist(), style.tolist())]


class ClipRetrievalRater:
    name = "clip_retrieval"

    def __init__(self, clip_dir, captions: list[str]):
        from style_tailoring.evaluation.metrics.clip import load_clip

        self.model, self.processor = load_clip(clip_dir, key="hitl.raters.clip")
        self.captions = list(dict.fromkeys(captions))

    @torch.no_grad()
    def rate(self, images: torch.Tensor, prompts: list[str]) -> list[Rating]:
        from style_tailoring.evaluation.metrics.clip import image_embeddings

        unknown = sorted(set(prompts) - set(self.captions))
        if unknown:
            raise ValueError(f"prompts outside the retrieval captions: {unknown[:3]}")
        text = self.processor(text=self.captions, padding="max_length", truncation=True, return_tensors="pt")
        text_emb = torch.nn.functional.normalize(self.model.get_text_features(**text).float(), dim=-1)
        image_emb = image_embeddings(self.model, self.processor, images)
        best = (image_emb @ text_emb.T).argmax(-1).tolist()
        return [Rating(int(self.captions[b] == p), None) for b, p in zip(best, prompts)]


class NoisyRater:
    name = "noisy"

    def __init__(self, base, flip: float = 0.1, raters: int = 3, seed: int = 0):
        if not 0 <= flip <= 0.5:
            raise ValueError(f"flip must lie in [0, 0.5], got {flip}")
        if raters < 1:
            raise ValueError(f"raters must be >= 1, got {raters}")
        self.base, self.flip, self.raters, self.seed = base, flip, raters, seed

    def individual(self, images: torch.Tensor, prompts: list[str]) -> list[list[Rating]]:
        """Each simulated rater's ratings (rater × image)."""
        truth = self.base.rate(images, prompts)
        rng = np.random.default_rng(self.seed)
        out = []
        for _ in range(self.raters):
            flips, moves = rng.random(len(truth)) < self.flip, rng.random(len(truth)) < self.flip
            signs = rng.choice([-1, 1], len(truth))
            out.append([Rating(r.aligned ^ int(f), None if r.style is None else int(np.clip(r.style + s * m, 1, 5)))
                        for r, f, m, s in zip(truth, flips, moves, signs)])
        return out

    def rate(self, images: torch.Tensor, prompts: list[str]) -> list[Rating]:
        return merge(self.individual(images, prompts))


def merge(per_rater: list[list[Rating]], style: str = "median") -> list[Rating]:
    """Several raters' ratings of the same images (rater × image): see `merge_one`."""
    return [merge_one(list(ratings), style) for ratings in zip(*per_rater)]


def merge_one(ratings: list[Rating], style: str = "median") -> Rating:
    """One image's ratings: aligned by majority (a tie is not aligned), style by the median (a half rounded down)
    or the mean (rounded half up)."""
    if style not in ("median", "mean"):
        raise ValueError(f"style merge must be 'median' or 'mean', got {style!r}")
    votes = sum(r.aligned for r in ratings)
    styles = [r.style for r in ratings if r.style is not None]
    grade = None
    if styles:
        grade = int(np.median(styles)) if style == "median" else int(np.floor(np.mean(styles) + 0.5))
    return Rating(int(votes * 2 > len(ratings)), grade)


def agreement(per_rater: list[list[Rating]]) -> float:
    """Share of images on whose `aligned` every rater agrees."""
    rows = list(zip(*per_rater))
    return float(np.mean([len({r.aligned for r in row}) == 1 for row in rows])) if rows else float("nan")
