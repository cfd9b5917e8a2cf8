"""Summarise experiments/hitl_rounds.py by the questions its protocol fixed (experiments/hitl_rounds_protocol.md).

    python experiments/hitl_rounds_summary.py [--runs experiments/results/records/hitl_rounds]
                                              [--out experiments/results]
    python experiments/hitl_rounds_summary.py --figure experiments/runs/hitl_rounds --seed 2001 --round 3

The figure (figures_hitl_rounds/sets_seed<k>_round<r>.png) needs the run directories, which hold the images: the
curated Style set of `rounds` round r beside the expert Style set drawn at its size, and the held-out samples (the
same prompts and noises in every row) of the domain model and of Style Tailoring and sequential trained on each set.

Reads the study's records (or its run directories) and writes:
  hitl_rounds_runs.csv     one row per trained model: seed, arm, round, strategy, its evaluation
  hitl_rounds_rounds.csv   one row per (seed, arm, round): candidates (and what share of them the evaluation's
                           judges call stickers and aligned: the generator on the training prompts), yields, curated
                           sizes, style histogram, the rater-audit agreement, and the curated sets (and the expert
                           sets drawn at their sizes) measured as data
  hitl_rounds.csv          every question's paired differences (mean, 95% t interval, n)
  hitl_rounds.md           the same as tables, with the per-arm means
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from style_tailoring.analysis import paired_t, seed_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_study_summary import fmt  # noqa: E402  (a mean ± interval cell, "—" where there is no value)

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"eval/alignment": "alignment", "eval/style_score": "style", "eval/layout_diversity": "layout diversity",
           "eval/clip_score": "CLIP score", "eval/fid": "FID"}
STRATEGIES = ("sequential", "mixture", "style_tailoring")
# The per-round tables: column → (heading, decimals)
ROUND_TABLES = {
    "## Rounds: candidates, yields and curated sizes": {
        "candidates": ("candidates", 0),
        "candidates_sticker_share": ("stickers among them (audit)", 3),
        "candidates_aligned_share": ("aligned among them (audit)", 3),
        "aligned_yield": ("rated aligned", 3),
        "alignment_picks": ("Alignment picks", 0), "style_picks": ("Style picks", 0),
        "alignment_accumulated": ("Alignment set", 0), "style_accumulated": ("Style set", 0)},
    "## Rounds: the audit, and the sets as data (the expert sets drawn at their sizes beside them)": {
        "audit_agreement": ("rater-audit agreement, aligned", 3),
        "audit_style_agreement": ("rater-audit agreement, grade ≥ 4", 3),
        "audit_alignment_set_precision": ("audit precision on the Alignment set", 3),
        "style_set/style_score": ("Style set: style", 3),
        "expert_style_set/style_score": ("expert Style set: style", 3),
        "alignment_set/alignment": ("Alignment set: alignment", 3),
        "expert_alignment_set/alignment": ("expert Alignment set: alignment", 3),
        "alignment_set/layout_diversity": ("Alignment set: layout diversity", 3),
        "expert_alignment_set/layout_diversity": ("expert Alignment set: layout diversity", 3)},
}


def runs_table(runs: Path) -> pd.DataFrame:
    """Every trained model's record: seed<k>/<arm>/round-<r>/finetune/<strategy>, seed<k>/expert/<arm>/round-<r>/
    <strategy>, seed<k>/teachers/round-1/student/<name>, seed<k>/domain."""
    rows = []
    for path in sorted(runs.glob("seed*/**/metrics.json")):
        rel = path.parent.relative_to(runs).as_posix()
        metrics = json.loads(path.read_text())
        if metrics.get("status") != "completed" or "eval/alignment" not in metrics:
            continue  # still training, or trained and not yet evaluated (a study read while it runs)
        m = (re.fullmatch(r"seed(\d+)/(rounds|from_domain|clip)/round-(\d+)/finetune/(\w+)", rel)
             or re.fullmatch(r"seed(\d+)/(expert/\w+)/round-(\d+)/(\w+)", rel)
             or re.fullmatch(r"seed(\d+)/(teachers)/round-(\d+)/student/(.+)", rel)
             or re.fullmatch(r"seed(\d+)/(domain)()()", rel))
        if not m:
            continue
        seed, arm, rnd, model = m.groups()
        if arm == "teachers":
            model = "ensemble" if model == "ensemble" else "best_teacher"
        rows.append({"seed": int(seed), "arm": arm, "round": int(rnd) if rnd else 0, "strategy": model or "domain",
                     **{k: metrics.get(k) for k in METRICS}, "commit": metrics.get("eval/provenance", {}).get("commit"),
                     "run": rel})
    return pd.DataFrame(rows)


def rounds_table(runs: Path) -> pd.DataFrame:
    """Per (seed, arm, round): the curation report and the rater's audit; the expert sets drawn at its sizes."""
    rows = []
    for path in sorted(runs.glob("seed*/*/round-*/curation.json")):
        seed, arm, rnd = re.fullmatch(r"seed(\d+)/(\w+)/round-(\d+)", path.parent.relative_to(runs).as_posix()).groups()
        c = json.loads(path.read_text())
        audit = c.get("audit_against_evaluation_judges") or {}
        row = {"seed": int(seed), "arm": arm, "round": int(rnd), "candidates": c["candidates"],
               "aligned_yield": c["aligned"] / c["candidates"], "alignment_picks": c["alignment"],
               "style_picks": c["style"], "alignment_accumulated": c["accumulated"]["alignment"],
               "style_accumulated": c["accumulated"]["style"],
               **{f"grade_{g}": c["style_histogram"][str(g)] for g in range(1, 6)},
               "audit_agreement": audit.get("agreement"),
               "audit_alignment_set_precision": audit.get("alignment_set_judge_precision")}
        rated = path.parent / "rated.jsonl.gz"
        rated = rated if rated.is_file() else path.parent / "rated.jsonl"
        if rated.is_file():
            lines = (gzip.decompress(rated.read_bytes()) if rated.suffix == ".gz" else rated.read_bytes()).decode()
            rr = [json.loads(line) for line in lines.splitlines() if line.strip()]
            audited = [r for r in rr if "judge_style" in r and r["style"] is not None]
            if audited:  # style: does the rater's grade ≥ 4 agree with the audit's?
                row["audit_style_agreement"] = float(np.mean([(r["style"] >= 4) == (r["judge_style"] >= 4)
                                                              for r in audited]))
                # the generator on the training prompts, by the evaluation's judges: the share of its candidates
                # that are stickers (grade ≥ 4) and that are aligned, beside its models' scores on held-out prompts
                row["candidates_sticker_share"] = float(np.mean([r["judge_style"] >= 4 for r in audited]))
                row["candidates_aligned_share"] = float(np.mean([bool(r["judge_aligned"]) for r in audited]))
        for name in ("alignment", "style"):
            for k, v in (c.get("sets_as_data", {}).get(name) or {}).items():
                row[f"{name}_set/{k}"] = v
        sizes = runs / f"seed{seed}" / "expert" / arm / f"round-{rnd}" / "data" / "sizes.json"
        if sizes.is_file():
            for name, s in json.loads(sizes.read_text()).items():
                row[f"expert_{name}_drawn"] = s["drawn"]
                for k, v in (s.get("as_data") or {}).items():
                    row[f"expert_{name}_set/{k}"] = v
        rows.append(row)
    return pd.DataFrame(rows)


