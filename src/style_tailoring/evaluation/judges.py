"""Judges: per-sample scores of generated images against their prompts, plugged in through config.

`eval.judges` is a Hydra `_target_` (with its arguments) that returns an object with

    score(images: uint8 tensor N×3×H×W, prompts: list[str]) -> dict[str, float tensor (N,)]

one value per image and score name (NaN where a score does not apply to that prompt). Evaluation reports each
score's mean as `eval/<name>` and keeps the per-image values beside the samples (`judge_scores.jsonl`), which is
what curation rates images with. The Sticker World's judges (`style_tailoring.world.judges.load_judges`) give
`alignment`, `alignment/<attribute>` and `style_score`; a user's own judge replaces them by naming its class.
A judge may also offer `prompt_attributes(prompt) -> {attribute: value} | None`: what a prompt asks for, which
curation uses to report its yields per attribute value, and `diversity(images, prompts, per_prompt) -> {name:
float}`: set-level scores of each prompt's consecutive `per_prompt` samples, reported as `eval/<name>` (the world's
`layout_diversity`), and `labels(images) -> {name: [class per image]}`: what it predicts of each image (the world's
count and composition classes), kept in `judge_scores.jsonl` as `labels/<name>` so set-level scores can be
recomputed from the per-sample file.
"""

from __future__ import annotations

from typing import Protocol

import torch


class Judge(Protocol):
    def score(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]: ...


def build_judges(spec) -> Judge:
    from hydra.utils import instantiate

    return instantiate(dict(spec), _convert_="all")


def mean_scores(per_sample: dict[str, torch.Tensor]) -> dict[str, float]:
    """The mean of each score over the images it applies to (NaN entries left out); scores that apply to none are
    omitted."""
    out = {}
    for name, values in per_sample.items():
        values = torch.as_tensor(values, dtype=torch.float64)
        valid = values[~torch.isnan(values)]
        if len(valid):
            out[name] = float(valid.mean())
    return out
