"""The commands beside training, killed and run again: the alpha decoder's training (minutes, no checkpoints: it
starts over, and must end the same and never leave half a decoder) and the standalone evaluation with a sampler
(its numbers the same as an uninterrupted one's)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from faultlib import killed, record, run_cli, train_args
from test_alpha import rgba_folder

pytestmark = pytest.mark.faults_full


@pytest.fixture(scope="module")
def tiny_run(data_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_run")
    run_cli("style_tailoring.train", *train_args(data_dirs, root / "run"), cwd=root)
    return root / "run"


@pytest.mark.parametrize("fault, label", [
    ("call:torch.optim.AdamW.step:3", "SIGKILL mid-training (step 3 of 4)"),
    ("replace:decoder:1", "SIGKILL while writing the decoder"),
])
def test_alpha_decoder_training_killed_starts_over_to_the_same_decoder(fault, label, tiny_run, tmp_path):
    data = rgba_folder(tmp_path / "rgba", 8)
    args = ["action=train", f"pipeline={tiny_run / 'pipeline'}", f"data_dirs={data}", f"out={tmp_path / 'decoder'}",
            "steps=4", "batch_size=4", "resolution=32"]
    run_cli("style_tailoring.alpha", *[a if a != f"out={tmp_path / 'decoder'}" else f"out={tmp_path / 'reference'}"
                                       for a in args], cwd=tmp_path)
    first = run_cli("style_tailoring.alpha", *args, cwd=tmp_path, check=False, fault=fault)
    assert killed(first) and not (tmp_path / "decoder").exists()  # no half decoder to attach
    run_cli("style_tailoring.alpha", *args, cwd=tmp_path)
    weights = [load_file(d / "diffusion_pytorch_model.safetensors") for d in (tmp_path / "reference",
                                                                                 tmp_path / "decoder")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    record("SIGKILL, then run again", f"alpha decoder training: {label}", "survived")


def test_an_evaluation_with_a_sampler_killed_mid_sampling_gives_the_same_numbers_again(tiny_run, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square sticker\na blue circle\n")
    common = [f"pipeline={tiny_run / 'pipeline'}", f"eval.prompts={prompts}", "eval.seeds_per_prompt=2",
              "eval.sample.num_inference_steps=4", "eval.sample.batch_size=1", "eval.fid.enabled=false",
              "eval/sampler=timestep_split", "eval.sampler.t_switch=500",
              f"eval.sampler.late_unet={tiny_run / 'stages' / '1-alignment' / 'unet'}"]
    run_cli("style_tailoring.evaluate", *common, f"hydra.run.dir={tmp_path / 'reference'}", cwd=tmp_path)
    first = run_cli("style_tailoring.evaluate", *common, f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path,
                    check=False, fault="call:PIL.Image.Image.save:3")
    assert killed(first)
    run_cli("style_tailoring.evaluate", *common, f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    numbers = [{k: v for k, v in json.loads((tmp_path / d / "metrics.json").read_text()).items()
                if k.startswith("eval/") and isinstance(v, (int, float))} for d in ("reference", "eval")]
    assert numbers[0] and numbers[0] == numbers[1]
    record("SIGKILL, then run again", "standalone evaluation with a sampler, killed mid-sampling", "survived")
