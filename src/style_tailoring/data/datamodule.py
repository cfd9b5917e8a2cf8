"""The LightningDataModule: loads the plan's sources once and serves the routed stream from the trainer's step."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.data.routed import RoutedStream
from style_tailoring.strategies import Plan


class RoutedDataModule(L.LightningDataModule):
    def __init__(self, data_cfg, plan: Plan, resolution: int, seed: int):
        super().__init__()
        self.cfg, self.plan, self.resolution, self.seed = data_cfg, plan, resolution, seed
        self.sources: dict[str, ImageCaptionFolder] = {}

    def load_sources(self) -> dict[str, ImageCaptionFolder]:
        """Scan every source the plan reads (done before any model is built, so bad data fails fast)."""
        for name in self.plan.sources:
            if name not in self.sources:
                self.sources[name] = ImageCaptionFolder(
                    self.cfg[f"{name}_dir"], self.resolution, center_crop=self.cfg.center_crop,
                    random_flip=self.cfg.random_flip, on_bad_sample=self.cfg.on_bad_sample, name=name,
                )
        return self.sources

    def setup(self, stage: str) -> None:
        self.load_sources()

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = RoutedStream(
            self.sources, self.plan, self.cfg.batch_size, self.seed,
            accumulate=trainer.accumulate_grad_batches, rank=trainer.global_rank, world_size=trainer.world_size,
            # By now a resumed trainer has restored its step: continue with the next unseen sample.
            start_step=trainer.global_step,
        )
        workers = self.cfg.num_workers
        return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
