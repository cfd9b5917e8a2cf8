"""Ablation machinery: an experiment sweep through the real CLI, the collected table, and the notebook on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from style_tailoring.collect import collect, pareto_front
from test_cli import cli, data_args

REPO = Path(__file__).resolve().parents[1]
JUDGES = REPO / "assets" / "sticker_world" / "judges"


def test_pareto_front_keeps_undominated_points():
    table = pd.DataFrame({"x": [0.1, 0.5, 0.4, 0.9, 0.3], "y": [0.9, 0.6, 0.5, 0.2, 0.95]})
    assert pareto_front(table, "x", "y").index.tolist() == [4, 1, 3]


@pytest.mark.slow
@pytest.mark.skipif(not (JUDGES / "accuracy.json").is_file(), reason="world judges not built")
def test_t_split_sweep_collect_and_notebook(data_dirs, tmp_path):
    (tmp_path / "prompts.txt").write_text("one red circle\ntwo blue stars\n")
    evaluation = [
        "eval.enabled=true", f"eval.prompts={tmp_path / 'prompts.txt'}", "eval.seeds_per_prompt=2",
        "eval.sample.num_inference_steps=2", "eval.fid.feature_extractor=clip-local",
        f"eval.fid.weights_path={JUDGES / 'clip'}", f"eval.clip.model_path={JUDGES / 'clip'}",
        f"eval.judges.path={JUDGES}", "eval.fid.kid_subset_size=4",
    ]
    args = [a for a in data_args(data_dirs) if a != "eval.enabled=false"]
    cli("style_tailoring.train", "experiment=t_split_sweep", "strategy.t_split=200,700", *args, *evaluation,
        "trainer.max_steps=2", "data.batch_size=2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    jobs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(jobs) == 2
    broken = tmp_path / "sweep" / "9_broken"
    (broken / ".hydra").mkdir(parents=True)
    (broken / ".hydra" / "config.yaml").write_text("strategy: {name: style_tailoring, t_split: 900}\n")
    (broken / "metrics.json").write_text("{not json")

    proc = cli("style_tailoring.collect", "sweep", "--out", "table.csv", cwd=tmp_path)
    assert "9_broken" in proc.stderr and "3 runs (2 completed)" in proc.stdout
    table = pd.read_csv(tmp_path / "table.csv")
    done = table[table["status"] == "completed"].sort_values("t_split")
    assert done["t_split"].tolist() == [200, 700] and set(done["strategy"]) == {"style_tailoring"}
    assert done["mixture"].tolist() == [0.2, 0.7]  # the default share t_split / T
    for metric in ("eval/alignment", "eval/style_score", "eval/diversity", "eval/vendi", "eval/fid",
                   "eval/clip_score"):
        assert done[metric].notna().all(), metric
    assert json.loads((jobs[0]).read_text())["status"] == "completed"
    assert len(collect(tmp_path / "sweep")) == 3

    notebook = nbformat.read(REPO / "notebooks" / "ablations.ipynb", as_version=4)
    os.environ["ABLATION_TABLE"], os.environ["ABLATION_FIGURES"] = str(tmp_path / "table.csv"), str(tmp_path / "fig")
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        del os.environ["ABLATION_TABLE"], os.environ["ABLATION_FIGURES"]
    figures = sorted(p.name for p in (tmp_path / "fig").glob("*.png"))
    # Two splits at their default shares (0.2, 0.7) also give two points against the style share.
    assert figures == ["metrics_vs_mixture.png", "metrics_vs_t_split.png", "tradeoff.png"]
