"""The LightningDataModule: opens the plan's named sources once and serves the routed stream from the trainer's step."""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader

from style_tailoring.config import ConfigError, data_sources, encodes_text_live
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.data.images import parse_background
from style_tailoring.data.routed import RoutedStream
from style_tailoring.data.shards import ShardStream, is_shard_dir
from style_tailoring.plan import Plan

log = logging.getLogger(__name__)


def open_source(name: str, source: dict, data_cfg, resolution: int, frames: int = 0):
    """The source `name` ({"dir", "caption", "streaming"}) as a random-access folder or `datasets` data set, or a
    streaming reader (tar shards; a `datasets` source with streaming); `frames` > 0: a source of clips (animated
    images) for an animation model."""
    from style_tailoring.data.hf import DatasetsSource, DatasetsStream, is_datasets_dir

    root = source["dir"]
    asks_stream = bool(source.get("streaming"))
    if is_shard_dir(root):
        cls = ShardStream
    elif is_datasets_dir(root):
        cls = DatasetsStream if asks_stream else DatasetsSource
    elif asks_stream:
        raise ConfigError(f"data.sources.{name}.streaming", f"{root} is an imagefolder; streaming reads a Hugging "
                          "Face datasets source (parquet or save_to_disk) or tar shards (python -m "
                          "style_tailoring.data.shards)")
    else:
        cls = ImageCaptionFolder
    streaming = getattr(cls, "streaming", False)
    if streaming and frames:
        raise ConfigError(f"data.sources.{name}.dir", "is read as a stream; clips for an animation model are "
                          "read from a folder or a datasets source without streaming")
    if streaming and data_cfg.cache.enabled:
        raise ConfigError("data.cache.enabled", f"data.sources.{name}.dir is read as a stream "
                          f"({cls.__name__}), which is read uncached; set data.cache.enabled=false")
    return cls(
        root, resolution, center_crop=data_cfg.center_crop, random_flip=data_cfg.random_flip,
        on_bad_sample=data_cfg.on_bad_sample, name=name, caption=source["caption"],
        background=parse_background(data_cfg.background), **({"frames": frames} if frames else {}),
    )


class RoutedDataModule(L.LightningDataModule):
    def __init__(self, data_cfg, plan: Plan, resolution: int, seed: int, cache_root=None, frames: int = 0):
        super().__init__()
        self.cfg, self.plan, self.resolution, self.seed, self.frames = data_cfg, plan, resolution, seed, frames
        self.cache_root = cache_root
        self.sources: dict = {}

    def load_sources(self) -> dict:
        """Scan every source the plan reads (done before any model is built, so bad data fails fast)."""
        configured = data_sources(self.cfg)
        for name in self.plan.sources:
            if name not in self.sources:
                self.sources[name] = open_source(name, configured[name], self.cfg, self.resolution, self.frames)
        return self.sources

    def truncated_captions(self, tokenizer) -> dict[str, int]:
        """Per folder source, how many captions (as trained, template applied) are longer than the tokenizer's
        window and lose their end when encoded (as diffusers' scripts, they train truncated); one warning per
        source that has any. A streaming source's captions are met only as it streams and are not counted."""
        window, counts = tokenizer.model_max_length, {}
        for name, source in self.sources.items():
            if not hasattr(source, "samples"):
                continue
            captions = [source.caption(i) for i in range(len(source.samples))]
            lengths = [len(ids) for ids in tokenizer(captions, truncation=False, verbose=False).input_ids]
            long = [caption for caption, n in zip(captions, lengths) if n > window]
            counts[name] = len(long)
            if long:
                log.warning("data set %r: %d of %d captions are longer than the text encoder's %d tokens and train "
                            "truncated, e.g. %r", name, len(long), len(captions), window, long[0][:300])
        return counts

    def setup(self, stage: str) -> None:
        """Runs on every rank once the process group is up, so the cache can be built by all ranks together."""
        self.load_sources()
        if self.cfg.cache.enabled:
            from style_tailoring.data.cache import CachedSource, build_cache

            trainer = self.trainer
            for name, source in self.sources.items():
                if not isinstance(source, CachedSource):
                    self.sources[name] = build_cache(
                        source, trainer.lightning_module.comps, self.cache_root, device=trainer.strategy.root_device,
                        with_text=self.cfg.cache.text and not encodes_text_live(trainer.lightning_module.cfg),
                        batch_size=self.cfg.cache.batch_size,
                        rank=trainer.global_rank, world=trainer.world_size, barrier=trainer.strategy.barrier,
                    )

    def file_names(self, name: str) -> list[str]:
        """The file behind each item of folder source `name` (a flipped copy is its own item, marked so)."""
        source = self.sources[name]
        folder = getattr(source, "source", source)  # a cached source wraps its folder
        paths = [str(sample.path) for sample in folder.samples]
        return [paths[i % len(paths)] + (" (flipped)" if i >= len(paths) else "") for i in range(len(folder))]

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = RoutedStream(
            self.sources, self.plan, self.cfg.batch_size, self.seed,
            accumulate=trainer.accumulate_grad_batches, rank=trainer.global_rank, world_size=trainer.world_size,
            # By now a resumed trainer has restored its step: continue with the next unseen sample.
            start_step=trainer.global_step, caption_dropout=self.cfg.caption_dropout,
        )
        workers = self.cfg.num_workers
        return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
