"""The sampler hook: samplers call the stock pipeline (plain is its call as it is) and may change the pipeline while
it denoises through diffusers' callback_on_step_end."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import make_cfg
from style_tailoring.models.components import Components, build_tiny, make_pipeline
from style_tailoring.sampling.generate import generate, make_jobs
from style_tailoring.sampling.samplers import PlainSampler, Sampler


class SwapUNetAfter(Sampler):
    """Test sampler: the denoising steps after `after` run with `late` instead of the pipeline's UNet."""

    name = "swap_after"

    def __init__(self, late, after: int):
        self.late, self.after, self.calls = late, after, []

    def begin(self, pipe, kwargs):
        self.early = pipe.unet
        return kwargs

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


# -- timestep_split and DCI --------------------------------------------------------------------------------------
from style_tailoring.config import ConfigError  # noqa: E402
from style_tailoring.sampling.samplers import DCISampler, TimestepSplitSampler  # noqa: E402


def images_of(pipe, sampler=None, jobs=JOBS):
    if sampler is None:
        return np.stack(generate(pipe, jobs, **ARGS))
    sampler.prepare(pipe)
    try:
        return np.stack(generate(pipe, jobs, sampler=sampler, **ARGS))
    finally:
        sampler.release(pipe)


@pytest.fixture(scope="module")
def late_unet(pipe, tmp_path_factory):
    """A second UNet on disk (the early one, scaled): what RUN/stages/2-style/unet is to a sequential run."""
    late = copy.deepcopy(pipe.unet)
    with torch.no_grad():
        for p in late.parameters():
            p.mul_(0.9)
    path = tmp_path_factory.mktemp("late") / "unet"
    late.save_pretrained(path)
    return path, late


def test_timestep_split_identities(pipe, late_unet, tmp_path):
    plain = images_of(pipe)
    pipe.unet.save_pretrained(tmp_path / "same")
    same = images_of(pipe, TimestepSplitSampler(t_switch=500, late_unet=str(tmp_path / "same")))
    assert np.array_equal(same, plain)  # late model = early model: exactly plain sampling
    path, late = late_unet
    assert np.array_equal(images_of(pipe, TimestepSplitSampler(t_switch=0, late_unet=str(path))), plain)
    early = pipe.unet
    pipe.unet = late
    late_alone = images_of(pipe)
    pipe.unet = early
    above_first = images_of(pipe, TimestepSplitSampler(t_switch=1000, late_unet=str(path)))
    assert np.array_equal(above_first, late_alone)  # t_switch above the first step: the late model alone
    split = images_of(pipe, TimestepSplitSampler(t_switch=500, late_unet=str(path)))
    assert not np.array_equal(split, plain) and not np.array_equal(split, late_alone)
    assert pipe.unet is early


