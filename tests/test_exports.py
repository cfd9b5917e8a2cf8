"""What a run leaves for others to use: a LoRA run's kohya-ss file (stock diffusers loads it to the same model as
the diffusers-format adapters), the model card of every exported pipeline, and wandb's table of the evaluation
samples and per-source timestep histograms in the offline run. One real train CLI run serves all three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from style_tailoring.models.components import build_tiny, make_pipeline
from style_tailoring.models.lora import KOHYA_FILE, LORA_FILE
from style_tailoring.provenance import digest, repository_state

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
PROMPTS = "a red circle\na blue square\n"


@pytest.fixture(scope="module")
def lora_run(data_dirs, tmp_path_factory):
    """LoRA (rank 4, alpha 8: scale 2, which a file that forgets alpha would lose), evaluated at step 2 and at
    the end by a judge with per-sample scores, logged to an offline wandb run."""
    root = tmp_path_factory.mktemp("lora_run")
    (root / "prompts.txt").write_text(PROMPTS)
    run_dir = root / "run"
    args = ["data=folder", "model=tiny", "strategy=style_tailoring", "strategy.t_split=500", "logger=wandb",
            "model.lora.rank=4", "model.lora.alpha=8", "optim.lr=1e-2", "trainer.max_steps=4",
            "trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=4",
            "eval.enabled=true", f"eval.prompts={root / 'prompts.txt'}", "eval.seeds_per_prompt=2",
            "eval.sample.num_inference_steps=2", "eval.fid.enabled=false", "eval.every_n_steps=2",
            "eval.judges={_target_: conftest.MeanJudge}", f"hydra.run.dir={run_dir}",
            *(f"data.{k}_dir={v}" for k, v in data_dirs.items())]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.train", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return run_dir


def images(pipe) -> torch.Tensor:
    out = pipe(["a red circle", "a blue square"], num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    return torch.from_numpy(out)


def test_stock_diffusers_loads_the_kohya_file_to_the_same_model_as_the_diffusers_adapter(lora_run, data_dirs,
                                                                                         tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    kohya = load_file(lora_run / "lora" / KOHYA_FILE)
    assert kohya and all(k.startswith("lora_unet_") for k in kohya)
    assert {k.rsplit(".", 2)[-2] if k.endswith(".weight") else "alpha" for k in kohya} == \
        {"lora_down", "lora_up", "alpha"}
    assert all(float(v) == 8.0 for k, v in kohya.items() if k.endswith(".alpha"))
    base = tmp_path / "base"  # the run's base model: model=tiny, seed 0
    make_pipeline(build_tiny(make_cfg(data_dirs, tmp_path / "x").model, seed=0)).save_pretrained(base)
    plain = images(StableDiffusionPipeline.from_pretrained(base))
    diffusers_format = StableDiffusionPipeline.from_pretrained(base)
    diffusers_format.load_lora_weights(lora_run / "lora", weight_name=LORA_FILE)
    kohya_format = StableDiffusionPipeline.from_pretrained(base)
    kohya_format.load_lora_weights(lora_run / "lora" / KOHYA_FILE)
    exported = images(StableDiffusionPipeline.from_pretrained(lora_run / "pipeline"))  # LoRA fused
    a, b = images(diffusers_format), images(kohya_format)
    assert (a - plain).abs().max() > 1e-3  # the adapters change the model
    assert (a - b).abs().max() < 1e-5  # the two files are one model
    assert (a - exported).abs().max() < 1e-3  # at the scale it was trained at (alpha 8 / rank 4)
    # every stage keeps both files too
    stages = list((lora_run / "stages").iterdir())
    assert stages and all((stage / "lora" / KOHYA_FILE).is_file() for stage in stages)


def test_the_model_card_says_what_made_the_model_and_how_it_scored(lora_run):
    from huggingface_hub import ModelCard

    path = lora_run / "pipeline" / "README.md"
    card = ModelCard.load(path)
    metrics = json.loads((lora_run / "metrics.json").read_text())
    ours = card.data.style_tailoring
    assert ours["strategy"] == "style_tailoring" and ours["seed"] == 0 and ours["steps"] == 4
    assert ours["commit"] == repository_state()["commit"] and ours["status"] == "completed"
    assert card.data.library_name == "diffusers" and "lora" in card.data.tags
    scored = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert scored["brightness"] == pytest.approx(metrics["eval/brightness"])
    text = card.text
    assert "strategy.t_split=500" in text and "model.lora.alpha=8" in text  # the command, Hydra's overrides
    assert f"hydra.run.dir={lora_run}" in text
    assert "StableDiffusionPipeline.from_pretrained" in text and KOHYA_FILE in text
    assert "| style |" in text and "| alignment |" in text and "| 16 |" in text  # sources and their sizes
    # the card is rewritten after the evaluation and changes no digest of the weights
    assert metrics["provenance"]["weights"]["pipeline"] == digest(lora_run / "pipeline")
    assert metrics["eval/provenance"]["weights"]["pipeline"] == digest(lora_run / "pipeline")
    assert not list((lora_run / "pipeline").glob(".README.md*"))  # written atomically: no temp file left


def offline_records(run_dir: Path) -> list[dict]:
    """The offline run's transaction log (RUN/wandb/offline-run-*/run-*.wandb), read by wandb's own reader."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    wandb = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb), "leet", "inspect", "--json", str(log)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_the_offline_wandb_run_holds_the_samples_table_and_timestep_histograms(lora_run):
    records = offline_records(lora_run)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    for source in ("alignment", "style"):  # t_split 500: style draws [0, 500), alignment [500, 1000)
        histograms = [h for h in history if h.get(f"train/{source}/timesteps._type") == "histogram"]
        assert len(histograms) == 2, source  # logging steps 2 and 4
        bins = histograms[0][f"train/{source}/timesteps.bins"]
        assert (bins[0] >= 500) if source == "alignment" else (bins[-1] < 500)
        assert {h["trainer/global_step"] for h in histograms} == {2, 4}
    tables = [h for h in history if h.get("eval/samples_table._type") == "table-file"]
    assert len(tables) == 2  # the evaluation at step 2 and the final one
    (files,) = lora_run.glob("wandb/offline-run-*/files")
    table = json.loads((files / tables[-1]["eval/samples_table.path"]).read_text())
    assert table["columns"] == ["file_name", "prompt", "seed", "image", "brightness"] and len(table["data"]) == 4
    scores = {(row["prompt"], row["seed"]): row["brightness"]
              for row in map(json.loads, (lora_run / "samples" / "final" / "judge_scores.jsonl").open())}
    assert {(r[1], r[2]): r[4] for r in table["data"]} == pytest.approx(scores)
    # the table's images are staged inside the run directory, so the offline run is whole wherever it is synced
    manifests = [r["artifact"]["manifest"]["contents"] for r in records if r["type"] == "artifact"]
    staged = [Path(entry["local_path"]) for manifest in manifests for entry in manifest
              if entry["path"].startswith("media/images/")]
    assert len(staged) >= 8 and all(p.is_file() and lora_run / "wandb" in p.parents for p in staged)
