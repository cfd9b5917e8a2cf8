"""Sharded training (trainer=fsdp, FSDP2 through Lightning's ModelParallelStrategy): the config composes and refuses
what cannot work, by name; the sharding helpers give the denoiser back whole; on 2 CPU processes (gloo) a run trains,
exports a stock pipeline equal to a DDP run's up to the order of floating-point sums, writes the same checkpoint
format as DDP, and a run killed mid-way resumes to exactly the uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from conftest import make_cfg
from style_tailoring.config import ConfigError
from style_tailoring.models.components import build_components
from style_tailoring.runtime.fsdp import shard_denoiser, shard_units, weightless_copy, whole_copy
from style_tailoring.training.run import build_trainer
from style_tailoring.training.strategies import build_plan
from style_tailoring.training.validate import validate

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FSDP = ["trainer=fsdp", "trainer.accelerator=cpu"]


# -- config ---------------------------------------------------------------------------------------------------------
def test_trainer_fsdp_composes_validates_and_builds_lightnings_fsdp2_strategy(data_dirs, tmp_path):
    from lightning.pytorch.strategies import ModelParallelStrategy

    cfg = make_cfg(data_dirs, tmp_path / "run", *FSDP, "launch.timeout_s=77")
    assert cfg.trainer.strategy == "fsdp" and cfg.trainer.devices == 2
    T = validate(cfg)
    trainer = build_trainer(cfg, tmp_path / "run", build_plan(cfg, T))
    strategy = trainer.strategy
    assert isinstance(strategy, ModelParallelStrategy) and strategy._timeout.total_seconds() == 77
    assert not strategy._save_distributed_checkpoint  # one consolidated file, through SafeCheckpointIO
    assert strategy._data_parallel_size == 2 and strategy._tensor_parallel_size == 1
    # docs/clusters.md's GPU command (not run here: no GPU) composes and validates: 8 GPUs x 2 nodes, bf16
    gpus = make_cfg(data_dirs, tmp_path / "gpus", "trainer=fsdp", "trainer.devices=8", "trainer.num_nodes=2",
                    "trainer.precision=bf16-mixed")
    assert validate(gpus) == T and gpus.trainer.accelerator == "auto"


@pytest.mark.parametrize("override, key, says", [
    ("trainer.devices=1", "trainer.devices", "at least 2 ranks"),
    ("trainer.precision=16-mixed", "trainer.precision", "ModelParallelStrategy"),
    ("model.lora.rank=4", "model.lora.rank", "use trainer=ddp for LoRA"),
    ("ema.enabled=true", "ema.enabled", "whole copy"),
    ("model.train_text_encoder=true", "model.train_text_encoder", "drift apart"),
    ("model.compile=true", "model.compile", "not tested"),
    ("optim.name=adamw8bit", "optim.name", "DTensors"),
    ("model.motion.enabled=true", "model.motion.enabled", "animation models"),
])
def test_trainer_fsdp_refuses_what_it_cannot_train_naming_the_key(data_dirs, tmp_path, override, key, says):
    cfg = make_cfg(data_dirs, tmp_path / "run", *FSDP, override)
    with pytest.raises(ConfigError, match=says) as refused:
        validate(cfg)
    assert refused.value.key == key


def test_lightnings_fsdp1_names_are_refused_for_this_repositorys_fsdp(data_dirs, tmp_path):
    cfg = make_cfg(data_dirs, tmp_path / "run", "trainer=ddp", "trainer.strategy=fsdp_cpu_offload")
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp") as refused:
        validate(cfg)
    assert refused.value.key == "trainer.strategy"


def test_ico_is_refused_under_fsdp(data_dirs, tmp_path):
    cfg = make_cfg(data_dirs, tmp_path / "run", *FSDP, "strategy=styleforge", "strategy.ico.enabled=true",
                   f"data.sources.styleref.dir={data_dirs['style']}", f"data.sources.aux.dir={data_dirs['domain']}")
    with pytest.raises(ConfigError, match="per-image contexts") as refused:
        validate(cfg)
    assert refused.value.key == "strategy.ico.enabled"


# -- the sharding helpers, in one process ---------------------------------------------------------------------------
def test_the_units_are_the_denoisers_blocks_and_a_weightless_copy_holds_no_weights(data_dirs, tmp_path):
    unet = build_components(make_cfg(data_dirs, tmp_path / "run").model, 0).unet
    kinds = {type(m).__name__ for m in shard_units(unet)}
    assert kinds == {"ResnetBlock2D", "BasicTransformerBlock", "CrossAttnUpBlock2D", "UpBlock2D"}
    skeleton = weightless_copy(unet)
    assert all(p.is_meta for p in skeleton.parameters()) and not any(p.is_meta for p in unet.parameters())
    assert [n for n, _ in skeleton.named_parameters()] == [n for n, _ in unet.named_parameters()]


def sd3_transformer():
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                 caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=8)


@pytest.mark.parametrize("family", ["unet", "transformer"])
def test_a_sharded_denoiser_is_gathered_back_whole_and_equal(data_dirs, tmp_path, family):
    """One gloo rank: the same code path as N ranks, the gather and the copy included; the SD3 transformer's units
    are its joint blocks, and its position-embedding buffer comes back too."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    if family == "unet":
        denoiser = build_components(make_cfg(data_dirs, tmp_path / "run").model, 0).unet
    else:
        denoiser = sd3_transformer()
        assert {type(m).__name__ for m in shard_units(denoiser)} == {"JointTransformerBlock"}
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        skeleton = weightless_copy(denoiser)
        assert shard_denoiser(denoiser, init_device_mesh("cpu", (1,))) == len(shard_units(skeleton)) + 1
        assert all(isinstance(p, DTensor) for p in denoiser.parameters())
        whole = whole_copy(skeleton, denoiser)
    finally:
        dist.destroy_process_group()
    after = whole.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert not any(isinstance(t, DTensor) or t.is_meta for t in [*whole.parameters(), *whole.buffers()])


