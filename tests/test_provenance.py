"""Provenance: what made a result (the commit, digests of what scored it) and paths that travel with it."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from style_tailoring.analysis import ScoredDifferently, paired_differences
from style_tailoring.config import REPO_ROOT
from style_tailoring.provenance import (
    checkout_of,
    digest,
    digests,
    paths_in,
    portable,
    portable_paths,
    process_cpu_seconds,
    repository_state,
    resolve,
)


def test_repository_state_names_this_checkout():
    state = repository_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and isinstance(state["dirty"], bool)
    assert checkout_of(REPO_ROOT / "src" / "style_tailoring") == REPO_ROOT


def test_the_cpu_seconds_of_a_process_count_its_work_and_its_reaped_children():
    import subprocess
    import sys

    before = process_cpu_seconds()
    sum(i * i for i in range(2_000_000))  # work in this process
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"], check=True)  # and in a child
    assert process_cpu_seconds() - before > 0.1


def test_a_model_card_at_the_top_of_a_folder_is_no_part_of_its_digest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "w.safetensors").write_bytes(b"weights")
    (a / "README.md").write_text("a model card, rewritten with the metrics after the evaluation")
    assert digest(a) == digest(b)
    (b / "unet" / "README.md").write_text("but a file of that name deeper down is part of it")
    assert digest(a) != digest(b)


def test_paths_inside_the_repository_are_recorded_relative_and_resolve_back(tmp_path):
    inside = REPO_ROOT / "assets" / "sticker_world" / "base"
    assert portable(inside) == "assets/sticker_world/base" and resolve(portable(inside)) == inside
    assert portable(tmp_path / "x") == str((tmp_path / "x").resolve()) and resolve(portable(tmp_path)) == tmp_path
    assert portable(None) is None


def test_a_run_reached_through_a_link_in_the_repository_is_recorded_by_its_repository_path(tmp_path, monkeypatch):
    """experiments/runs as a link to a scratch disk (as clusters do): what a run records is the repository's path,
    never the scratch disk's (no committed result may hold a path of the machine that made it)."""
    import style_tailoring.provenance as provenance

    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    (scratch / "seq" / "seed1" / "pipeline").mkdir(parents=True)
    (repo / "experiments").mkdir(parents=True)
    (repo / "experiments" / "runs").symlink_to(scratch)
    monkeypatch.setattr(provenance, "REPO_ROOT", repo.resolve())
    linked = repo / "experiments" / "runs" / "seq" / "seed1" / "pipeline"
    assert provenance.portable(linked) == "experiments/runs/seq/seed1/pipeline"
    assert provenance.portable(scratch / "seq") == str((scratch / "seq").resolve())  # outside it: as it is
    # An evaluation of that run names its source run the same way.
    from style_tailoring.evaluation.standalone import source_run

    (scratch / "seq" / "seed1" / "metrics.json").write_text('{"strategy": "sequential", "seed": 1}')
    assert source_run(linked)["source_run"] == "experiments/runs/seq/seed1"


def test_a_digest_follows_the_files_not_their_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "w.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text("{}")
    (a / ".cache").mkdir()
    (a / ".cache" / "note").write_text("the library's own cache is not the model")
    assert digest(a) == digest(b) and digest(a).startswith("sha256:")
    (b / "unet" / "w.safetensors").write_bytes(b"weightz")  # same size, new content
    assert digest(a) != digest(b)
    (b / "unet" / "w.safetensors").write_bytes(b"weights")
    (b / "unet" / "w2.safetensors").write_bytes(b"")  # one more file
    assert digest(a) != digest(b)
    assert digest(tmp_path / "missing") is None and digest(None) is None
    assert digests({"one": a, "none": None, "two": [a, a]}).keys() == {"one", "two"}
    assert digests({"x": [a]}) != digests({"x": [b]})


def test_the_same_weights_exported_from_two_checkouts_have_one_digest(tmp_path):
    """save_pretrained writes the folder a model was loaded from as `_name_or_path`: a machine's path, not the model."""
    import json

    a, b = tmp_path / "a", tmp_path / "b"
    for folder, source in ((a, "/home/one/assets/base"), (b, "/work/two/assets/base")):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "w.safetensors").write_bytes(b"weights")
        (folder / "unet" / "config.json").write_text(json.dumps({"_name_or_path": source, "layers": 2}))
    assert digest(a) == digest(b)
    (b / "unet" / "config.json").write_text(json.dumps({"_name_or_path": "/x", "layers": 3}))  # the model changed
    assert digest(a) != digest(b)


def test_paths_in_a_target_node_are_the_files_it_reads(tmp_path):
    (tmp_path / "judge.safetensors").write_bytes(b"")
    spec = {"_target_": "pkg.Judge", "weights": str(tmp_path / "judge.safetensors"), "name": "not a path",
            "nested": {"more": [str(tmp_path), 3]}}
    assert paths_in(spec) == [str(tmp_path / "judge.safetensors"), str(tmp_path)]
    assert paths_in(None) == []


