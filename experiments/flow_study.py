"""Style Tailoring on the SD3-family world base (experiments/flow_protocol.md, pre-registered): its runs, through the
repository's job runner.

    python experiments/flow_study.py [--workers 2] [--dry-run]

Per fresh training seed (2001-2003): the domain finetune from the SD3 base, then from that domain model Style
Tailoring at t_split 500 / 650 / 800 and 650 with a soft split (width 100), sequential 300+300 and mixture at style
share 0.65; and prompt engineering once. Every run is 600 steps of batch 32 and evaluates itself at its end (24
held-out prompts x 16 noises, the pipeline's own flow-matching scheduler). Runs go to
experiments/runs/flow_study/<config>/seed<k>; each completed run leaves a committed record
(experiments/results/records/flow_study, experiments/records.py), so a study cut short goes on from its records
in a fresh clone; a recorded domain model is trained again only while a finetune of it still has no record.
Summarised by experiments/flow_study_summary.py (experiments/results/flow_study.{csv,md}).
"""

from __future__ import annotations

import sys
from pathlib import Path

from style_tailoring.runtime.jobs import Job

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import Records, finetune_study, run_study  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "runs" / "flow_study"
RECORDS = Records("flow_study", OUT)
SEEDS = (2001, 2002, 2003)
COMMON = ["model=sticker_world_sd3", "eval.sample.scheduler=null", "logger=csv", "trainer.enable_progress_bar=false",
          "trainer.max_steps=600", "data.batch_size=32"]
FINETUNES = {  # name: overrides of a finetune from the seed's domain model
    "st500": ["strategy=style_tailoring", "strategy.t_split=500"],
    "st650": ["strategy=style_tailoring", "strategy.t_split=650"],
    "st800": ["strategy=style_tailoring", "strategy.t_split=800"],
    "st650soft": ["strategy=style_tailoring", "strategy.t_split=650", "strategy.split_width=100"],
    "seq300+300": ["strategy=sequential", "strategy.stage_steps=[300,300]"],
    "mix0.65": ["strategy=mixture", "data.mixture=0.65"],
}
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}


def jobs() -> list[Job]:
    return finetune_study(RECORDS, COMMON, SEEDS, FINETUNES, ENV)


def main(argv=None) -> None:
    run_study(jobs(), RECORDS, argv, __doc__)


if __name__ == "__main__":
    main()
