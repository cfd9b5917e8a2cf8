"""Ablation machinery: experiment configs, the SLURM launcher config, a sweep through the real CLI, the table that
`collect` makes of it (broken runs included) and the notebook on that table.

The unit tests at the top are fast; the end-to-end ones (subprocesses, a Jupyter kernel) are marked slow one by one
rather than with a module-wide `pytestmark`, so `-m "not slow"` still runs the fast ones.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from nbclient import NotebookClient

from style_tailoring.analysis import (
    improvement_over,
    matched,
    paired_differences,
    pareto_front,
    run_label,
    sample_bootstrap,
    seed_summary,
    value_at,
)
from style_tailoring.collect import collect, collect_wandb
from style_tailoring.config import to_run_config
from style_tailoring.training.validate import validate
from test_cli import assert_help_and_unknown_key, cli, data_args

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
JUDGES = REPO / "assets" / "sticker_world" / "judges"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_pareto_front_keeps_undominated_points():
    table = pd.DataFrame({"x": [0.1, 0.5, 0.4, 0.9, 0.3, None], "y": [0.9, 0.6, 0.5, 0.2, 0.95, 1.0]})
    assert pareto_front(table, "x", "y").index.tolist() == [4, 1, 3]


def test_improvement_over_prompt_engineering_is_signed_and_skips_a_zero_baseline():
    summary = pd.DataFrame({"eval/alignment": [0.5, 0.6], "eval/fid": [2.0, 1.5], "eval/style_score": [1e-6, 0.3]},
                           index=["prompt_engineering", "style_tailoring t_split=500"])
    change = improvement_over(summary, "prompt_engineering").loc["style_tailoring t_split=500"]
    assert change["eval/alignment"] == pytest.approx(20.0)
    assert change["eval/fid"] == pytest.approx(25.0)  # lower is better: a drop is an improvement
    assert pd.isna(change["eval/style_score"])  # a ratio to ~0 means nothing


def test_paired_differences_use_the_seed_as_the_unit():
    table = pd.DataFrame({"label": ["st"] * 3 + ["seq"] * 3 + ["pe"], "seed": [0, 1, 2, 0, 1, 2, None],
                          "a": [0.9, 0.8, 0.7, 0.8, 0.7, 0.6, 0.5]})
    diff = paired_differences(table[table["label"] != "pe"], ["label"], {"label": "seq"}, ["a"])
    # every seed differs by exactly 0.1: the paired interval is 0, an unpaired one would not be
    assert diff.loc["st", "a"] == pytest.approx(0.1) and diff.loc["st", "a/ci95"] == pytest.approx(0, abs=1e-12)
    assert diff.loc["st", "n"] == 3 and "seq" not in diff.index
    # a baseline without seeds (prompt engineering trains nothing) is subtracted from every row
    vs_pe = paired_differences(table, ["label"], {"label": "pe"}, ["a"])
    assert vs_pe.loc["seq", "a"] == pytest.approx(0.2) and vs_pe.loc["seq", "a/ci95"] > 0
    spread = seed_summary(table[table["label"] == "st"], ["label"], ["a"])
    assert spread.loc["st", "a/ci95"] == pytest.approx(0.1 / 3**0.5 * 4.303, rel=1e-3)  # t with 2 d.o.f.
    with pytest.raises(ValueError, match="no baseline rows"):
        paired_differences(table, ["label"], {"label": "nope"}, ["a"])


def test_values_at_matched_style_interpolate_each_runs_own_curve():
    curve = pd.DataFrame({"x": [0.1, 0.3, 0.5], "y": [0.9, 0.7, 0.4]})
    assert value_at(curve, "x", "y", 0.4) == pytest.approx(0.55) and pd.isna(value_at(curve, "x", "y", 0.6))
    sweep = pd.DataFrame({"label": ["st"] * 4, "seed": [0, 0, 1, 1], "x": [0.1, 0.5, 0.2, 0.6],
                          "y": [0.9, 0.5, 0.8, 0.4]})
    at = matched(sweep, ["label"], "x", "y", 0.3).set_index("seed")
    assert at.loc[0, "y"] == pytest.approx(0.7) and at.loc[1, "y"] == pytest.approx(0.7)


def test_sample_bootstrap_shrinks_with_more_samples_and_is_zero_without_spread():
    rng = __import__("numpy").random.default_rng(0)
    def scores(k):
        return pd.DataFrame({"prompt": [p for p in range(8) for _ in range(k)],
                             "alignment": rng.integers(0, 2, 8 * k).astype(float)})
    few, many = sample_bootstrap([scores(4)], "alignment", n=400), sample_bootstrap([scores(64)], "alignment", n=400)
    assert 0 < many < few
    flat = pd.DataFrame({"prompt": [0, 0, 1, 1], "alignment": [1.0, 1.0, 1.0, 1.0]})
    assert sample_bootstrap([flat, flat], "alignment", n=50) == 0


def test_run_label_names_only_the_knobs_that_were_set():
    assert run_label(pd.Series({"strategy": "base", "t_split": None, "mixture_config": None})) == "base"
    row = pd.Series({"strategy": "style_tailoring", "t_split": 500.0, "mixture_config": 0.3})
    assert run_label(row) == "style_tailoring t_split=500 share=0.3"


def test_collect_wandb_reads_runs_into_the_same_columns(monkeypatch):
    """wandb.Api needs the network: a stand-in with the attributes collect reads."""
    config = {"strategy": {"name": "style_tailoring", "t_split": 250}, "data": {"name": "folder", "mixture": None},
              "trainer": {"max_steps": 600}, "seed": 1, "model": {"name": "sd15"}, "logger": {"group": None}}
    runs = [SimpleNamespace(group="t_split_sweep", name="0_t250", state="finished", config=config,
                            summary_metrics={"eval/alignment": 0.8, "train/loss": 0.1, "_runtime": 12}),
            SimpleNamespace(group="t_split_sweep", name="1_t750", state="crashed", config={}, summary_metrics={})]
    api = SimpleNamespace(runs=lambda project: runs if project == "me/style-tailoring" else [])
    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(Api=lambda: api))
    table = collect_wandb("me/style-tailoring").set_index("run")
    done = table.loc["t_split_sweep/0_t250"]
    assert done["status"] == "completed" and done["experiment"] == "t_split_sweep" and done["t_split"] == 250
    assert done["eval/alignment"] == 0.8 and done["steps"] == 600 and "_runtime" not in table
    assert table.loc["t_split_sweep/1_t750", "status"] == "failed"


def test_collect_command_lists_its_settings_and_refuses_an_unknown_one(tmp_path):
    (tmp_path / "runs" / "0_base").mkdir(parents=True)
    (tmp_path / "runs" / "0_base" / "metrics.json").write_text('{"status": "completed"}')
    assert_help_and_unknown_key("style_tailoring.collect", header="one tidy table", setting="sweep_dir",
                                args=["sweep_dir=runs"], typo="outt=table.csv", cwd=tmp_path)
    assert not list(tmp_path.rglob("table.csv"))  # refused before any work


def _compose(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_an_experiment_composes_and_validates(experiment, tmp_path):
    """Each sweep point is a valid run on the defaults, and the runs share the experiment's wandb group."""
    params = _compose(f"experiment={experiment}", hydra=True).hydra.sweeper.params
    assert params, f"{experiment} sweeps nothing"
    keys = list(params)
    outside_hydra = [f"run_dir={tmp_path}", f"paths.root_dir={tmp_path}"]  # what a Hydra run would fill in
    for values in itertools.product(*(str(params[k]).split(",") for k in keys)):
        sweep_point = [f"{k}={v}" for k, v in zip(keys, values)]
        cfg = to_run_config(_compose(f"experiment={experiment}", *sweep_point, *outside_hydra))
        validate(cfg)
        assert cfg.logger.group == experiment and experiment in cfg.logger.tags
        if cfg.strategy.name != "style_tailoring":  # e.g. the mixture control must not claim a split
            assert "t_split" not in cfg.strategy, values  # not even as a setting: only the splitting class has one


