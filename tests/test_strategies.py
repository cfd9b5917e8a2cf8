"""Routing invariants of the plans, checked on the real data stream (property-style, with hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from omegaconf import OmegaConf

from style_tailoring.config import RunConfig
from style_tailoring.data.routed import RoutedStream
from style_tailoring.strategies import build_plan, recorded_t_split

T = 1000
N = 2000  # samples per property check


def plan_for(name, **overrides):
    cfg = OmegaConf.structured(RunConfig)
    cfg.strategy.name = name
    cfg.trainer = {"max_steps": overrides.pop("max_steps", 10)}
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return build_plan(cfg, T)


def draw(plan, n=N, seed=0, stage=0):
    sources = {name: list(range(50)) for name in plan.sources}
    stream = RoutedStream(sources, plan, batch_size=4, seed=seed)
    routes = [stream.route_sample(g, stage) for g in range(n)]
    return [(route.source, item, t) for route, item, t in routes]


def binomial_tolerance(p, n):
    return 5 * np.sqrt(max(p * (1 - p), 1e-4) / n) + 1e-9


@settings(max_examples=25, deadline=None)
@given(t_split=st.integers(1, T - 1), mixture=st.one_of(st.none(), st.floats(0.05, 0.95)))
def test_style_tailoring_routes_timesteps_by_source(t_split, mixture):
    plan = plan_for("style_tailoring", **{"strategy.t_split": t_split, "data.mixture": mixture})
    samples = draw(plan)
    style_t = [t for s, _, t in samples if s == "style"]
    align_t = [t for s, _, t in samples if s == "alignment"]
    assert all(0 <= t < t_split for t in style_t)
    assert all(t_split <= t < T for t in align_t)
    share = t_split / T if mixture is None else mixture
    assert abs(len(style_t) / N - share) <= binomial_tolerance(share, N)


def test_default_share_keeps_timestep_density_uniform():
    samples = draw(plan_for("style_tailoring", **{"strategy.t_split": 300}), n=20000)
    counts, _ = np.histogram([t for _, _, t in samples], bins=10, range=(0, T))
    assert counts.min() > 0.85 * counts.mean() and counts.max() < 1.15 * counts.mean()


@settings(max_examples=15, deadline=None)
@given(mixture=st.floats(0.0, 1.0))
def test_mixture_uses_all_timesteps_for_both_sources(mixture):
    samples = draw(plan_for("mixture", **{"data.mixture": mixture}))
    n_style = sum(s == "style" for s, _, _ in samples)
    assert abs(n_style / N - mixture) <= binomial_tolerance(mixture, N)
    for source in ("style", "alignment"):
        ts = [t for s, _, t in samples if s == source]
        if len(ts) > 200:
            assert min(ts) < 100 and max(ts) >= 900


def test_base_trains_domain_only_over_all_timesteps():
    samples = draw(plan_for("base"))
    assert {s for s, _, _ in samples} == {"domain"}
    assert min(t for *_, t in samples) < 20 and max(t for *_, t in samples) > 980


def test_sequential_stages_follow_the_step_counter():
    plan = plan_for("sequential", max_steps=7, **{"strategy.stages": ["domain", "alignment", "style"]})
    assert [s.steps for s in plan.stages] == [3, 2, 2]
    assert [plan.stage_index(step) for step in range(8)] == [0, 0, 0, 1, 1, 2, 2, 2]
    fake = [{"pixel_values": torch.zeros(1), "text": ""}] * 9
    stream = RoutedStream({n: fake for n in plan.sources}, plan, batch_size=2, seed=0)
    sources = [{plan.sources[i] for i in stream.batch(m)["source"].tolist()} for m in range(7)]
    assert sources == [{"domain"}] * 3 + [{"alignment"}] * 2 + [{"style"}] * 2


def test_stream_resumes_exactly_and_shards_ranks_disjointly():
    plan = plan_for("style_tailoring", max_steps=12, **{"strategy.t_split": 400})
    sources = {n: [{"pixel_values": torch.zeros(1), "text": f"{n}{i}"} for i in range(100)] for n in plan.sources}

    def batches(**kw):
        stream = RoutedStream(sources, plan, batch_size=3, seed=7, **kw)
        return [(b["text"], b["timesteps"].tolist()) for b in stream]

    full = batches()
    assert len(full) == 12 and batches(start_step=5) == full[5:]
    rank0, rank1 = batches(rank=0, world_size=2), batches(rank=1, world_size=2)
    assert rank0 != rank1 and len(rank0) == len(rank1) == 12


def test_unknown_plan_source_is_refused():
    plan = plan_for("base")
    with pytest.raises(ValueError, match="domain"):
        RoutedStream({"style": [1]}, plan, batch_size=1, seed=0)


@pytest.mark.parametrize("name, recorded", [("style_tailoring", 250), ("mixture", None), ("base", None)])
def test_only_a_splitting_strategy_records_its_t_split(name, recorded):
    # A sweep grid strategy=mixture,style_tailoring strategy.t_split=250 sets the split on every job.
    cfg = OmegaConf.structured(RunConfig)
    cfg.strategy.name, cfg.strategy.t_split = name, 250
    assert recorded_t_split(cfg) == recorded
