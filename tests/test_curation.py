"""Raters and selection rules of the curation room, on real renders scored by the shipped world judges and CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from style_tailoring.config import REPO_ROOT
from style_tailoring.curation.curate import EmptySelection, Rules, select, statistics
from style_tailoring.curation.raters import (
    ClipRetrievalRater,
    JudgeRater,
    NoisyRater,
    Rating,
    agreement,
    merge,
    style_grade,
)
from style_tailoring.world.grammar import Content, all_contents, caption, parse_caption
from style_tailoring.world.render import render

JUDGES = REPO_ROOT / "assets" / "sticker_world" / "judges"


@pytest.fixture(scope="module")
def renders():
    """16 perfect stickers and 16 photos of known content, with their true captions."""
    rng = np.random.default_rng(2024)
    contents = [all_contents()[i] for i in rng.choice(len(all_contents()), 16, replace=False)]
    images, prompts, kinds = [], [], []
    for kind in ("sticker", "photo"):
        for content in contents:
            images.append(torch.from_numpy(np.array(render(content, kind, rng))).permute(2, 0, 1))
            prompts.append(caption(content))
            kinds.append(kind)
    return torch.stack(images), prompts, kinds


def test_style_grades_cover_one_to_five():
    assert [style_grade(s) for s in (0.0, 0.19, 0.2, 0.5, 0.79, 0.8, 1.0)] == [1, 1, 2, 3, 4, 5, 5]


def test_judge_rater_sees_content_and_style(renders):
    from style_tailoring.world.judges import load_judges

    images, prompts, kinds = renders
    rater = JudgeRater(load_judges(JUDGES))
    right = rater.rate(images, prompts)
    assert np.mean([r.aligned for r in right]) >= 0.9
    stickers = [r.style for r, k in zip(right, kinds) if k == "sticker"]
    photos = [r.style for r, k in zip(right, kinds) if k == "photo"]
    assert min(stickers) >= 4 and max(photos) <= 2
    wrong = rater.rate(images, [caption(Content("two", "purple", "heart"))] * len(prompts))
    assert np.mean([r.aligned for r in wrong]) < 0.2


def test_clip_retrieval_rater_is_an_independent_judge_of_alignment(renders):
    images, prompts, _ = renders
    captions = [caption(c) for c in all_contents()]
    rater = ClipRetrievalRater(JUDGES / "clip", captions)
    right = rater.rate(images, prompts)
    # the world CLIP is the weakest judge (0.74 content retrieval on held-out renders): far above chance (1/60)
    assert np.mean([r.aligned for r in right]) >= 0.6 and all(r.style is None for r in right)
    shuffled = prompts[1:] + prompts[:1]
    assert np.mean([r.aligned for r in rater.rate(images, shuffled)]) < 0.2
    with pytest.raises(ValueError, match="outside the retrieval captions"):
        rater.rate(images[:1], ["a cat"])


class Fixed:
    def __init__(self, ratings):
        self.ratings = ratings

    def rate(self, images, prompts):
        return self.ratings


def test_noisy_raters_flip_at_their_rate_and_the_majority_repairs_it():
    truth = [Rating(1, 3)] * 2000 + [Rating(0, 3)] * 2000
    single = NoisyRater(Fixed(truth), flip=0.2, raters=1, seed=0).individual(None, [])
    flipped = np.mean([a.aligned != t.aligned for a, t in zip(single[0], truth)])
    assert abs(flipped - 0.2) < 0.03
    many = NoisyRater(Fixed(truth), flip=0.2, raters=5, seed=0)
    merged = many.rate(None, [])
    assert np.mean([a.aligned != t.aligned for a, t in zip(merged, truth)]) < 0.1  # majority of 5: ~5.8%
    assert all(1 <= r.style <= 5 for r in merged)
    assert 0.2 < agreement(many.individual(None, [])) < 0.5  # all five agree with prob 0.8^5 + 0.2^5 ~ 0.33
    assert NoisyRater(Fixed(truth), flip=0.0, raters=3).rate(None, []) == truth
    assert merge([[Rating(1, 2)], [Rating(0, 5)]]) == [Rating(0, 3)]  # a tie is not aligned; median 3.5 -> 3


def rows(spec):
    return [{"file_name": f"{i}.png", "prompt": p, "seed": i, "aligned": a, "style": s}
            for i, (p, a, s) in enumerate(spec)]


def test_selection_caps_per_prompt_and_keeps_the_best_style_first():
    candidates = rows([("one red star", 1, 5), ("one red star", 1, 2), ("one red star", 1, 4), ("one red star", 0, 5),
                       ("two blue hearts", 1, 1), ("two blue hearts", 0, 5)])
    alignment, style = select(candidates, Rules(per_prompt_cap=2, style_min=4))
    assert [(r["prompt"], r["style"]) for r in alignment] == [("one red star", 5), ("one red star", 4),
                                                             ("two blue hearts", 1)]
    assert [r["file_name"] for r in style] == ["0.png", "2.png"]  # aligned and style >= 4 only
    stats = statistics(candidates, alignment, style, attributes=lambda p: (parse_caption(p) or Content("", "", ""))
                       .as_dict())
    assert stats["candidates"] == 6 and stats["aligned"] == 4 and stats["yield"]["style"] == pytest.approx(2 / 6)
    assert stats["style_histogram"] == {"1": 1, "2": 1, "3": 0, "4": 1, "5": 3}
    assert stats["per_prompt"]["one red star"] == {"candidates": 4, "aligned": 3, "alignment": 2, "style": 2}
    assert stats["per_attribute"]["colour"]["blue"] == {"candidates": 2, "aligned": 1}


def test_a_rule_that_selects_nothing_says_which():
    with pytest.raises(EmptySelection, match=r"style rule .*style_min=4.*best style grade: 3"):
        select(rows([("one red star", 1, 3)]), Rules(style_min=4))
    with pytest.raises(EmptySelection, match="alignment rule"):
        select(rows([("one red star", 0, 5)]), Rules())