def test_submitit_local_launcher_config_resolves():
    launcher = _compose("hydra/launcher=submitit_local", hydra=True).hydra.launcher
    assert launcher._target_.endswith("LocalLauncher") and launcher.tasks_per_node == 1


@pytest.mark.slow
def test_slurm_ddp_launcher_submits_one_ddp_job_per_sweep_point(tmp_path):
    """The real sbatch script, caught by a stand-in `sbatch` (no cluster here): nodes × GPUs, one task per GPU,
    and the requeue signal Lightning listens to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (bin_dir / "sbatch").write_text('#!/bin/sh\nfor script; do :; done\ncp "$script" job.sh\n'  # the last argument
                                    'echo "sbatch: no cluster in this test" >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", WANDB_MODE="offline")
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.train", "experiment=t_split_sweep",
                           "hydra/launcher=slurm_ddp", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                           "hydra.launcher.partition=gpu", "hydra.sweep.dir=sweep"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert "no cluster in this test" in proc.stderr, proc.stderr[-3000:]
    script = (tmp_path / "job.sh").read_text()
    for line in ["--array=0-4%5", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=10",
                 "--mem-per-gpu=64G", "--partition=gpu", "--signal=USR1@180", "--requeue", "--job-name=train"]:
        assert f"#SBATCH {line}\n" in script, line
    assert script.count("--signal") == 1 and "srun" in script


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep_and_survives_a_failed_job(data_dirs, tmp_path):
    cli("style_tailoring.train", "-m", "hydra/launcher=submitit_local", *data_args(data_dirs), "logger=csv",
        "strategy=style_tailoring", "strategy.t_split=0,500", "trainer.max_steps=2", "data.batch_size=2",
        "hydra.sweep.dir=sweep", cwd=tmp_path)
    table = collect(tmp_path / "sweep").set_index("run")
    assert table.loc["0_style_tailoring", "status"] == "failed"
    assert "strategy.t_split" in table.loc["0_style_tailoring", "error"]
    assert table.loc["1_style_tailoring", "status"] == "completed" and table.loc["1_style_tailoring", "steps"] == 2


@pytest.fixture(scope="module")
def sweep(data_dirs, tmp_path_factory) -> Path:
    """`experiment=t_split_sweep` through the real CLI at two splits, 2 steps each, evaluated with the world's
    judges on 2 prompts × 2 seeds."""
    if not (JUDGES / "accuracy.json").is_file():
        pytest.skip("world judges not built (python -m style_tailoring.world only=judges)")
    root = tmp_path_factory.mktemp("sweep")
    (root / "prompts.txt").write_text("one red circle\ntwo blue stars\n")
    evaluation = [
        "eval.enabled=true", f"eval.prompts={root / 'prompts.txt'}", "eval.seeds_per_prompt=2",
        "eval.sample.num_inference_steps=2", "eval.fid.feature_extractor=clip-local",
        f"eval.fid.weights_path={JUDGES / 'clip'}", f"eval.clip.model_path={JUDGES / 'clip'}",
        f"eval.judges={{_target_: style_tailoring.world.judges.load_judges, path: '{JUDGES}'}}",
        "eval.fid.kid_subset_size=4",
    ]
    args = [a for a in data_args(data_dirs) if a != "eval.enabled=false"]
    cli("style_tailoring.train", "experiment=t_split_sweep", "strategy.t_split=200,700", *args, *evaluation,
        "logger=csv", "trainer.max_steps=2", "data.batch_size=2", "hydra.sweep.dir=sweep", cwd=root)
    return root / "sweep"


@pytest.fixture(scope="module")
def collected(sweep, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The sweep (light parts) plus the wreckage a real sweep leaves, collected by the CLI into table.csv."""
    root = tmp_path_factory.mktemp("collected")
    runs = root / "runs"
    shutil.copytree(sweep, runs, ignore=shutil.ignore_patterns("pipeline", "checkpoints", "samples", "stages"))
    corrupt = runs / "7_corrupt"  # metrics.json cut short
    (corrupt / ".hydra").mkdir(parents=True)
    (corrupt / ".hydra" / "config.yaml").write_text("strategy: {name: style_tailoring, t_split: 900}\n")
    (corrupt / "metrics.json").write_text('{"status": "comp')
    killed = runs / "8_killed"  # killed before writing metrics.json: only Hydra's files
    shutil.copytree(sweep / "0_t200" / ".hydra", killed / ".hydra")
    failed = runs / "9_failed"  # what train.py writes for a job that raised inside a multirun
    failed.mkdir()
    (failed / "metrics.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
    (runs / "0_t200" / "wandb" / "files").mkdir(parents=True)  # tool folders inside a run are not runs
    (runs / "0_t200" / "wandb" / "files" / "metrics.json").write_text("{}")
    proc = cli("style_tailoring.collect", "sweep_dir=runs", "out=table.csv", cwd=root)
    return root / "table.csv", proc


@pytest.mark.slow
def test_t_split_sweep_writes_one_metrics_file_per_split(sweep):
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0_t200", "1_t700"]  # the experiment's subdir names
    for job, t_split in zip(jobs, [200, 700]):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["t_split"] == t_split and metrics["steps"] == 2
        config = (sweep / job / ".hydra" / "config.yaml").read_text()
        assert "group: t_split_sweep" in config


@pytest.mark.slow
def test_collect_makes_one_row_per_run_and_lists_the_broken_ones(collected):
    path, proc = collected
    assert "5 runs (2 completed)" in proc.stdout
    for run in ("7_corrupt", "8_killed", "9_failed: failed: RuntimeError: out of memory"):
        assert run in proc.stderr, proc.stderr
    table = pd.read_csv(path).set_index("run")
    assert list(table.index) == ["0_t200", "1_t700", "7_corrupt", "8_killed", "9_failed"]
    assert table.loc["7_corrupt", "status"].startswith("unreadable metrics.json")
    assert table.loc["7_corrupt", "t_split"] == 900  # its config columns survive
    assert table.loc["8_killed", "status"] == "missing metrics" and table.loc["8_killed", "t_split"] == 200
    assert table.loc["9_failed", "status"] == "failed"
    done = table.loc[["0_t200", "1_t700"]]
    assert (done["status"] == "completed").all() and (done["strategy"] == "style_tailoring").all()
    assert done["experiment"].tolist() == ["t_split_sweep"] * 2
    assert done["t_split"].tolist() == [200, 700] and done["steps"].tolist() == [2, 2]
    assert done["mixture"].tolist() == [0.2, 0.7] and done["mixture_config"].isna().all()  # default t_split / T
    assert done["model"].tolist() == ["tiny"] * 2 and done["data"].tolist() == ["folder"] * 2
    assert done["seed"].tolist() == [0, 0] and done["overrides"].str.contains("strategy.t_split=200").iloc[0]
    for metric in ("eval/alignment", "eval/style_score", "eval/diversity", "eval/vendi", "eval/fid", "eval/kid",
                   "eval/clip_score", "train/loss"):
        assert done[metric].notna().all(), metric
    style_t_max = done["train/style/t_max"]  # logged on steps that drew style samples
    assert (style_t_max.isna() | (style_t_max < done["t_split"])).all()


def _run_notebook(table: Path, figures: Path, monkeypatch) -> str:
    """Executes the notebook on `table`; returns its printed output."""
    monkeypatch.setenv("ABLATION_TABLE", str(table))
    monkeypatch.setenv("ABLATION_FIGURES", str(figures))
    notebook = nbformat.read(REPO / "notebooks" / "ablations.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [out for cell in notebook.cells for out in cell.get("outputs", [])]
    return "".join(out.get("text") or out.get("data", {}).get("text/plain", "") for out in outputs)


@pytest.mark.slow
def test_notebook_runs_on_the_collected_table_and_saves_its_figures(collected, tmp_path, monkeypatch):
    printed = _run_notebook(collected[0], tmp_path / "figures", monkeypatch)
    assert "5 runs, 2 completed" in printed and "9_failed" in printed
    # Two splits at their default shares: a t_split plot, but no style-share sweep and no baseline run.
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["metrics_vs_t_split.png", "tradeoff.png"]
    assert "No plot against the style share" in printed and "no prompt_engineering run" in printed


@pytest.mark.slow
def test_notebook_draws_the_committed_world_study_with_error_bars(tmp_path, monkeypatch):
    """The world results of docs/results.md (experiments/results/world_study.csv, several seeds per configuration)."""
    table = REPO / "experiments" / "results" / "world_study.csv"
    printed = _run_notebook(table, tmp_path / "figures", monkeypatch)
    saved = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert {"tradeoff.png", "vs_prompt_engineering.png"} <= saved, printed
    assert "guidance 3 in every section but the fronts" in printed or "fronts.png" not in saved


@pytest.mark.slow
def test_notebook_says_what_is_missing_instead_of_crashing(tmp_path, monkeypatch):
    """A sweep run with eval.enabled=false (train/* only), plus one failed run."""
    table = pd.DataFrame({
        "run": ["0_t250", "1_t750", "2_pe", "3_broken"], "status": ["completed"] * 3 + ["failed"],
        "strategy": ["style_tailoring", "style_tailoring", "prompt_engineering", "style_tailoring"],
        "t_split": [250, 750, None, 500], "mixture": [0.25, 0.75, None, 0.5], "train/loss": [0.2, 0.3, None, None],
        "eval/alignment": [None] * 4,
    })
    table.to_csv(tmp_path / "table.csv", index=False)
    printed = _run_notebook(tmp_path / "table.csv", tmp_path / "figures", monkeypatch)
    assert "no values in the table (evaluation disabled or skipped): eval/alignment" in printed
    assert "not in the table: eval/style_score" in printed and "No comparison" in printed
    assert not list((tmp_path / "figures").glob("*.png"))