# -- two processes ----------------------------------------------------------------------------------------------------
STEPS = 8


def train(data_dirs, run_dir: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """The CLI on 2 CPU processes: two stages (sequential), a checkpoint every 2 steps; `fault` kills rank 1 at a
    faultpoint (tests/faults/inject.py)."""
    args = ["data=folder", "model=tiny", "strategy=sequential", "eval.enabled=false", "logger=csv",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=2",
            f"trainer.max_steps={STEPS}", "data.batch_size=2", "checkpoint.every_n_steps=2", "checkpoint.keep=-1",
            f"hydra.run.dir={run_dir}", *(f"data.{k}_dir={v}" for k, v in data_dirs.items()), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS / "faults"), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           **({"FAULT": fault, "FAULT_RANK": "1"} if fault else {})}
    head = [sys.executable, "-m", "inject"] if fault else [sys.executable, "-m"]
    proc = subprocess.run([*head, "style_tailoring.train", *args], cwd=run_dir.parent, env=env, capture_output=True,
                          text=True, timeout=600)
    assert fault or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def reference_runs(data_dirs, tmp_path_factory):
    """The same run uninterrupted under FSDP and under DDP (2 processes each), and FSDP's output. The FSDP run also
    evaluates, mid-way and at the end (every rank samples from a whole copy): which must not change its training,
    so the runs it is compared with need not."""
    root = tmp_path_factory.mktemp("fsdp")
    (root / "prompts.txt").write_text("a red circle\na blue square\n")
    proc = train(data_dirs, root / "fsdp", "trainer=fsdp", "eval.enabled=true", f"eval.prompts={root / 'prompts.txt'}",
                 "eval.every_n_steps=4", "eval.seeds_per_prompt=1", "eval.sample.num_inference_steps=2")
    train(data_dirs, root / "ddp", "trainer=ddp")
    return root / "fsdp", root / "ddp", proc.stdout + proc.stderr


def weights(run_dir: Path, part: str = "pipeline/unet") -> dict:
    return load_file(run_dir / part / "diffusion_pytorch_model.safetensors")


