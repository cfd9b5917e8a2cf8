#!/usr/bin/env bash
# The Sticker World comparison behind the README's results table (CPU, ~25 min on 2 cores):
# every strategy, then Style Tailoring at two more splits; collected into experiments/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
OUT=${OUT:-experiments/runs/world_comparison}
python -m style_tailoring.train -m logger=csv trainer.max_steps=$STEPS hydra.sweep.dir=$OUT/strategies \
    strategy=prompt_engineering,base,alignment_only,sequential,mixture,style_tailoring
python -m style_tailoring.train -m logger=csv trainer.max_steps=$STEPS hydra.sweep.dir=$OUT/t_split \
    strategy=style_tailoring strategy.t_split=250,750
python -m style_tailoring.collect sweep_dir=$OUT out=experiments/results/table.csv
ABLATION_TABLE=$PWD/experiments/results/table.csv ABLATION_FIGURES=$PWD/experiments/results/figures \
    jupyter execute notebooks/ablations.ipynb
