"""Lightning callbacks of a training run: per-stage UNet (transformer) export, evaluation every N steps, a DDP rank's
heartbeat, a step progress bar."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback, TQDMProgressBar

from style_tailoring.io import atomic_dir
from style_tailoring.plan import Plan


class StageExport(Callback):
    """Keeps each stage's UNet (`stages/<k>-<name>/unet`; an SD3 run's `.../transformer`, a LoRA run's `.../lora`)
    when the step counter crosses the stage's end."""

    def __init__(self, plan: Plan, run_dir: Path):
        self.plan, self.run_dir = plan, run_dir
        self.ends = {start + stage.steps: (k, stage.name)
                     for k, (start, stage) in enumerate(zip(plan.stage_starts(), plan.stages))}

    def stage_dir(self, k: int, name: str) -> Path:
        return self.run_dir / "stages" / f"{k + 1}-{name}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        end = self.ends.get(trainer.global_step)
        if end is not None and trainer.is_global_zero and not self.stage_dir(*end).exists():
            folder = "lora" if pl_module.is_lora else pl_module.comps.denoiser_name
            with atomic_dir(self.stage_dir(*end) / folder) as tmp:
                pl_module.save_trained_weights(tmp)


class PeriodicEval(Callback):
    """`eval.every_n_steps`: the run's evaluation during training, every rank sampling its shard."""

    def __init__(self, every: int, evaluate):
        self.every, self.evaluate = every, evaluate  # evaluate(trainer, step) -> None
        self._last = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if not self.every or step % self.every or step == trainer.max_steps or step == self._last:
            return
        self._last = step
        pl_module.denoiser.eval()
        with pl_module.averaged_weights():
            self.evaluate(trainer, step)
        pl_module.denoiser.train()


class Heartbeat(Callback):
    """Under DDP, each rank's sign of life at each phase of each step (runtime/launch.py's progress files), which
    names the rank that stopped answering when a collective times out."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.step = run_dir, 0

    def _beat(self, trainer, phase: int) -> None:
        if trainer.world_size > 1:
            from style_tailoring.runtime.launch import write_progress

            write_progress(self.run_dir, trainer.global_rank, self.step, phase)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.step = trainer.global_step
        self._beat(trainer, 0)

    def on_before_backward(self, trainer, pl_module, loss):
        self._beat(trainer, 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._beat(trainer, 2)


class StepProgressBar(TQDMProgressBar):
    """Optimizer steps out of trainer.max_steps, and the stage of a multi-stage plan.

    The routed stream is one long epoch and a run ends at max_steps (max_epochs=-1), so Lightning's own bars read
    "Epoch 0/-2" and count batches of an epoch of unknown length; this one counts what the run counts.
    """

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan

    def description(self, step: int) -> str:
        if len(self.plan.stages) < 2:
            return "step"
        k = self.plan.stage_index(step)
        return f"stage {k + 1}/{len(self.plan.stages)} {self.plan.stages[k].name}"

    def on_train_epoch_start(self, trainer, *_):  # (not the parent's: it would flash "Epoch 0" first)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.n = bar.initial = trainer.global_step  # a resumed run starts where it stopped
        bar.set_description(self.description(trainer.global_step))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.set_description(self.description(min(step, trainer.max_steps - 1)), refresh=False)
            bar.set_postfix(self.get_metrics(trainer, pl_module))