def train_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k.startswith("train/")}


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_trains_and_exports_a_stock_pipeline(reference_runs):
    fsdp, _, output = reference_runs
    assert "MEMBER: 2/2" in output
    metrics = json.loads((fsdp / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == STEPS and metrics["eval/num_samples"] == 2
    assert sorted(p.name for p in (fsdp / "samples").iterdir()) == ["final", "step-000004"]
    assert all(metrics[f"memory/{kind}_mb/rank{r}"] > 0 for kind in ("rss_steps", "rss_fit") for r in (0, 1))
    assert (fsdp / "checkpoints" / "last.ckpt").is_file() and (fsdp / "checkpoints" / "step-000004.ckpt").is_file()
    for stage in ("1-alignment", "2-style"):  # each stage's UNet, gathered whole from the shards
        assert weights(fsdp, f"stages/{stage}/unet").keys() == weights(fsdp).keys()
    pipe = StableDiffusionPipeline.from_pretrained(fsdp / "pipeline")
    assert pipe("a red circle", num_inference_steps=2, output_type="pt").images.shape == (1, 3, 32, 32)


# ||FSDP - DDP|| / ||DDP - init|| over the exported UNet: measured 3e-6 to 1.3e-5 (1 to 4 steps; 8 steps here).
# Not 0: FSDP2 puts an autograd node at each unit's boundary, which changes the order in which the gradients of a
# tensor used three times (a down block's output: the mid block's resnet twice and the skip connection) are summed,
# and float addition is not associative; AdamW's step normalises away a gradient's scale, so a last-bit difference
# in a near-zero gradient moves a weight by up to about lr. Everything else (the data each rank sees, its noise, the
# averaged gradient, clipping, AdamW) is the same; a real fault (unsynchronised gradients, a shard not updated,
# other data) moves the weights by a good fraction of the update itself.
TOLERANCE = 1e-3


@pytest.mark.slow
def test_fsdps_export_equals_ddps_up_to_the_order_of_gradient_sums(data_dirs, reference_runs, tmp_path):
    fsdp, ddp, _ = reference_runs
    init = build_components(make_cfg(data_dirs, tmp_path / "x").model, 0).unet.state_dict()
    for part in ("pipeline/unet", "stages/1-alignment/unet"):
        a, b = weights(fsdp, part), weights(ddp, part)
        assert a.keys() == b.keys()
        update = torch.cat([(b[k] - init[k]).flatten() for k in b])
        difference = torch.cat([(a[k] - b[k]).flatten() for k in b])
        assert difference.norm() < TOLERANCE * update.norm(), (part, difference.norm() / update.norm())
    for frozen in ("vae", "text_encoder"):  # not trained, not sharded: the same files' weights
        a, b = (load_file(next((run / "pipeline" / frozen).glob("*.safetensors"))) for run in (fsdp, ddp))
        assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = train_metrics(fsdp), train_metrics(ddp)
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6) for k in a)
    # the same checkpoint format as DDP's: one file, the same model and optimizer keys
    ca, cb = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (fsdp, ddp))
    assert ca["state_dict"].keys() == cb["state_dict"].keys() and ca["global_step"] == cb["global_step"] == STEPS
    sa, sb = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert sa.keys() == sb.keys() and all(sa[i]["exp_avg"].shape == sb[i]["exp_avg"].shape for i in sa)


@pytest.mark.slow
def test_an_fsdp_run_killed_mid_way_resumes_to_exactly_the_uninterrupted_run(data_dirs, reference_runs, tmp_path):
    fsdp, _, _ = reference_runs
    run_dir = tmp_path / "run"
    killed = train(data_dirs, run_dir, "trainer=fsdp",
                   fault="call:style_tailoring.training.module.DiffusionFinetune.training_step:6")  # step 6 of 8
    said = killed.stdout + killed.stderr
    assert killed.returncode != 0 and "rank 1 (pid" in said and "was killed by SIGKILL" in said, said[-3000:]
    assert "resume the run with ckpt_path=last" in said
    assert (run_dir / "checkpoints" / "step-000004.ckpt").is_file() and not (run_dir / "pipeline").exists()
    train(data_dirs, run_dir, "trainer=fsdp", "ckpt_path=last")
    for part in ("pipeline/unet", "stages/1-alignment/unet", "stages/2-style/unet"):
        a, b = weights(fsdp, part), weights(run_dir, part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert train_metrics(run_dir) == train_metrics(fsdp)
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == STEPS
