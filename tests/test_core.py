"""The core opened for more methods: named sources with captions and weights, exact composition, chained runs
(`model.init_unet`), caption dropout, the step progress bar, and everything checked before any work."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cfg, write_folder
from style_tailoring.config import ConfigError
from style_tailoring.training.run import EvaluationFailed, run

PROMPTS = "a red circle\na blue square\n"


def unet_weights(path):
    return load_file(path / "diffusion_pytorch_model.safetensors")


def four_source_plan(weight_b: float = 0.5, weight_d: float = 2.0) -> str:
    routes = (f"{{source: a, share: 0.25}}, {{source: b, share: 0.25, weight: {weight_b}}}, "
              f"{{source: c, share: 0.25, t_max: 500}}, {{source: d, share: 0.25, t_min: 500, weight: {weight_d}}}")
    return f"strategy.plan=[{{name: four, exact: true, routes: [{routes}]}}]"


@pytest.fixture(scope="module")
def four_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("four")
    return {name: write_folder(root / name, 8, seed, sticker=seed % 2 == 0) for seed, name in enumerate("abcd")}


def test_four_named_sources_with_weights_train_and_log_each(four_dirs, tmp_path):
    sources = [f"+data.sources.{name}.dir={path}" for name, path in four_dirs.items()]
    run_dir = tmp_path / "run"
    metrics = run(make_cfg({}, run_dir, "strategy=custom", four_source_plan(), *sources,
                           "+data.sources.b.caption='{text}, sks style'", "data.batch_size=8",
                           "trainer.log_every_n_steps=1"))
    for name in "abcd":  # exact composition: 2 samples of each source in every batch of 8
        assert metrics[f"train/{name}/n"] == 2 and metrics[f"train/{name}/loss"] > 0
    assert metrics["train/c/t_max"] < 500 <= metrics["train/d/t_min"]
    routes = metrics["plan"][0]["routes"]
    assert [r["weight"] for r in routes] == [1.0, 0.5, 1.0, 2.0] and metrics["plan"][0]["exact"]
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert all(f"train/{name}/loss" in header for name in "abcd")
    # The loss is the route-weighted mean of the per-source losses (equal counts per source).
    expected = sum(w * metrics[f"train/{n}/loss"] for n, w in zip("abcd", [1.0, 0.5, 1.0, 2.0])) / 4
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-4)


def test_a_route_without_a_directory_names_its_key(four_dirs, tmp_path):
    sources = [f"+data.sources.{name}.dir={path}" for name, path in four_dirs.items() if name != "c"]
    cfg = make_cfg({}, tmp_path / "run", "strategy=custom", four_source_plan(), *sources)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == "data.sources.c.dir" and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("override", "key"), [
    ("+data.sources.a.caption='{name} style'", "data.sources.a.caption"),
    ("data.caption_dropout=1.0", "data.caption_dropout"),
    ("data.background=not-a-colour", "data.background"),
    ("model.init_unet=/nowhere", "model.init_unet"),
    ("data.sources.style.dir=/y", "data.sources.style.dir"),  # data_dirs set data.style_dir to another folder
])
def test_new_keys_are_checked_before_any_work(data_dirs, tmp_path, override, key):
    cfg = make_cfg(data_dirs, tmp_path / "run", "+data.sources.a.dir=/a", override)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == key and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("overrides", "key"), [
    ([], "eval.prompts"),  # data=folder without data.eval_prompts: found before training, not after
    (["eval.prompts={prompts}", "eval.seeds_per_prompt=0"], "eval.seeds_per_prompt"),
    (["eval.prompts={prompts}", "eval.sample.scheduler=NoSuchScheduler"], "eval.sample.scheduler"),
    (["eval.prompts={prompts}", "eval.fid.feature_extractor=resnet-9000"], "eval.fid.feature_extractor"),
    (["eval.prompts={prompts}", "eval.sample.num_inference_steps=0"], "eval.sample.num_inference_steps"),
    (["eval.prompts={prompts}", "eval.sampler=nonexistent"], "eval.sampler"),
    (["eval.prompts={prompts}", "+eval.sampler.strength=2"], "eval.sampler.strength"),  # plain takes no settings
])
def test_eval_keys_fail_before_training(data_dirs, tmp_path, overrides, key):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    overrides = [o.format(prompts=prompts) for o in overrides]
    with pytest.raises(ConfigError) as err:
        run(make_cfg(data_dirs, tmp_path / "run", "eval.enabled=true", "eval.prompts=null", *overrides))
    assert err.value.key == key
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "pipeline").exists()


def test_a_failed_evaluation_after_training_says_trained(data_dirs, tmp_path):
    from style_tailoring.collect import collect

    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    run_dir = tmp_path / "sweep" / "run"
    with pytest.raises(EvaluationFailed, match="judge exploded"):
        run(make_cfg(data_dirs, run_dir, "eval.enabled=true", f"eval.prompts={prompts}", "eval.seeds_per_prompt=2",
                     "eval.sample.num_inference_steps=2", "eval.fid.enabled=false",
                     "eval.judges={_target_: conftest.FailingJudge}"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "trained, evaluation failed" and "judge exploded" in metrics["error"]
    assert metrics["steps"] == 4 and (run_dir / "pipeline" / "model_index.json").is_file()
    assert metrics["cpu_seconds"] > 0  # the budget is recorded with the training, before the evaluation
    row = collect(tmp_path / "sweep").iloc[0]
    assert row["status"] == "trained, evaluation failed" and row["steps"] == 4


def test_init_unet_chains_runs_from_a_pipeline_a_stage_or_lora(data_dirs, tmp_path):
    first = tmp_path / "first"
    run(make_cfg(data_dirs, first, "strategy=sequential", "model.lora.rank=4", "optim.lr=1e-2"))
    trained = unet_weights(first / "pipeline" / "unet")
    # Prompt engineering trains nothing: its exported UNet is exactly the one it started from.
    chained = tmp_path / "chained"
    metrics = run(make_cfg(data_dirs, chained, "strategy=prompt_engineering", f"model.init_unet={first / 'pipeline'}"))
    assert metrics["init_unet"] == str(first / "pipeline")
    assert all(torch.equal(trained[k], v) for k, v in unet_weights(chained / "pipeline" / "unet").items())
    # From a stage's LoRA adapters (fused into the base UNet): the first stage's weights, not the final ones.
    staged = tmp_path / "staged"
    run(make_cfg(data_dirs, staged, "strategy=prompt_engineering",
                 f"model.init_unet={first / 'stages' / '1-alignment' / 'lora'}"))
    stage_one = unet_weights(staged / "pipeline" / "unet")
    assert any(not torch.equal(trained[k], stage_one[k]) for k in trained)
    # And training continues from there: a second finetune starts at the first one's weights.
    second = tmp_path / "second"
    run(make_cfg(data_dirs, second, "strategy=base", "trainer.max_steps=1", "optim.lr=1e-9",
                 f"model.init_unet={first / 'pipeline'}"))
    after = unet_weights(second / "pipeline" / "unet")
    assert max((after[k] - trained[k]).abs().max().item() for k in trained) < 1e-5


def test_init_unet_from_another_model_is_refused(data_dirs, tmp_path):
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, norm_num_groups=8,
                         cross_attention_dim=48, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigError, match="cross_attention_dim=48"):
        run(make_cfg(data_dirs, tmp_path / "run", "strategy=prompt_engineering",
                     f"model.init_unet={tmp_path / 'other'}"))


def test_dropped_captions_condition_on_the_empty_prompt_also_from_the_text_cache(data_dirs, tmp_path):
    from style_tailoring.models.components import build_tiny, encode_prompts
    from style_tailoring.training.module import DiffusionFinetune
    from style_tailoring.training.strategies import build_plan

    cfg = make_cfg(data_dirs, tmp_path / "run", "data.caption_dropout=0.5")
    comps = build_tiny(cfg.model)
    module = DiffusionFinetune(comps, build_plan(cfg, 1000), cfg, cached_latents=True, cached_text=True)
    real = encode_prompts(comps, ["a red circle"] * 3, "cpu", 32)["encoder_hidden_states"]
    empty = encode_prompts(comps, [""], "cpu", 32)["encoder_hidden_states"][0]
    batch = {"encoder_hidden_states": real.clone(), "text": ["", "a red circle", ""],
             "caption_dropped": torch.tensor([True, False, True])}
    cond = module.conditioning(batch)["encoder_hidden_states"]
    assert torch.equal(cond[0], empty) and torch.equal(cond[2], empty) and torch.equal(cond[1], real[1])
    # Uncached: the batch's text is already "", so the text encoder sees the empty prompt itself.
    uncached = DiffusionFinetune(comps, build_plan(cfg, 1000), cfg)
    cond = uncached.conditioning({"text": ["", "a red circle"], "caption_dropped": torch.tensor([True, False])})
    assert torch.allclose(cond["encoder_hidden_states"][0], empty)


def test_caption_dropout_trains_and_resumes_exactly(data_dirs, tmp_path):
    opts = ["data.caption_dropout=0.3", "checkpoint.every_n_steps=2", "checkpoint.keep=-1"]
    run(make_cfg(data_dirs, tmp_path / "full", *opts))
    run(make_cfg(data_dirs, tmp_path / "resumed", *opts,
                 f"ckpt_path={tmp_path / 'full' / 'checkpoints' / 'step-000002.ckpt'}"))
    a = unet_weights(tmp_path / "full" / "pipeline" / "unet")
    b = unet_weights(tmp_path / "resumed" / "pipeline" / "unet")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_progress_bar_counts_steps_and_names_the_stage(data_dirs, tmp_path, capsys):
    run(make_cfg(data_dirs, tmp_path / "run", "strategy=sequential", "trainer.enable_progress_bar=true"))
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Epoch 0/-2" not in text and "Epoch" not in text
    assert "stage 2/2 style" in text and "4/4" in text


def test_lora_checkpoints_hold_what_trains_and_resume_exactly(data_dirs, tmp_path):
    opts = ["model.lora.rank=4", "optim.lr=1e-2", "checkpoint.every_n_steps=2", "checkpoint.keep=-1",
            "ema.enabled=true", "ema.decay=0.5"]
    run(make_cfg(data_dirs, tmp_path / "full", *opts))
    checkpoint = torch.load(tmp_path / "full" / "checkpoints" / "step-000002.ckpt", weights_only=True)
    keys = list(checkpoint["state_dict"])
    assert keys and all("lora" in k for k in keys)  # adapters only: no base UNet, VAE or text encoder tensors
    assert len(checkpoint["ema"]["shadow_params"]) == len(keys)
    run(make_cfg(data_dirs, tmp_path / "resumed", *opts,
                 f"ckpt_path={tmp_path / 'full' / 'checkpoints' / 'step-000002.ckpt'}"))
    a = load_file(tmp_path / "full" / "lora" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "resumed" / "lora" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_prompt_engineering_samples_on_the_configured_accelerator(data_dirs, tmp_path, monkeypatch):
    from style_tailoring.runtime.launch import sampling_device

    assert sampling_device({"accelerator": "cpu"}).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert sampling_device({"accelerator": "gpu"}) == torch.device("cuda", 0)
    assert sampling_device({"accelerator": "cpu"}).type == "cpu"
    # A run that trains nothing moves its pipeline to that device (here, with no GPU behind it, that fails).
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS)
    cfg = make_cfg(data_dirs, tmp_path / "run", "strategy=prompt_engineering", "trainer.accelerator=gpu",
                   "eval.enabled=true", f"eval.prompts={prompts}", "eval.fid.enabled=false")
    with pytest.raises(EvaluationFailed) as err:
        run(cfg)
    assert "cuda" in repr(err.value.__cause__).lower() or "nvidia" in repr(err.value.__cause__).lower()
