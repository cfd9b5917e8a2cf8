"""The routed stream: a strategy's plan turned into batches of (image, caption, timestep, source).

Sample number g of the run (counted over all ranks and micro-batches) is a pure function of (seed, g): a
per-sample generator picks the route by its share, an item of the route's source, and a timestep in the route's
range. So the stream needs no state to resume: it starts at the first sample after the checkpoint's step, on every
rank and data-loader worker, in the stage that step belongs to.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from style_tailoring.strategies import Plan


class RoutedStream(IterableDataset):
    def __init__(self, sources: dict, plan: Plan, batch_size: int, seed: int, *, accumulate: int = 1,
                 rank: int = 0, world_size: int = 1, start_step: int = 0):
        missing = [s for s in plan.sources if s not in sources]
        if missing:
            raise ValueError(f"the plan reads sources {missing} that were not loaded")
        self.sources, self.plan, self.batch_size, self.seed = sources, plan, batch_size, seed
        self.accumulate, self.rank, self.world_size = accumulate, rank, world_size
        self.start_step = start_step
        self.source_ids = {name: i for i, name in enumerate(plan.sources)}

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        start = self.start_step * self.accumulate + worker
        streams = self.open_streams(start, worker, workers)
        # Micro-batches are dealt round-robin to workers, which is the order the DataLoader reads them back in.
        for micro in range(start, self.plan.total_steps * self.accumulate, workers):
            yield self.batch(micro, streams)

    def open_streams(self, start: int, worker: int, workers: int) -> dict:
        """Iterators of the streaming sources for this (rank, worker), past what it read before `start`."""
        names = [name for name, source in self.sources.items() if getattr(source, "streaming", False)]
        if not names:
            return {}
        read = dict.fromkeys(names, 0)
        for micro in range(worker, start, workers):  # replay the route choices, decoding nothing
            stage = self.plan.stage_index(micro // self.accumulate)
            first = (micro * self.world_size + self.rank) * self.batch_size
            for g in range(first, first + self.batch_size):
                source = self.route_sample(g, stage)[0].source
                if source in read:
                    read[source] += 1
        consumer, consumers = self.rank * workers + worker, self.world_size * workers
        return {name: self.sources[name].iterate(self.seed, consumer, consumers, skip=read[name]) for name in names}

    def route_sample(self, global_index: int, stage_index: int):
        """(route, item index, timestep) of one sample: deterministic in (seed, global_index)."""
        rng = np.random.default_rng((self.seed, global_index))
        routes = self.plan.stages[stage_index].routes
        shares = np.array([r.share for r in routes], dtype=np.float64)
        route = routes[rng.choice(len(routes), p=shares / shares.sum())]
        item = int(rng.integers(len(self.sources[route.source])))
        timestep = int(rng.integers(route.t_min, route.t_max))
        return route, item, timestep

    def batch(self, micro: int, streams=None) -> dict:
        stage = self.plan.stage_index(micro // self.accumulate)
        first = (micro * self.world_size + self.rank) * self.batch_size
        items, timesteps, source_ids = [], [], []
        for g in range(first, first + self.batch_size):
            route, item, timestep = self.route_sample(g, stage)
            stream = (streams or {}).get(route.source)
            items.append(next(stream) if stream is not None else self.sources[route.source][item])
            timesteps.append(timestep)
            source_ids.append(self.source_ids[route.source])
        kinds = {frozenset(item) for item in items}
        if len(kinds) > 1:
            raise ValueError("all sources of a plan must be cached, or none")
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "text"}
        batch.update(
            text=[item["text"] for item in items],
            timesteps=torch.tensor(timesteps, dtype=torch.long),
            source=torch.tensor(source_ids, dtype=torch.long),
            stage=torch.tensor(stage, dtype=torch.long),
        )
        return batch