def questions(runs: pd.DataFrame, rounds: pd.DataFrame) -> pd.DataFrame:
    """The protocol's Q1-Q6, each a difference paired on the seed."""
    def pick(arm, rnd, strategy):
        sel = runs[(runs.arm == arm) & (runs["round"] == rnd) & (runs.strategy == strategy)]
        return sel.set_index("seed")

    out = []

    def add(q, what, a, b, metrics):
        for metric in metrics:
            joined = a[[metric]].join(b[[metric]].rename(columns={metric: f"{metric}/b"}), how="inner").dropna()
            if joined.empty:
                continue
            t = paired_t(joined[metric] - joined[f"{metric}/b"])
            out.append({"question": q, "difference": what, "metric": METRICS.get(metric, metric), **t})

    last = int(runs.loc[runs.arm == "rounds", "round"].max()) if (runs.arm == "rounds").any() else 0
    core = ["eval/style_score", "eval/alignment", "eval/layout_diversity"]
    for r in range(1, last + 1):
        for s in STRATEGIES:
            add("Q1", f"rounds round {r} − expert at its sizes, {s}", pick("rounds", r, s),
                pick("expert/rounds", r, s), core)
    for s in STRATEGIES:
        add("Q2", f"rounds round {last} − round 1, {s}", pick("rounds", last, s), pick("rounds", 1, s),
            core[:2])
        add("Q3", f"rounds − from_domain, round {last}, {s}", pick("rounds", last, s), pick("from_domain", last, s),
            core[:2])
    for arm in ("rounds", "expert/rounds"):
        add("Q4", f"{arm} round {last}: style_tailoring − sequential", pick(arm, last, "style_tailoring"),
            pick(arm, last, "sequential"), ["eval/alignment", "eval/layout_diversity"])
        add("Q4", f"{arm} round {last}: style_tailoring − mixture", pick(arm, last, "style_tailoring"),
            pick(arm, last, "mixture"), ["eval/style_score"])
    for r in range(1, last + 1):
        add("Q5", f"clip − rounds, round {r}, style_tailoring", pick("clip", r, "style_tailoring"),
            pick("rounds", r, "style_tailoring"), core[:2])
    add("Q6", "student: ensemble − best teacher", pick("teachers", 1, "ensemble"), pick("teachers", 1, "best_teacher"),
        core[:2] + ["eval/clip_score"])
    style_set = rounds[rounds.arm == "rounds"].set_index(["seed", "round"])
    if "style_set/style_score" in style_set and last > 1:
        a = style_set.xs(last, level="round")[["style_set/style_score"]]
        b = style_set.xs(1, level="round")[["style_set/style_score"]]
        add("Q2", f"the rounds' Style set as data, round {last} − round 1", a, b, ["style_set/style_score"])
    return pd.DataFrame(out)


