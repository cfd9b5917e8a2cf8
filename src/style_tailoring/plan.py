"""A training plan: stages in order, each a set of routes (source, timestep window and density, share, loss weight).

Every strategy compiles to a Plan (training/strategies.py); the data stream reads it to decide, per sample, which
source it comes from, which timestep it trains and how much its loss counts; the training step never asks which
strategy is running. Plain data: this module imports nothing from the package.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class Density:
    """How a route draws its timesteps inside its window: `name` (uniform, logit_normal, mode, soft_split; drawn by
    data/densities.py) and its settings as sorted (key, value) pairs, so a density is hashable plain data."""

    name: str = "uniform"
    settings: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, name: str, **settings) -> "Density":
        return cls(name, tuple(sorted(settings.items())))

    def get(self, key: str):
        return dict(self.settings)[key]

    def describe(self) -> dict:
        return {"name": self.name, **dict(self.settings)}

    def label(self) -> str:
        """`soft_split (side=below, t_split=500, width=100)`: the name and its settings, for the model card."""
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.settings)
        return f"{self.name} ({settings})" if settings else self.name


UNIFORM = Density()


@dataclass(frozen=True)
class Route:
    """Samples of `source` train timesteps in [t_min, t_max), drawn with `density` (uniform by default), make up
    `share` of the stage's batches, and their loss is multiplied by `weight`."""

    source: str
    t_min: int
    t_max: int
    share: float
    weight: float = 1.0
    density: Density = UNIFORM

    def describe(self) -> dict:
        """The route as plain data; the density only when it is not uniform, so a plan of uniform routes reads as
        it did before densities existed (and its checkpoints resume)."""
        described = {"source": self.source, "t_min": self.t_min, "t_max": self.t_max, "share": self.share,
                     "weight": self.weight}
        return described if self.density == UNIFORM else {**described, "density": self.density.describe()}


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    routes: tuple[Route, ...]
    # True: every batch holds exactly round(share x batch) samples of each route; False: shares in expectation.
    exact: bool = False

    def route_counts(self, batch_size: int) -> list[int]:
        """Samples per route in an exact batch: round(share x batch) by largest remainder, so they sum to the batch.
        Ties go to the earlier route."""
        total = sum(r.share for r in self.routes)
        quotas = [r.share / total * batch_size for r in self.routes]
        counts = [int(q) for q in quotas]
        by_remainder = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
        for i in by_remainder[: batch_size - sum(counts)]:
            counts[i] += 1
        return counts


@dataclass(frozen=True)
class Plan:
    stages: tuple[Stage, ...]

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source the plan reads, in order of first use (the index space of the batch's `source` ids)."""
        seen: dict[str, None] = {}
        for stage in self.stages:
            for route in stage.routes:
                seen.setdefault(route.source, None)
        return tuple(seen)

    def stage_starts(self) -> list[int]:
        starts, step = [], 0
        for stage in self.stages:
            starts.append(step)
            step += stage.steps
        return starts

    def stage_index(self, step: int) -> int:
        """The stage that optimizer step `step` belongs to (the last stage past the end)."""
        return min(bisect.bisect_right(self.stage_starts(), step) - 1, len(self.stages) - 1)

    def describe(self) -> list[dict]:
        return [{"stage": s.name, "steps": s.steps, "exact": s.exact, "routes": [r.describe() for r in s.routes]}
                for s in self.stages]
