"""The Sticker World's StyleForge benchmark: the hatched look, its data, its judges, and a run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from style_tailoring.config import REPO_ROOT
from style_tailoring.world.grammar import Content, caption, eval_prompt_contents, parse_caption, sample_content
from style_tailoring.world.render import INK, PAPER, render, sample_layout
from style_tailoring.world.styleforge import FOLDERS, STYLEREF_SUBJECTS, build_benchmark
from test_cli import cli

JUDGES = REPO_ROOT / "assets" / "sticker_world" / "judges_hatched"


def _near(image: np.ndarray, colour, tolerance: int = 30) -> np.ndarray:
    return (np.abs(image.astype(int) - np.array(colour)).max(-1) < tolerance)


def test_hatched_look_has_ink_outlines_hatched_fills_and_paper():
    content = Content("one", "blue", "square")
    hatched = np.asarray(render(content, "hatched", np.random.default_rng(0)))
    sticker = np.asarray(render(content, "sticker", np.random.default_rng(0)))
    assert np.array_equal(hatched, np.asarray(render(content, "hatched", np.random.default_rng(0))))
    assert _near(hatched[:4, :4], PAPER, 12).all() and not _near(sticker[:4, :4], PAPER, 12).any()
    assert _near(hatched, INK, 40).mean() > 0.04 and _near(sticker, INK, 40).mean() < 0.01
    # The fill is crossed by darker lines: the middle of a large centred square varies in brightness, a
    # white-border sticker's is flat.
    middle = {style: np.asarray(render(content, style, np.random.default_rng(2),
                                       layout=sample_layout(content, np.random.default_rng(2), fixed=True)))
              [12:20, 12:20].astype(int).sum(-1) for style in ("hatched", "sticker")}
    assert middle["hatched"].std() > 20 > 2 > middle["sticker"].std()
    # objects=False: the scene's prop alone on the paper (a background image), no object's colour anywhere.
    alone = np.asarray(render(Content("one", "blue", "square", "grass"), "hatched", np.random.default_rng(1),
                              objects=False))
    assert not _near(alone, (40, 90, 220), 40).any() and _near(alone, (105, 150, 45), 50).any()


def test_benchmark_folders_are_narrow_styleref_and_broad_aux(tmp_path):
    out = build_benchmark(tmp_path / "styleforge", seed=0)
    rows = {name: [json.loads(line) for line in (out / name / "metadata.jsonl").read_text().splitlines()]
            for name in FOLDERS}
    assert {name: len(r) for name, r in rows.items()} == {
        "styleref_styleforge": 20, "styleref_multi_styleforge": 14, "styleref_bg": 6, "aux_styleforge": 150,
        "aux_multi_styleforge": 100, "aux_bg": 50, "eval_reference": 16 * len(eval_prompt_contents())}
    # StyleForge and Multi-StyleForge read the same images: the split folders are the whole one, in order.
    split = rows["styleref_multi_styleforge"] + rows["styleref_bg"]
    assert rows["styleref_styleforge"] == [{**r, "file_name": f"{i:06d}.png"} for i, r in enumerate(split)]
    characters = rows["styleref_multi_styleforge"]
    assert {r["subject"] for r in characters} <= set(STYLEREF_SUBJECTS) and {r["count"] for r in characters} == {"one"}
    assert all(r["style"] == "hatched" for r in rows["styleref_styleforge"])
    assert all(r["style"] == "photo" for r in rows["aux_styleforge"])
    # Held-out: no eval prompt's content is in the StyleRef set, and the eval prompts ask for more than it has.
    eval_contents = {c.base() for c in eval_prompt_contents()}
    assert not {Content(r["count"], r["colour"], r["subject"]) for r in characters} & eval_contents
    prompts = [json.loads(line)["prompt"] for line in (out / "eval_prompts.jsonl").read_text().splitlines()]
    assert prompts == [caption(c) for c in eval_prompt_contents()]
    assert {parse_caption(p).subject for p in prompts} - set(STYLEREF_SUBJECTS)
    # Cached: a second call rewrites nothing.
    stamp = (out / "aux_bg" / "metadata.jsonl").stat().st_mtime_ns
    build_benchmark(out, seed=0)
    assert (out / "aux_bg" / "metadata.jsonl").stat().st_mtime_ns == stamp


def test_shipped_look_judges_read_the_new_look():
    from style_tailoring.world.judges import load_judges

    judges = load_judges(REPO_ROOT / "assets" / "sticker_world" / "judges", style=JUDGES)
    rng = np.random.default_rng(9876)  # a stream never used in training
    contents = [sample_content(rng) for _ in range(48)]
    renders = {style: torch.stack([torch.from_numpy(np.array(render(c, style, rng))).permute(2, 0, 1)
                                   for c in contents]) for style in ("hatched", "sticker", "photo")}
    score = {style: judges.style_score(images) for style, images in renders.items()}
    assert (score["hatched"] > 0.5).float().mean() >= 0.95
    assert (score["sticker"] < 0.5).float().mean() >= 0.95 and (score["photo"] < 0.5).float().mean() >= 0.95
    # Its attribute judge reads the hatched look (the world's own, trained without it, misreads shapes and scenes).
    prompts = [caption(c) for c in contents]
    assert judges.prompt_alignment(renders["hatched"], prompts)["alignment/subject"] >= 0.9
    accuracy = json.loads((JUDGES / "accuracy.json").read_text())
    assert accuracy["look"] >= 0.95 and "command" in accuracy
    assert sum(f.stat().st_size for f in JUDGES.rglob("*") if f.is_file()) < 3 * 2**20


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["styleforge", "multi_styleforge"])
def test_styleforge_runs_on_the_world_benchmark_and_is_judged_in_the_look(strategy, tmp_path):
    cli("style_tailoring.train", f"strategy={strategy}", "data=styleforge_world", f"paths.data_dir={tmp_path}/data",
        "logger=none", "trainer.max_steps=2", "data.batch_size=4", "strategy.ico.enabled=true",
        "eval.max_prompts=2", "eval.seeds_per_prompt=2", "eval.sample.num_inference_steps=2",
        "eval.fid.kid_subset_size=4", "hydra.run.dir=run", cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["strategy"] == strategy
    assert {"eval/style_score", "eval/alignment", "eval/kid", "eval/kid_styleref"} <= set(metrics)
    assert "eval/kid_style_set" not in metrics  # the world's sticker style set is dropped by the benchmark
    # Each strategy reads its own view of the same 20 StyleRef images; ICO learned contexts for each of them.
    folder = "styleref_multi_styleforge" if strategy == "multi_styleforge" else "styleref_styleforge"
    contexts = json.loads((tmp_path / "run" / "ico" / "ico_contexts.json").read_text())["rows"]
    assert {path.split("/")[-2] for path in contexts["styleref"]} == {folder}
    assert len(contexts["styleref"]) == (14 if strategy == "multi_styleforge" else 20)
    assert metrics["eval/settings"]["prompt_suffix"] == ", sks style"
    assert metrics["eval/settings"]["prompts"].endswith("styleforge/eval_prompts.jsonl")