def test_timestep_split_switches_a_lora_adapter(pipe, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from style_tailoring.models.components import make_pipeline

    unet = copy.deepcopy(pipe.unet)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    fresh = make_pipeline(Components(unet=copy.deepcopy(pipe.unet), vae=pipe.vae, text_encoder=pipe.text_encoder,
                                     tokenizer=pipe.tokenizer, scheduler=pipe.scheduler))
    fresh.set_progress_bar_config(disable=True)
    plain = images_of(fresh)
    off = images_of(fresh, TimestepSplitSampler(t_switch=0, late_unet=str(tmp_path / "lora")))
    assert np.array_equal(off, plain)  # loaded, but not switched on: the base model
    on = images_of(fresh, TimestepSplitSampler(t_switch=1000, late_unet=str(tmp_path / "lora")))
    assert np.array_equal(images_of(fresh), plain)  # released: the adapter is gone again
    fresh.load_lora_weights(tmp_path / "lora")
    with_lora = images_of(fresh)
    assert np.array_equal(on, with_lora) and not np.array_equal(on, plain)


def test_sampler_settings_are_checked_when_built(tmp_path):
    with pytest.raises(ConfigError, match="eval.sampler.late_unet"):
        TimestepSplitSampler(t_switch=500, late_unet=str(tmp_path))
    with pytest.raises(ConfigError, match="eval.sampler.t_switch"):
        TimestepSplitSampler(t_switch=-1, late_unet=str(tmp_path))
    with pytest.raises(ConfigError, match="eval.sampler.concept"):
        DCISampler(concept="")
    with pytest.raises(ConfigError, match="eval.sampler.layers"):
        DCISampler(concept="red", layers="sideways")
    assert DCISampler(concept="red").describe() == {"name": "dci", "concept": "red", "t_end": 700, "strength": 1.0,
                                                     "layers": "all"}


DCI_JOBS = make_jobs(["a red circle, sticker", "a blue square, sticker"], seeds_per_prompt=2)


def test_dci_identities_and_effect(pipe):
    fresh = make_pipeline(Components(unet=copy.deepcopy(pipe.unet), vae=pipe.vae, text_encoder=pipe.text_encoder,
                                     tokenizer=pipe.tokenizer, scheduler=pipe.scheduler))
    fresh.set_progress_bar_config(disable=True)
    plain = images_of(fresh, jobs=DCI_JOBS)
    # t_end above the first timestep: no integration step, no auxiliary branch: exactly plain sampling.
    assert np.array_equal(images_of(fresh, DCISampler(concept="sticker", t_end=1000), DCI_JOBS), plain)
    # strength 0: the auxiliary branch runs but is not blended in (the batch is larger: float noise only).
    zero = images_of(fresh, DCISampler(concept="sticker", strength=0.0), DCI_JOBS)
    assert np.abs(zero.astype(int) - plain.astype(int)).max() <= 2
    full = images_of(fresh, DCISampler(concept="sticker", t_end=500), DCI_JOBS)
    change = np.abs(full.astype(int) - plain.astype(int))
    assert full.shape == plain.shape and change.mean() > 5 * np.abs(zero.astype(int) - plain.astype(int)).mean()
    down = images_of(fresh, DCISampler(concept="sticker", t_end=500, layers="down"), DCI_JOBS)
    assert not np.array_equal(down, full)
    with pytest.raises(ValueError, match="is not in the prompt"):
        images_of(fresh, DCISampler(concept="holographic"), DCI_JOBS)


def test_dci_processor_blends_the_conditional_pair_by_attention_on_the_concept():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from style_tailoring.sampling.samplers import DCICrossAttnProcessor, DCIState

    torch.manual_seed(0)
    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8).eval()
    b, pixels, tokens = 2, 5, 6
    hidden = torch.randn(4 * b, pixels, 16)  # [uncond concept, uncond aux, cond concept, cond aux]
    context = torch.randn(4 * b, tokens, 8)
    state = DCIState()
    state.active, state.batch, state.guidance, state.strength = True, b, True, 0.7
    state.concept_mask = torch.tensor([[0, 0, 1, 0, 0, 0]] * b).float()
    state.context_mask = torch.tensor([[0, 1, 0, 1, 0, 0]] * b).float()
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, hidden, context)
        blended = DCICrossAttnProcessor(AttnProcessor2_0(), state)(attn, hidden, context)
        q = attn.head_to_batch_dim(attn.to_q(hidden[2 * b:3 * b]))
        k = attn.head_to_batch_dim(attn.to_k(context[2 * b:3 * b]))
        probs = attn.get_attention_scores(q, k).view(b, 2, pixels, tokens).mean(1)
    w = (probs[..., 2] / (probs[..., 2] + probs[..., 1] + probs[..., 3])).unsqueeze(-1)
    expected = plain[2 * b:3 * b] + 0.7 * (1 - w) * (plain[3 * b:] - plain[2 * b:3 * b])
    assert torch.allclose(blended[2 * b:3 * b], expected, atol=1e-5)
    assert torch.equal(blended[: 2 * b], plain[: 2 * b]) and torch.equal(blended[3 * b:], plain[3 * b:])
    state.active = False  # outside the early steps: the wrapped processor alone
    assert torch.equal(DCICrossAttnProcessor(AttnProcessor2_0(), state)(attn, hidden, context), plain)


def test_timestep_split_sdxl_handoff_uses_denoising_end_and_start(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from test_train import tiny_sdxl_pipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_pipeline(tmp_path / "sdxl"))
    pipe.set_progress_bar_config(disable=True)
    args = dict(ARGS, batch_size=4)
    plain = np.stack(generate(pipe, JOBS, **args))

    def handoff(late_dir):
        sampler = TimestepSplitSampler(t_switch=500, late_unet=str(late_dir), handoff="sdxl")
        sampler.prepare(pipe)
        try:
            return np.stack(generate(pipe, JOBS, sampler=sampler, **args))
        finally:
            sampler.release(pipe)

    same = handoff(tmp_path / "sdxl" / "unet")  # the same UNet on both sides of the hand-off: plain sampling
    assert np.abs(same.astype(int) - plain.astype(int)).max() <= 2
    late = copy.deepcopy(pipe.unet)
    with torch.no_grad():  # a late model that predicts the opposite noise: the hand-off must show
        late.conv_out.weight.neg_()
        late.conv_out.bias.neg_()
    late.save_pretrained(tmp_path / "late")
    assert np.abs(handoff(tmp_path / "late").astype(int) - plain.astype(int)).max() > 2
    with pytest.raises(ConfigError, match="eval.sampler.handoff"):
        TimestepSplitSampler(t_switch=500, late_unet=str(tmp_path / "late"), handoff="sdxl").prepare(
            make_pipeline(build_tiny(make_cfg({}, tmp_path / "x").model)))
