"""The flow study's analysis, exactly as experiments/flow_protocol.md fixed it before the runs.

    python experiments/flow_study_summary.py [--runs DIR] [--out experiments/results] [--partial]

It gathers the runs' committed records (experiments/results/records/flow_study, experiments/records.py) into
flow_study_runs.csv and scores/flow_study.jsonl.gz, judges the six claims (paired t over the three training seeds,
Holm) and writes flow_study.csv (one row per claim) and flow_study.md: the claims, the matched style levels, every
configuration's means, the premise's verdict (it transfers if F1 and F3 hold, is contradicted if either fails),
the soft split against the hard one, and the same differences from the UNet's confirmatory study side by side
(different bases and seeds: a description, not a test). Without the records it reads the two committed files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preregistered import (  # noqa: E402
    ALIGN,
    COLUMNS,
    LAYOUT,
    ROOT,
    STYLE,
    Claim,
    Design,
    command_line,
    fmt,
    summarise,
)
from style_tailoring.analysis import paired_t  # noqa: E402

ST, SEQ = "Style Tailoring", "sequential"
FRONTS = {ST: ["st500", "st650", "st800"], SEQ: ["seq300+300"]}
CLAIMS = [  # experiments/flow_protocol.md's family of six
    Claim("F1", "alignment, Style Tailoring's front minus sequential, at sequential's style", 1, "matched", ALIGN,
          ST, SEQ),
    Claim("F2", "layout diversity, Style Tailoring's front minus sequential, at the same level", 1, "matched",
          LAYOUT, ST, SEQ),
    Claim("F3", "style score, st650 minus mix0.65", 1, "paired", STYLE, "st650", "mix0.65"),
    Claim("F4", "style score, seq300+300 minus domain", 1, "paired", STYLE, "seq300+300", "domain"),
    Claim("F5", "alignment, seq300+300 minus domain", -1, "paired", ALIGN, "seq300+300", "domain"),
    Claim("F6", "layout diversity, seq300+300 minus domain", -1, "paired", LAYOUT, "seq300+300", "domain"),
]
DESIGN = Design(
    name="flow_study", title="Style Tailoring on a flow-matching transformer (pre-registered in "
                             "experiments/flow_protocol.md)",
    seeds=[2001, 2002, 2003], fronts=FRONTS,
    configs=["prompt_engineering", "domain", *FRONTS[ST], "st650soft", "seq300+300", "mix0.65"], claims=CLAIMS,
    made_by="Made by `python experiments/flow_study.py` (one-thread workers) and `python "
            "experiments/flow_study_summary.py`; every number below is recomputed from `flow_study_runs.csv` and "
            "`scores/flow_study.jsonl.gz`.",
    budget="the SD3-family world base (`model=sticker_world_sd3`); 600 steps of batch 32 per finetune; 24 held-out "
           "prompts × 16 noises, the pipeline's own flow-matching Euler scheduler, 25 steps, guidance 3.",
    claims_note="Holm-adjusted over the family of six. holds / fails: adjusted p < 0.05 with the predicted / the "
                "opposite sign; not resolved otherwise (with three seeds the tests have little power: not resolved "
                "is not a negation). Intervals: 95% t over the three seeds (the test), simultaneous (Bonferroni "
                "99.17%), and the two-level bootstrap (training seed × prompt, 95%; reported beside, not the test).",
    levels_of=("F1",))
# The UNet confirmatory study's claim asking the same question (experiments/results/confirmatory.csv).
UNET_TWIN = {"F1": "H1", "F2": "H2", "F3": "H3", "F4": "H5", "F5": "H6", "F6": "H7"}


def premise(claims: pd.DataFrame) -> str:
    """The protocol's reading: the premise transfers if F1 and F3 hold, is contradicted if either fails."""
    verdicts = dict(zip(claims["claim"], claims["verdict"]))
    if "pending" in verdicts.values():
        return "pending (incomplete runs)"
    if "fails" in (verdicts["F1"], verdicts["F3"]):
        return "**contradicted** (F1 or F3 fails)"
    if verdicts["F1"] == verdicts["F3"] == "holds":
        return "**transfers** (F1 and F3 hold)"
    return "**not resolved** (neither F1 nor F3 fails, not both hold)"


def soft_minus_hard(table: pd.DataFrame) -> list[str]:
    """st650soft minus st650 on every metric, paired on the seed (mean ± 95% t interval): reported, not tested."""
    done = table[table["status"] == "completed"]
    soft, hard = (done[done["label"] == c].set_index("seed") for c in ("st650soft", "st650"))
    seeds = soft.index.intersection(hard.index)
    lines = ["## The soft split minus the hard one (st650soft − st650, paired on the seed; not tested)", "",
             "| " + " | ".join(name for _, name, _ in COLUMNS) + " | n |", "|" + "---|" * (len(COLUMNS) + 1)]
    if len(seeds) < 2:
        return [*lines, "| " + " | ".join("—" for _ in COLUMNS) + f" | {len(seeds)} |", ""]
    cells = []
    for column, _, decimals in COLUMNS:
        t = paired_t((soft.loc[seeds, column] - hard.loc[seeds, column]).to_numpy(dtype=float))
        cells.append(f"{fmt(t['estimate'], decimals)} ± {t['high'] - t['estimate']:.{decimals}f}")
    return [*lines, "| " + " | ".join(cells) + f" | {len(seeds)} |", ""]


def beside_unet(claims: pd.DataFrame, unet: Path) -> list[str]:
    """Each claim beside the UNet confirmatory study's claim of the same question (a description, not a test)."""
    lines = ["## Beside the UNet's confirmatory study (different bases, seeds and budgets: a description, not a test)",
             "", "| flow claim | estimate [95% t] | verdict | UNet claim | estimate [95% t] | verdict |",
             "|---|---|---|---|---|---|"]
    twins = pd.read_csv(unet).set_index("claim") if unet.is_file() else pd.DataFrame()
    for r in claims.itertuples():
        twin = UNET_TWIN[r.claim]
        mine = f"{fmt(r.estimate)} [{fmt(r.ci95_low)}, {fmt(r.ci95_high)}]"
        if twin in twins.index:
            u = twins.loc[twin]
            theirs = f"{u.estimate:.3f} [{fmt(u.ci95_low)}, {fmt(u.ci95_high)}] | {u.verdict}"
        else:
            theirs = "— | —"
        lines.append(f"| {r.claim} | {mine} | {r.verdict} | {twin} | {theirs} |")
    lines += ["", "F3 and H3 compare the split with the mixture at the same style share, 0.65 here and 0.75 there.", ""]
    return lines


def main(argv=None) -> None:
    args = command_line(DESIGN, __doc__, argv)

    def extra(table: pd.DataFrame, claims: pd.DataFrame) -> list[str]:
        return [f"**The premise (layout at high noise, style at low noise) on the flow family:** {premise(claims)}.",
                "", *soft_minus_hard(table), *beside_unet(claims, ROOT / "experiments" / "results" /
                                                          "confirmatory.csv")]

    summarise(DESIGN, args, extra)


if __name__ == "__main__":
    main()
