"""The routed stream: a plan turned into batches of (image, caption, timestep, source, item, loss weight).

Sample number g of the run (counted over all ranks and micro-batches) is a pure function of (seed, g): its route
(drawn by the routes' shares, or fixed by its position in an exact-composition batch), its item of the route's
source, its timestep in the route's window (drawn with the route's density, data/densities.py) and whether its
caption is dropped. The draws come from a counter-based generator — SplitMix64 of (seed, g, draw) — so a whole
batch is drawn in a few vector operations with no generator state: the stream resumes at the first sample after
the checkpoint's step, on every rank and data-loader worker, in the stage that step belongs to.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from style_tailoring.data.densities import draw_timesteps
from style_tailoring.plan import Plan

_MASK = (1 << 64) - 1
# Which independent draw of a sample a uniform is for.
DRAW_ROUTE, DRAW_ITEM, DRAW_TIMESTEP, DRAW_DROP = range(4)


def _splitmix64(x):
    """SplitMix64's output function (Steele et al. 2014): a bijective mix of 64-bit words, vectorised."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed: int, indices: np.ndarray, draw: int) -> np.ndarray:
    """U[0, 1) per sample index, a pure function of (seed, index, draw)."""
    key = _splitmix64(_splitmix64(np.uint64(seed & _MASK)) ^ np.uint64(draw))
    bits = _splitmix64(np.asarray(indices, dtype=np.uint64) ^ key)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class RoutedStream(IterableDataset):
    def __init__(self, sources: dict, plan: Plan, batch_size: int, seed: int, *, accumulate: int = 1,
                 rank: int = 0, world_size: int = 1, start_step: int = 0, caption_dropout: float = 0.0):
        missing = [s for s in plan.sources if s not in sources]
        if missing:
            raise ValueError(f"the plan reads sources {missing} that were not loaded")
        self.sources, self.plan, self.batch_size, self.seed = sources, plan, batch_size, seed
        self.accumulate, self.rank, self.world_size = accumulate, rank, world_size
        self.start_step, self.caption_dropout = start_step, caption_dropout
        self.source_ids = {name: i for i, name in enumerate(plan.sources)}

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        start = self.start_step * self.accumulate + worker
        streams = self.open_streams(start, worker, workers)
        # Micro-batches are dealt round-robin to workers, which is the order the DataLoader reads them back in.
        for micro in range(start, self.plan.total_steps * self.accumulate, workers):
            yield self.batch(micro, streams)

    def first_index(self, micro: int) -> int:
        """Global index of the first sample of this rank's micro-batch `micro`."""
        return (micro * self.world_size + self.rank) * self.batch_size

    def open_streams(self, start: int, worker: int, workers: int) -> dict:
        """Iterators of the streaming sources for this (rank, worker), past what it read before `start`."""
        names = [name for name, source in self.sources.items() if getattr(source, "streaming", False)]
        if not names:
            return {}
        read = dict.fromkeys(names, 0)
        for micro in range(worker, start, workers):  # replay the route choices, decoding nothing
            stage = self.plan.stage_index(micro // self.accumulate)
            routes = self.plan.stages[stage].routes
            route_ids = self.draw(self.first_index(micro), self.batch_size, stage)[0]
            for route_id, count in zip(*np.unique(route_ids, return_counts=True)):
                if routes[route_id].source in read:
                    read[routes[route_id].source] += int(count)
        consumer, consumers = self.rank * workers + worker, self.world_size * workers
        return {name: self.sources[name].iterate(self.seed, consumer, consumers, skip=read[name]) for name in names}

    def draw(self, first: int, n: int, stage_index: int):
        """(route ids, item indices, timesteps, caption dropped) of samples first..first+n-1 of a stage."""
        stage = self.plan.stages[stage_index]
        routes = stage.routes
        g = np.arange(first, first + n, dtype=np.uint64)
        if stage.exact:  # position → route, the same layout in every batch; what varies is item and timestep
            route_ids = np.repeat(np.arange(len(routes)), stage.route_counts(n))
        else:
            shares = np.cumsum([r.share for r in routes], dtype=np.float64)
            route_ids = np.minimum(np.searchsorted(shares / shares[-1], uniforms(self.seed, g, DRAW_ROUTE),
                                                   side="right"), len(routes) - 1)
        sizes = np.array([len(self.sources[r.source]) for r in routes])[route_ids]
        items = np.minimum((uniforms(self.seed, g, DRAW_ITEM) * sizes).astype(np.int64), sizes - 1)
        u, timesteps = uniforms(self.seed, g, DRAW_TIMESTEP), np.empty(n, dtype=np.int64)
        for route_id, route in enumerate(routes):  # each route's window and density (data/densities.py)
            mine = route_ids == route_id
            timesteps[mine] = draw_timesteps(route.density, route.t_min, route.t_max, u[mine])
        dropped = uniforms(self.seed, g, DRAW_DROP) < self.caption_dropout
        return route_ids, items, timesteps, dropped

    def batch(self, micro: int, streams=None) -> dict:
        stage = self.plan.stage_index(micro // self.accumulate)
        routes = self.plan.stages[stage].routes
        first = self.first_index(micro)
        route_ids, items, timesteps, dropped = self.draw(first, self.batch_size, stage)
        samples = []
        for route_id, item in zip(route_ids.tolist(), items.tolist()):
            source = routes[route_id].source
            stream = (streams or {}).get(source)
            samples.append(next(stream) if stream is not None else self.sources[source][item])
        kinds = {frozenset(sample) for sample in samples}
        if len(kinds) > 1:
            raise ValueError("all sources of a plan must be cached, or none")
        batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if key != "text"}
        batch.update(
            text=["" if drop else s["text"] for s, drop in zip(samples, dropped.tolist())],
            caption_dropped=torch.from_numpy(dropped),
            timesteps=torch.from_numpy(timesteps.astype(np.int64)),
            source=torch.tensor([self.source_ids[routes[r].source] for r in route_ids.tolist()], dtype=torch.long),
            weight=torch.tensor([routes[r].weight for r in route_ids.tolist()], dtype=torch.float32),
            index=torch.arange(first, first + self.batch_size, dtype=torch.long),
            item=torch.from_numpy(items.astype(np.int64)),  # which item of its source (ICO's per-image contexts)
            stage=torch.tensor(stage, dtype=torch.long),
        )
        return batch
