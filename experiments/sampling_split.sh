#!/usr/bin/env bash
# Timestep splitting at sampling time vs at training time, on the Sticker World (the README's "Sampling-time
# splitting" section; ~45 min on 2 CPU cores, venv active). Same budget for every model: 600 steps of batch 32.
#   train time:    Style Tailoring at each split, each seed
#   sampling time: one sequential run per seed (alignment 300 steps, then style 300); its stage-1 UNet denoises
#                  t >= t_switch, its stage-2 UNet t < t_switch (eval/sampler=timestep_split), at each split
#   DCI:           the sequential run's final (style) model with the style phrase as the concept, and the same
#                  model and prompts sampled plainly as its control
# Re-running it skips every step whose metrics.json is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-600}
SEEDS=${SEEDS:-0,1,2}
SPLITS=${SPLITS:-250,500,750}
OUT=${OUT:-experiments/runs/sampling_split}
n_seeds=$(tr ',' '\n' <<< "$SEEDS" | wc -l)
n_splits=$(tr ',' '\n' <<< "$SPLITS" | wc -l)
done_in() { find "$1" -name metrics.json 2>/dev/null | wc -l; }

if [ "$(done_in "$OUT/train_time")" -lt $((n_seeds * n_splits)) ]; then
  python -m style_tailoring.train -m logger=csv trainer.max_steps=$STEPS hydra.sweep.dir=$OUT/train_time \
      'hydra.sweep.subdir=t${strategy.t_split}_seed${seed}' strategy=style_tailoring strategy.t_split=$SPLITS \
      seed=$SEEDS
fi
if [ "$(done_in "$OUT/sequential")" -lt "$n_seeds" ]; then
  python -m style_tailoring.train -m logger=csv trainer.max_steps=$STEPS hydra.sweep.dir=$OUT/sequential \
      'hydra.sweep.subdir=seed${seed}' strategy=sequential seed=$SEEDS
fi
evaluate() {  # evaluate OUT_DIR [overrides...]: skipped when done
  local dir=$1; shift
  [ -f "$dir/metrics.json" ] || python -m style_tailoring.evaluate "$@" hydra.run.dir="$dir"
}
for run in "$OUT"/sequential/seed*; do
  seed=${run##*seed}
  for t in ${SPLITS//,/ }; do
    evaluate "$OUT/sampling_time/t${t}_seed$seed" pipeline="$run/pipeline" unet="$run/stages/1-alignment/unet" \
        eval/sampler=timestep_split eval.sampler.t_switch="$t" eval.sampler.late_unet="$run/stages/2-style/unet"
  done
  evaluate "$OUT/dci/seed$seed" pipeline="$run/pipeline" eval/sampler=dci eval.sampler.concept=sticker \
      "eval.prompt_suffix=', sticker'"
  evaluate "$OUT/dci_control/seed$seed" pipeline="$run/pipeline" "eval.prompt_suffix=', sticker'"
done
python -m style_tailoring.collect "sweep_dir=$OUT" out=experiments/results/sampling_split.csv
