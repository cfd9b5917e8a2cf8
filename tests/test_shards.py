"""Streaming tar shards: conversion, disjoint splitting over ranks × workers, resume skip, and training from them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_cfg, write_folder
from style_tailoring.config import ConfigError
from style_tailoring.data.shards import ShardStream, write_shards
from style_tailoring.training.run import run
from test_cli import assert_help_and_unknown_key


@pytest.fixture()
def shards(tmp_path):
    folder = write_folder(tmp_path / "folder", 20, 0, sticker=False)  # noisy backgrounds: every image unique
    proc = subprocess.run([sys.executable, "-m", "style_tailoring.data.shards", f"folder={folder}",
                           f"out_dir={tmp_path / 'shards'}", "shard_size=3"], capture_output=True, text=True)
    assert proc.returncode == 0 and "wrote 20 samples" in proc.stdout
    return tmp_path / "shards"


def take(stream, n):
    return [next(stream) for _ in range(n)]


def test_consumers_read_disjoint_shards_covering_everything(shards):
    source = ShardStream(shards, resolution=16)
    assert len(source) == 20 and len(source.shards) == 7
    first_pass = np.random.default_rng((0, 0)).permutation(7)  # the shard order of pass 0 for seed 0
    seen = []
    for consumer in range(4):  # e.g. 2 ranks × 2 workers: one pass over each one's own shards
        n = sum(source.shards[i][1] for i in first_pass[consumer::4])
        seen += [item["pixel_values"] for item in take(source.iterate(0, consumer, 4), n)]
    assert len(seen) == 20 and len({tuple(p.flatten().tolist()) for p in seen}) == 20


def test_skip_resumes_the_same_sequence(shards):
    source = ShardStream(shards, resolution=16)
    full = take(source.iterate(5, 1, 2), 14)  # crosses a pass boundary (this consumer has ~10 samples)
    resumed = take(source.iterate(5, 1, 2, skip=6), 8)
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) and a["text"] == b["text"]
               for a, b in zip(full[6:], resumed))


def test_training_streams_the_domain_set(data_dirs, shards, tmp_path):
    dirs = dict(data_dirs, domain=shards)
    with pytest.raises(ConfigError, match="data.cache.enabled"):
        run(make_cfg(dirs, tmp_path / "a", "strategy=base"))
    metrics = run(make_cfg(dirs, tmp_path / "b", "strategy=base", "data.cache.enabled=false", "data.num_workers=2"))
    assert metrics["steps"] == 4 and json.loads((tmp_path / "b" / "metrics.json").read_text())["train/domain/n"] > 0


def test_bad_folder_samples_fail_at_conversion(tmp_path):
    folder = write_folder(tmp_path / "folder", 3, 0, sticker=True)
    (folder / "0001.png").write_bytes(b"junk")
    with pytest.raises(Exception, match="0001.png"):
        write_shards(folder, tmp_path / "out")


def test_the_shards_command_lists_its_settings_and_refuses_an_unknown_or_wrong_one(tmp_path):
    folder = write_folder(tmp_path / "folder", 3, 0, sticker=True)
    assert_help_and_unknown_key("style_tailoring.data.shards", header="streaming tar shards", setting="shard_size",
                                args=[f"folder={folder}", "out_dir=out"], typo="shard-size=2", cwd=tmp_path)
    wrong = subprocess.run([sys.executable, "-m", "style_tailoring.data.shards", f"folder={folder}", "out_dir=out",
                            "shard_size=0"], cwd=tmp_path, capture_output=True, text=True)
    assert wrong.returncode != 0 and "error: shard_size: must be >= 1" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "out").exists()  # refused before any work
