"""The Sticker World's two shipped photo bases side by side on the held-out evaluation: the UNet base
(assets/sticker_world/base) and the SD3-family base (assets/sticker_world/base_sd3), each sampled with its own
family's scheduler (DDIM for the UNet, the pipeline's FlowMatchEulerDiscreteScheduler for SD3), 25 steps, guidance 3,
24 held-out prompts × 16 noises, no style phrase.

    python experiments/bases.py

Each evaluation runs once (`python -m style_tailoring.evaluate`, through the job runner, skipped when done) into
experiments/runs/bases/<family>; the table is experiments/results/bases.md (and .csv), with the per-sample scores in
experiments/results/scores/bases.jsonl.gz. One model per family and no training seed: the ± is the evaluation's own
sampling error (prompts and their samples resampled, 95%), for the judged metrics only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from style_tailoring.analysis import read_sample_scores, sample_bootstrap
from style_tailoring.io import atomic_write_text
from style_tailoring.runtime.jobs import Job, JobRunner, python_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_scores import export_scores  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "sticker_world"
OUT = ROOT / "experiments" / "runs" / "bases"
RESULTS = ROOT / "experiments" / "results"
FAMILIES = {"UNet (base)": ("unet", [f"pipeline={ASSETS / 'base'}"]),
            "SD3 (base_sd3)": ("sd3", [f"pipeline={ASSETS / 'base_sd3'}", "eval.sample.scheduler=null"])}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}
JUDGED = {"alignment": "alignment ↑", "alignment/count": "count ↑", "alignment/colour": "colour ↑",
          "alignment/subject": "shape ↑", "alignment/scene": "scene ↑", "style_score": "style score ↑"}
OTHER = {"layout_diversity": ("layout diversity ↑", 3), "diversity": ("CLIP diversity ↑", 3),
         "clip_score": ("CLIP score ↑", 1), "fid": ("FID matched ↓", 3), "kid": ("KID matched ↓", 4)}


def main() -> None:
    jobs = [Job(name, python_module("style_tailoring.evaluate", *overrides, f"hydra.run.dir={OUT / name}"),
                OUT / name, env=ENV) for name, overrides in FAMILIES.values()]
    results = JobRunner(jobs, workers=1).run()
    if any(r.status not in ("completed", "already complete") for r in results.values()):
        raise SystemExit("an evaluation failed; its log is named above")
    rows = []
    for label, (name, _) in FAMILIES.items():
        metrics = json.loads((OUT / name / "metrics.json").read_text())
        scores = read_sample_scores(OUT / name)
        row = {"model": label}
        for key in JUDGED:
            row[key] = metrics[f"eval/{key}"]
            row[f"{key}/bootstrap95"] = sample_bootstrap([scores], key)
        row.update({key: metrics[f"eval/{key}"] for key in OTHER})
        row["commit"] = metrics.get("provenance/commit")
        rows.append(row)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.round(6).to_csv(RESULTS / "bases.csv", index=False)
    export_scores([(name, None, OUT / name) for name, _ in FAMILIES.values()], RESULTS / "scores" / "bases.jsonl.gz")
    heads = [*JUDGED.values(), *(name for name, _ in OTHER.values())]
    lines = ["The two shipped photo bases on the held-out evaluation (24 prompts × 16 noises, 25 steps, guidance 3, "
             "each family's own scheduler, no style phrase). One model each: ± is the evaluation's sampling error "
             "(prompts and samples resampled, 95%), judged metrics only. Made by `python experiments/bases.py`.", "",
             "| model | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for r in rows:
        cells = [f"{r[k]:.3f} ± {r[f'{k}/bootstrap95']:.3f}" for k in JUDGED]
        cells += [f"{r[k]:.{d}f}" for k, (_, d) in OTHER.items()]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    atomic_write_text(RESULTS / "bases.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
