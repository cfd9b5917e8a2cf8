"""Lightning callbacks of a training run: per-stage UNet (transformer) export, evaluation every N steps, a DDP rank's
heartbeat, each rank's peak memory, a step progress bar."""

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
        self.done: set[int] = set()

    def stage_dir(self, k: int, name: str) -> Path:
        return self.run_dir / "stages" / f"{k + 1}-{name}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        end = self.ends.get(step)
        # Once per stage end (accumulated micro-batches share the step). Decided from the step alone, the same on
        # every rank: under FSDP they all gather the weights, so none may skip because of what rank 0 wrote.
        if end is None or step in self.done:
            return
        self.done.add(step)
        with pl_module.whole_denoiser(everywhere=False):  # (FSDP: gathered by all, kept by rank 0, which writes)
            if trainer.is_global_zero and not self.stage_dir(*end).exists():
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
        with pl_module.averaged_weights(), pl_module.whole_denoiser():  # (FSDP: a whole copy, every rank)
            pl_module.denoiser.eval()
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


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), in MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


class PeakMemory(Callback):
    """Each rank's peak memory in MB, gathered on every rank into `per_rank` (kind -> one number per rank): what one
    rank needed, the number that sets DDP and FSDP apart (experiments/fsdp_memory.py). Resident high-water marks:
    `rss_setup` before the strategy set the model up (libraries, the whole model built, the latent cache), the level
    the training state comes on top of; `rss_steps` when the last training step ended, before its checkpoint
    (Lightning runs checkpoint callbacks after this one), so with checkpoint.every_n_steps >= trainer.max_steps the
    training state without any checkpoint; `rss_fit` at the end of fit, checkpoints included (consolidating one costs
    rank 0 the whole model and its AdamW moments under FSDP too). On a GPU also `gpu`, torch's peak allocation."""

    def __init__(self):
        self.per_rank: dict[str, list[float]] = {}
        self._setup = self._steps = 0.0

    def setup(self, trainer, pl_module, stage):  # (before configure_model shards anything)
        self._setup = peak_rss_mb()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._steps = peak_rss_mb()

    def on_train_end(self, trainer, pl_module):
        import torch

        # (no step ran in this process, e.g. resumed at its last step: no steps' peak; the same on every rank)
        peaks = {"rss_setup": self._setup, **({"rss_steps": self._steps} if self._steps else {})}
        peaks["rss_fit"] = peak_rss_mb()
        if pl_module.device.type == "cuda":
            peaks["gpu"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        local = torch.tensor(list(peaks.values()), dtype=torch.float64, device=pl_module.device)
        gathered = trainer.strategy.all_gather(local).reshape(-1, len(peaks)) if trainer.world_size > 1 \
            else local.reshape(1, -1)
        self.per_rank = {kind: [round(float(mb), 1) for mb in gathered[:, i].tolist()]
                         for i, kind in enumerate(peaks)}


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