def test_settings_recorded_beside_a_result_name_repository_files_relative_to_it(tmp_path):
    judges = REPO_ROOT / "assets" / "sticker_world" / "judges"
    settings = {"judges": {"_target_": "pkg.Judge", "path": str(judges)}, "out": str(tmp_path), "steps": 8,
                "prompt": "one red star", "teachers": [str(judges)], "cache": str(REPO_ROOT / ".cache" / "not-yet")}
    assert portable_paths(settings) == {
        "judges": {"_target_": "pkg.Judge", "path": "assets/sticker_world/judges"}, "out": str(tmp_path.resolve()),
        "steps": 8, "prompt": "one red star", "teachers": ["assets/sticker_world/judges"], "cache": ".cache/not-yet"}


def test_a_paired_comparison_refuses_arms_scored_by_different_judges():
    table = pd.DataFrame({"label": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1], "eval/alignment": [0.5, 0.6, 0.4, 0.4],
                          "eval/provenance/judges": ["sha256:j"] * 4, "eval/provenance/eval_prompts": ["sha256:p"] * 4})
    diff = paired_differences(table, ["label"], {"label": "b"}, ["eval/alignment"])
    assert diff.loc["a", "eval/alignment"] == pytest.approx(0.15)
    table.loc[3, "eval/provenance/judges"] = "sha256:other"
    with pytest.raises(ScoredDifferently, match="eval/provenance/judges"):
        paired_differences(table, ["label"], {"label": "b"}, ["eval/alignment"])
    single = table.iloc[[0, 1, 2]].copy()  # a baseline that trains nothing: one row, no seed
    single.loc[2, "seed"] = None
    single.loc[2, "eval/provenance/eval_prompts"] = "sha256:other prompts"
    with pytest.raises(ScoredDifferently, match="eval_prompts"):
        paired_differences(single, ["label"], {"label": "b"}, ["eval/alignment"])


def test_two_level_bootstrap_carries_both_sources_of_error():
    import numpy as np

    from style_tailoring.analysis import holm, paired_t, two_level_bootstrap

    rng = np.random.default_rng(0)
    prompts = rng.normal(0, 1, size=24)  # prompt difficulty, shared by every arm
    a = 0.5 + prompts + rng.normal(0, 0.05, size=(5, 24))  # five seeds, 24 prompts
    b = prompts + rng.normal(0, 0.05, size=(5, 24))
    single = prompts[None, :]  # an arm that trains nothing: one row
    diff = two_level_bootstrap({"a": a, "b": b}, lambda m: m["a"].mean() - m["b"].mean(), n=500)
    assert diff["low"] < 0.5 < diff["high"] and diff["p"] < 0.01 and diff["estimate"] == pytest.approx(0.5, abs=0.05)
    # Paired on prompts and seeds, the shared prompt difficulty cancels: far narrower than each arm's own mean.
    alone = two_level_bootstrap({"a": a}, lambda m: m["a"].mean(), n=500)
    assert diff["high"] - diff["low"] < (alone["high"] - alone["low"]) / 3
    # A one-run baseline's prompts are resampled with the arms: its sampling error is carried.
    over = two_level_bootstrap({"a": a, "pe": single + 2}, lambda m: m["a"].mean() / m["pe"].mean(), n=500)
    assert over["high"] - over["low"] > 0.05
    # a seed's runs missing: no interval, never a verdict
    missing = two_level_bootstrap({"a": np.full((3, 4), np.nan)}, lambda m: m["a"].mean(), n=50)
    assert np.isnan(missing["low"]) and np.isnan(missing["p"]) and missing["n"] == 0
    t = paired_t([0.1, 0.2, 0.15, 0.12, 0.18])
    assert t["low"] < 0.15 < t["high"] and t["p"] < 0.01 and t["n"] == 5
    assert holm({"x": 0.01, "y": 0.04, "z": 0.03}) == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})


def test_no_committed_result_holds_a_path_of_the_machine_that_made_it():
    """experiments/results/ (tables, records, per-sample scores) and the shipped assets' metadata (configs, alpha.json,
    measurements) name files relative to the repository: an absolute
    path would tie a result to one machine's checkout and say nothing to anyone else."""
    import gzip

    absolute = re.compile(r"(^|[\s,\"'=:(\[])/(?:[A-Za-z0-9_.-]+/){2}")
    found = []
    shipped = [p for p in (REPO_ROOT / "assets").rglob("*.json") if ".cache" not in p.parts]  # assets' metadata too
    for path in sorted([*(REPO_ROOT / "experiments" / "results").rglob("*"), *shipped]):
        if path.suffix in (".csv", ".md", ".jsonl", ".json", ".txt"):
            text = path.read_text(errors="replace")
        elif path.name.endswith(".jsonl.gz"):
            text = gzip.decompress(path.read_bytes()).decode(errors="replace")
        else:
            continue
        found += [f"{path.relative_to(REPO_ROOT)}: {m.group(0).strip()}" for m in absolute.finditer(text)][:3]
    assert not found, "\n".join(found)
