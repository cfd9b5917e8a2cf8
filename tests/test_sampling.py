"""The sampler hook: samplers call the stock pipeline (plain is its call as it is) and may change the pipeline while
it denoises through diffusers' callback_on_step_end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import make_cfg
from style_tailoring.models.components import build_tiny, make_pipeline
from style_tailoring.sampling.generate import generate, make_jobs
from style_tailoring.sampling.samplers import PlainSampler, Sampler


class SwapUNetAfter(Sampler):
    """Test sampler: the denoising steps after `after` run with `late` instead of the pipeline's UNet."""

    name = "swap_after"

    def __init__(self, late, after: int):
        self.late, self.after, self.calls = late, after, []

    def begin(self, pipe):
        self.early = pipe.unet

    def on_step_end(self, pipe, step, timestep, callback_kwargs):
        self.calls.append(int(timestep))
        if step + 1 == self.after:
            pipe.unet = self.late
        return callback_kwargs

    def end(self, pipe):
        pipe.unet = self.early


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    comps = build_tiny(make_cfg({}, tmp_path_factory.mktemp("x") / "run").model, seed=0)
    pipe = make_pipeline(comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


JOBS = make_jobs(["a red circle", "a blue square"], seeds_per_prompt=2)
ARGS = dict(suffix="", resolution=32, num_inference_steps=4, guidance_scale=3.0, batch_size=3)


def direct(pipe, jobs):
    """What evaluation called before samplers existed: the pipeline itself, batch by batch."""
    images = []
    for start in range(0, len(jobs), 3):
        batch = jobs[start:start + 3]
        out = pipe(prompt=[j.prompt for j in batch], generator=[torch.Generator().manual_seed(j.seed) for j in batch],
                   num_inference_steps=4, guidance_scale=3.0, height=32, width=32, output_type="np")
        images.extend((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return images


def test_plain_sampler_is_the_pipeline_call_bit_for_bit(pipe):
    ours = generate(pipe, JOBS, sampler=PlainSampler(), **ARGS)
    assert all(np.array_equal(a, b) for a, b in zip(ours, direct(pipe, JOBS)))
    assert PlainSampler().describe() == {"name": "plain"}


def test_a_sampler_swaps_unets_between_steps_and_restores_the_pipeline(pipe):
    plain = generate(pipe, JOBS, **ARGS)
    same = SwapUNetAfter(pipe.unet, after=2)
    assert all(np.array_equal(a, b) for a, b in zip(generate(pipe, JOBS, sampler=same, **ARGS), plain))
    # called after each of the 4 steps of each of the 2 batches, at decreasing timesteps
    assert same.calls[:4] == same.calls[4:] == sorted(set(same.calls), reverse=True) and len(same.calls) == 8
    other = copy.deepcopy(pipe.unet)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    late = generate(pipe, JOBS, sampler=SwapUNetAfter(other, after=2), **ARGS)
    assert not any(np.array_equal(a, b) for a, b in zip(late, plain))
    never = generate(pipe, JOBS, sampler=SwapUNetAfter(other, after=99), **ARGS)  # no switch: the early UNet alone
    assert all(np.array_equal(a, b) for a, b in zip(never, plain))
    assert pipe.unet is same.early  # restored after every call
