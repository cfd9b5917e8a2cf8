"""Train one strategy: `python -m style_tailoring.train [hydra overrides]` (the run itself: training/run.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from style_tailoring.cli import group_spelling
from style_tailoring.config import to_run_config
from style_tailoring.io import update_json
from style_tailoring.training.run import EvaluationFailed, run

log = logging.getLogger("style_tailoring.train")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(to_run_config(cfg))
    except Exception as err:
        if not isinstance(err, EvaluationFailed):  # that one already wrote its own status: trained, eval failed
            # Recorded where the collector looks; in a multirun the other jobs go on (Hydra would stop the sweep).
            update_json(run_dir / "metrics.json", {"status": "failed", "error": f"{type(err).__name__}: {err}"})
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        log.exception("job failed; the sweep continues")
        return None
    return metrics.get("eval/alignment")


if __name__ == "__main__":
    group_spelling()  # eval.sampler=NAME works like eval/sampler=NAME, settings after it included
    main()
