"""The confirmatory study's analysis, exactly as experiments/protocol.md fixed it before the runs.

    python experiments/confirmatory_summary.py [--runs DIR] [--out experiments/results]

It first gathers the runs' committed records, experiments/results/records/confirmatory (experiments/records.py;
or, with --runs experiments/runs/confirmatory, the run directories themselves): confirmatory_runs.csv (one row per
run, collect's table) and scores/confirmatory.jsonl.gz (every evaluation's per-sample scores). Without either it
reads those two committed files, so the tables can be regenerated anywhere. It writes confirmatory.csv (one row per
pre-registered claim: estimate, 95% t interval, simultaneous 99.5% interval, two-level bootstrap interval, p,
Holm-adjusted p, verdict) and confirmatory.md (the claims, every configuration's means and the matched style
levels).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preregistered import ALIGN, LAYOUT, STYLE, Claim, Design, command_line, summarise  # noqa: E402

ST, SEQ, MIX = "Style Tailoring", "sequential", "mixture"
FRONTS = {ST: ["st650", "st700", "st750", "st800"], SEQ: ["seq300+300", "seq400+200", "seq500+100"],
          MIX: ["mix0.5", "mix0.75", "mix0.9"]}
CLAIMS = [  # experiments/protocol.md's family of ten
    Claim("H1", "alignment, Style Tailoring's front minus sequential's, at matched style", 1, "matched", ALIGN, ST,
          SEQ),
    Claim("H2", "layout diversity, Style Tailoring's front minus sequential's, at H1's matched style", 1, "matched",
          LAYOUT, ST, SEQ),
    Claim("H3", "style score, st750 minus mix0.75", 1, "paired", STYLE, "st750", "mix0.75"),
    Claim("H4", "alignment, Style Tailoring's front minus mixture's, at matched style", 1, "matched", ALIGN, ST, MIX),
    Claim("H5", "style score, seq300+300 minus domain", 1, "paired", STYLE, "seq300+300", "domain"),
    Claim("H6", "alignment, seq300+300 minus domain", -1, "paired", ALIGN, "seq300+300", "domain"),
    Claim("H7", "layout diversity, seq300+300 minus domain", -1, "paired", LAYOUT, "seq300+300", "domain"),
    Claim("H8", "alignment, st750 over prompt engineering, relative change (%)", 1, "relative", ALIGN, "st750",
          "prompt_engineering"),
    Claim("H9", "style score, st750 over prompt engineering, relative change (%)", 1, "relative", STYLE, "st750",
          "prompt_engineering"),
    Claim("H10", "layout diversity, st750 over prompt engineering, relative change (%)", 1, "relative", LAYOUT,
          "st750", "prompt_engineering"),
]
DESIGN = Design(
    name="confirmatory", title="Confirmatory study (pre-registered in experiments/protocol.md)",
    seeds=[1001, 1002, 1003, 1004, 1005], fronts=FRONTS,
    configs=["prompt_engineering", "domain", *FRONTS[ST], *FRONTS[SEQ], *FRONTS[MIX]], claims=CLAIMS,
    made_by="Made by `python experiments/confirmatory.py` (two one-thread workers) and `python "
            "experiments/confirmatory_summary.py`; every number below is recomputed from `confirmatory_runs.csv` "
            "and `scores/confirmatory.jsonl.gz`.",
    budget="600 steps of batch 32 per finetune; 24 held-out prompts × 16 noises, guidance 3.",
    claims_note="Holm-adjusted over the family of ten. holds / fails: adjusted p < 0.05 with the predicted / the "
                "opposite sign; not resolved otherwise. Intervals: 95% t over the five seeds, simultaneous "
                "(Bonferroni 99.5%), and the two-level bootstrap (training seed × prompt, 95%), which for H8–H10 "
                "carries prompt engineering's own sampling error and is their test.",
    levels_of=("H1", "H4"))


def main(argv=None) -> None:
    summarise(DESIGN, command_line(DESIGN, __doc__, argv))


if __name__ == "__main__":
    main()