def markdown(runs: pd.DataFrame, rounds: pd.DataFrame, qs: pd.DataFrame) -> str:
    commits = ", ".join(f"{c[:7]} ({n} models)" for c, n in runs["commit"].value_counts().items())
    lines = ["# HITL rounds on world v3", "",
             "Made by `python experiments/hitl_rounds.py --workers 2` (the models trained at commits "
             f"{commits}), then `python experiments/hitl_rounds_summary.py`; the figure by `python "
             "experiments/hitl_rounds_summary.py --figure experiments/runs/hitl_rounds --seed 2001 --round 3`. The "
             "protocol: [hitl_rounds_protocol.md](../hitl_rounds_protocol.md). Mean ± 95% t interval over training "
             "seeds; differences paired on the seed.", "", "## Models", ""]
    summary = seed_summary(runs, ["arm", "round", "strategy"], list(METRICS)).reset_index()
    lines += ["| arm | round | model | " + " | ".join(METRICS.values()) + " | n |",
              "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    for _, r in summary.iterrows():
        cells = [fmt(r[m], r[f"{m}/ci95"], 1 if m in ("eval/clip_score",) else 3) for m in METRICS]
        lines.append(f"| {r.arm} | {r['round']} | {r.strategy} | " + " | ".join(cells) + f" | {r.n} |")
    for title, columns in ROUND_TABLES.items():
        present = [c for c in columns if c in rounds]
        per_round = seed_summary(rounds, ["arm", "round"], present).reset_index()
        lines += ["", title, "", "| arm | round | " + " | ".join(columns[c][0] for c in present) + " | n |",
                  "|---|---|" + "---|" * len(present) + "---|"]
        for _, r in per_round.iterrows():
            lines.append(f"| {r.arm} | {r['round']} | "
                         + " | ".join(fmt(r[c], r[f"{c}/ci95"], columns[c][1]) for c in present) + f" | {r.n} |")
    lines += ["", "## The protocol's questions", "",
              "| question | difference | metric | estimate | 95% t interval | n | resolved |",
              "|---|---|---|---|---|---|---|"]
    for _, q in qs.iterrows():
        resolved = "yes" if q.low > 0 or q.high < 0 else "no"
        lines.append(f"| {q.question} | {q.difference} | {q.metric} | {q.estimate:.3f} | "
                     f"[{q.low:.3f}, {q.high:.3f}] | {q.n} | {resolved} |")
    return "\n".join(lines) + "\n"


def figure(runs: Path, seed: int, rnd: int, out: Path, per_row: int = 16) -> Path:
    """Rows of images, each labelled: the two Style sets (a seeded draw) and held-out samples of the models."""
    from PIL import Image, ImageDraw

    s = runs / f"seed{seed}"
    sets = {"curated Style set": s / "rounds" / f"round-{rnd}" / "style",
            "expert Style set, same size": s / "expert" / "rounds" / f"round-{rnd}" / "data" / "style"}
    models = {"domain model": s / "domain",
              **{f"{name} on curated": s / "rounds" / f"round-{rnd}" / "finetune" / name for name in STRATEGIES[::2]},
              **{f"{name} on expert": s / "expert" / "rounds" / f"round-{rnd}" / name for name in STRATEGIES[::2]}}
    rng = np.random.default_rng(seed)
    rows = {}
    for label, folder in sets.items():
        files = sorted(folder.glob("*.png"))
        if not files:
            raise SystemExit(f"no images in {folder}")
        rows[label] = [files[i] for i in rng.choice(len(files), min(per_row, len(files)), replace=False)]
    # the same held-out prompts and noises in every model's row: the first noise of each of the first prompts
    for label, run in models.items():
        index = run / "samples" / "final" / "index.jsonl"
        if not index.is_file():
            raise SystemExit(f"no held-out samples (index.jsonl) in {index.parent}")
        first = {}
        for row in map(json.loads, index.read_text().splitlines()):
            first.setdefault(row["prompt_index"], index.parent / row["file_name"])
        rows[label] = [first[k] for k in sorted(first)[:per_row]]
    cell, margin = 64, 150
    sheet = Image.new("RGB", (margin + per_row * (cell + 2), len(rows) * (cell + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, files) in enumerate(rows.items()):
        draw.text((4, r * (cell + 2) + cell // 2 - 6), label, fill="black")
        for c, f in enumerate(files):
            sheet.paste(Image.open(f).convert("RGB").resize((cell, cell), Image.NEAREST),
                        (margin + c * (cell + 2), r * (cell + 2)))
    path = out / "figures_hitl_rounds" / f"sets_seed{seed}_round{rnd}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=ROOT / "experiments" / "results" / "records" / "hitl_rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    parser.add_argument("--figure", type=Path, help="the study's run directory (images): write the figure only")
    parser.add_argument("--seed", type=int, default=2001)
    parser.add_argument("--round", type=int, default=3)
    args = parser.parse_args(argv)
    if args.figure:
        print(figure(args.figure, args.seed, args.round, args.out))
        return
    runs, rounds = runs_table(args.runs), rounds_table(args.runs)
    if runs.empty:
        raise SystemExit(f"no completed runs under {args.runs}")
    qs = questions(runs, rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "hitl_rounds_runs.csv", index=False)
    rounds.to_csv(args.out / "hitl_rounds_rounds.csv", index=False)
    qs.to_csv(args.out / "hitl_rounds.csv", index=False)
    (args.out / "hitl_rounds.md").write_text(markdown(runs, rounds, qs))
    print((args.out / "hitl_rounds.md").read_text())


if __name__ == "__main__":
    main()
