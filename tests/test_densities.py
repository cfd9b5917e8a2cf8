"""Per-route timestep densities (data/densities.py), checked on the real routed stream against their analytic CDFs.

Each density draws N samples with a fixed seed; the Kolmogorov–Smirnov distance between their empirical CDF and the
density's exact CDF over the window's integer timesteps must stay under KS_TOL = 1.95 / √N, the two-sided 0.1%
critical value of a continuous distribution (conservative for a discrete one). The draws are a fixed function of the
seed, so each test is deterministic; the tolerance says how far off a correct sampler could plausibly land.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats
from scipy.special import expit, ndtr

from style_tailoring.config import ConfigError, RunConfig
from style_tailoring.data.densities import MODE_SCALE_RANGE, unit_draws
from style_tailoring.data.routed import DRAW_TIMESTEP, RoutedStream, uniforms
from style_tailoring.plan import UNIFORM, Density
from style_tailoring.training.strategies import Custom, StyleTailoring, build_plan, strategy_node

T = 1000
N = 200_000
KS_TOL = 1.95 / math.sqrt(N)  # ≈ 0.0044


def config(name, max_steps=10, **settings):
    cfg = OmegaConf.structured(RunConfig)
    cfg.strategy = strategy_node(name, **settings)
    cfg.trainer = {"max_steps": max_steps}
    return cfg


def custom_plan(*routes, max_steps=10):
    return build_plan(config("custom", max_steps, plan=[{"name": "s", "routes": list(routes)}]), T)


def draws(plan, n=N, seed=0):
    """(source names, timesteps) of the first n samples of the plan's first stage."""
    stream = RoutedStream({name: list(range(10)) for name in plan.sources}, plan, batch_size=4, seed=seed)
    route_ids, _, timesteps, _ = stream.draw(0, n, 0)
    names = np.array([r.source for r in plan.stages[0].routes])[route_ids]
    return names, timesteps


def ks(timesteps, t_min, cdf):
    """Max |empirical - exact| CDF over the window's timesteps; cdf[k] = P(t <= t_min + k)."""
    counts = np.bincount(timesteps - t_min, minlength=len(cdf))
    assert len(counts) == len(cdf), "a draw lies above the window"
    return float(np.abs(np.cumsum(counts) / len(timesteps) - cdf).max())


def window_cdf(u_cdf, t_min, t_max):
    """The integer-timestep CDF of t = t_min + min(floor(u·W), W-1) from the CDF of u in [0, 1]."""
    width = t_max - t_min
    edges = np.arange(1, width + 1) / width  # t <= t_min + k  <=>  u < (k + 1) / W
    cdf = u_cdf(edges)
    cdf[-1] = 1.0
    return cdf


def logit_normal_cdf(mean, std):
    def cdf(x):
        with np.errstate(divide="ignore"):
            return ndtr((np.log(x) - np.log1p(-x) - mean) / std)
    return cdf


def mode_cdf(scale):
    """P(f(U) <= x) = 1 - f⁻¹(x) for SD3's decreasing mode map f, inverted on a fine grid."""
    grid = np.linspace(0.0, 1.0, 2_000_001)
    f = 1 - grid - scale * (np.cos(np.pi * grid / 2) ** 2 - 1 + grid)
    return lambda x: 1.0 - np.interp(x, f[::-1], grid[::-1])


def soft_split_pmf(t_split, width, side, t_min=0, t_max=T):
    """The soft split's density written out: P(t) ∝ σ((t_split - 1/2 - t) / width) below, σ(-(...)) above."""
    t = np.arange(t_min, t_max)
    below = expit((t_split - 0.5 - t) / width)
    weights = below if side == "below" else 1.0 - below
    return weights / weights.sum()


# -- the default is unchanged ----------------------------------------------------------------------------------------

def test_the_default_density_is_the_uniform_draw_of_before_and_leaves_plans_as_they_were():
    plan = custom_plan({"source": "a", "t_min": 10, "t_max": 333}, {"source": "b", "share": 0.3})
    assert all(r.density == UNIFORM for r in plan.stages[0].routes)
    assert all("density" not in r for r in plan.describe()[0]["routes"])  # checkpoints of before still resume
    names, timesteps = draws(plan, n=50_000, seed=11)
    # the formula the stream used before densities existed, on the same counter-based uniforms
    u = uniforms(11, np.arange(50_000, dtype=np.uint64), DRAW_TIMESTEP)
    t_min = np.where(names == "a", 10, 0)
    width = np.where(names == "a", 323, T)
    assert np.array_equal(timesteps, t_min + np.minimum((u * width).astype(np.int64), width - 1))
    hard = build_plan(config("style_tailoring", t_split=300), T)  # split_width 0: the hard split of before
    assert [(r.source, r.t_min, r.t_max, r.share, r.density) for r in hard.stages[0].routes] == [
        ("alignment", 300, T, 0.7, UNIFORM), ("style", 0, 300, 0.3, UNIFORM)]


# -- SD3's densities ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mean, std, t_min, t_max", [(0.0, 1.0, 0, T), (0.5, 0.8, 0, T), (-1.0, 1.5, 200, 700)])
def test_logit_normal_draws_follow_its_cdf_inside_the_window(mean, std, t_min, t_max):
    density = {"name": "logit_normal", "logit_mean": mean, "logit_std": std}
    _, timesteps = draws(custom_plan({"source": "a", "t_min": t_min, "t_max": t_max, "density": density}))
    assert timesteps.min() >= t_min and timesteps.max() < t_max
    d = ks(timesteps, t_min, window_cdf(logit_normal_cdf(mean, std), t_min, t_max))
    assert d < KS_TOL, f"KS {d:.5f}"
    uniform = np.arange(1, t_max - t_min + 1) / (t_max - t_min)
    assert ks(timesteps, t_min, uniform) > 10 * KS_TOL  # the test can tell it from the uniform density
    if mean > 0:  # the paper's convention: a positive mean shifts the draws towards noise (high t)
        assert np.median(timesteps) > (t_min + t_max) / 2


@pytest.mark.parametrize("scale, t_min, t_max", [(1.29, 0, T), (-0.8, 0, T), (MODE_SCALE_RANGE[1], 100, 900)])
def test_mode_draws_follow_its_cdf_inside_the_window(scale, t_min, t_max):
    _, timesteps = draws(custom_plan({"source": "a", "t_min": t_min, "t_max": t_max,
                                      "density": {"name": "mode", "mode_scale": scale}}))
    assert timesteps.min() >= t_min and timesteps.max() < t_max
    d = ks(timesteps, t_min, window_cdf(mode_cdf(scale), t_min, t_max))
    assert d < KS_TOL, f"KS {d:.5f}"
    assert ks(timesteps, t_min, np.arange(1, t_max - t_min + 1) / (t_max - t_min)) > 10 * KS_TOL


def test_the_sd3_densities_are_diffusers_own():
    """mode: diffusers' map of a uniform, value for value; logit_normal: the same distribution as diffusers' draws
    (two-sample KS on u in [0, 1])."""
    from diffusers.training_utils import compute_density_for_timestep_sampling as diffusers_density

    n = 100_000
    reference = diffusers_density("mode", n, mode_scale=1.29, generator=torch.Generator().manual_seed(0))
    same_uniforms = torch.rand(n, generator=torch.Generator().manual_seed(0)).double().numpy()
    ours = unit_draws(Density.of("mode", mode_scale=1.29), same_uniforms)
    assert np.allclose(ours, reference.double().numpy(), atol=1e-6)
    u = uniforms(0, np.arange(n, dtype=np.uint64), DRAW_TIMESTEP)
    for settings in ({"logit_mean": 0.0, "logit_std": 1.0}, {"logit_mean": 0.7, "logit_std": 0.5}):
        reference = diffusers_density("logit_normal", n, **settings, generator=torch.Generator().manual_seed(1))
        ours = unit_draws(Density.of("logit_normal", **settings), u)
        result = stats.ks_2samp(ours, reference.double().numpy())
        assert result.statistic < 1.95 * math.sqrt(2 / n), result  # two-sample 0.1% critical value


# -- the soft split -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t_split, width", [(500, 100), (300, 40), (850, 120)])
def test_soft_split_routes_follow_the_ramp_overlap_around_t_split_and_sum_to_uniform(t_split, width):
    plan = build_plan(config("style_tailoring", t_split=t_split, split_width=width), T)
    routes = {r.source: r for r in plan.stages[0].routes}
    assert all((r.t_min, r.t_max) == (0, T) for r in routes.values())
    names, timesteps = draws(plan)
    assert timesteps.min() >= 0 and timesteps.max() < T
    for source, side in (("style", "below"), ("alignment", "above")):
        mine = timesteps[names == source]
        d = ks(mine, 0, np.cumsum(soft_split_pmf(t_split, width, side)))
        assert d < 1.95 / math.sqrt(len(mine)), f"{source}: KS {d:.5f}"
    # the default style share is the ramp's mass / T, so that the two routes together are uniform over [0, T)
    mass = expit((t_split - 0.5 - np.arange(T)) / width).sum()
    assert routes["style"].share == pytest.approx(mass / T) and routes["alignment"].share == pytest.approx(1 - mass / T)
    d = ks(timesteps, 0, np.arange(1, T + 1) / T)
    assert d < KS_TOL, f"combined KS {d:.5f}"
    counts = np.bincount(timesteps // 50, minlength=T // 50)
    assert np.abs(counts / N * (T // 50) - 1).max() < 0.05  # every 50-step bin within 5% of uniform
    # they overlap around the split: near t_split both sources train, each in proportion to the ramp
    near = np.abs(timesteps - (t_split - 0.5)) < width
    style_near = (names[near] == "style").mean()
    assert 0.35 < style_near < 0.65 and near.sum() > 0.1 * N * width / T
    for lo in range(max(0, t_split - 2 * width), min(T, t_split + 2 * width) - width // 2, width // 2):
        in_bin = (timesteps >= lo) & (timesteps < lo + width // 2)
        expected = expit((t_split - 0.5 - np.arange(lo, lo + width // 2)) / width).mean()  # P(style | t)
        p = (names[in_bin] == "style").mean()
        assert abs(p - expected) < 5 * math.sqrt(expected * (1 - expected) / in_bin.sum()) + 1e-3
    assert (timesteps[names == "style"] >= t_split).any() and (timesteps[names == "alignment"] < t_split).any()


def test_a_narrow_soft_split_is_the_hard_split():
    names, timesteps = draws(build_plan(config("style_tailoring", t_split=400, split_width=1e-3), T), n=20_000)
    assert (timesteps[names == "style"] < 400).all() and (timesteps[names == "alignment"] >= 400).all()
    # a window far on the other side of a narrow ramp: its mass on the timestep nearest t_split
    density = {"name": "soft_split", "t_split": 500, "width": 1e-3, "side": "above"}
    _, timesteps = draws(custom_plan({"source": "a", "t_max": 300, "density": density}), n=1000)
    assert (timesteps == 299).all()


def test_a_soft_split_route_of_a_custom_plan_keeps_to_its_window():
    density = {"name": "soft_split", "t_split": 500, "width": 80, "side": "above"}
    _, timesteps = draws(custom_plan({"source": "a", "t_min": 100, "t_max": 600, "density": density}))
    assert timesteps.min() >= 100 and timesteps.max() < 600
    d = ks(timesteps, 100, np.cumsum(soft_split_pmf(500, 80, "above", 100, 600)))
    assert d < KS_TOL, f"KS {d:.5f}"


# -- exactness: resume and ranks ------------------------------------------------------------------------------------

def test_density_draws_resume_exactly_and_split_over_ranks_as_one_process():
    """A sample's timestep is a pure function of (seed, index) under every density: a stream resumed at step 5 is
    the uninterrupted one, and two ranks of batch 3 are one process of batch 6."""
    routes = [{"source": "a", "density": "logit_normal"}, {"source": "b", "density": {"name": "mode"}},
              {"source": "c", "t_min": 50, "density": {"name": "soft_split", "t_split": 300, "width": 60}}]
    plan = custom_plan(*routes, max_steps=12)
    assert [r.density.name for r in plan.stages[0].routes] == ["logit_normal", "mode", "soft_split"]
    sources = {n: [{"pixel_values": torch.zeros(1), "text": f"{n}{i}"} for i in range(20)] for n in plan.sources}

    def batches(**kw):
        stream = RoutedStream(sources, plan, seed=3, **{"batch_size": 3, **kw})
        return [(b["index"].tolist(), b["text"], b["timesteps"].tolist()) for b in stream]

    full = batches()
    assert batches(start_step=5) == full[5:]
    single, rank0, rank1 = batches(batch_size=6), batches(rank=0, world_size=2), batches(rank=1, world_size=2)
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        assert single[step] == (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def test_a_density_is_part_of_the_plan_a_checkpoint_must_match():
    hard = build_plan(config("style_tailoring", t_split=500), T).describe()
    soft = build_plan(config("style_tailoring", t_split=500, split_width=50), T).describe()
    assert hard != soft and soft[0]["routes"][1]["density"] == {"name": "soft_split", "side": "below",
                                                                "t_split": 500, "width": 50.0}
    assert Density.of("soft_split", t_split=500, width=50.0, side="below").label() == \
        "soft_split (side=below, t_split=500, width=50)"


# -- config: the command line and bad values ------------------------------------------------------------------------

def test_densities_are_chosen_from_the_command_line(tmp_path):
    from test_strategies import compose_run

    cfg = compose_run(tmp_path, "strategy=style_tailoring", "strategy.t_split=400", "strategy.split_width=100")
    assert [(r.source, r.density.name, r.density.get("side")) for r in build_plan(cfg, T).stages[0].routes] == [
        ("alignment", "soft_split", "above"), ("style", "soft_split", "below")]
    cfg = compose_run(tmp_path, "strategy=custom", "+data.sources.a.dir=/a", "+data.sources.b.dir=/b",
                      "strategy.plan=[{name: s, routes: [{source: a, density: logit_normal}, "
                      "{source: b, t_max: 500, density: {name: mode, mode_scale: 0.5}}]}]")
    Custom.check(cfg, T)
    assert [r.density for r in build_plan(cfg, T).stages[0].routes] == [
        Density.of("logit_normal", logit_mean=0.0, logit_std=1.0), Density.of("mode", mode_scale=0.5)]


ROUTE = "strategy.plan.0.routes.0.density"


@pytest.mark.parametrize("density, key", [
    ("gaussian", ROUTE),
    ([1, 2], ROUTE),
    ({"logit_mean": 0.0}, f"{ROUTE}.name"),
    ({"name": "lognormal"}, f"{ROUTE}.name"),
    ({"name": "logit_normal", "logit_sd": 1.0}, f"{ROUTE}.logit_sd"),
    ({"name": "uniform", "mode_scale": 1.0}, f"{ROUTE}.mode_scale"),
    ({"name": "logit_normal", "logit_std": 0}, f"{ROUTE}.logit_std"),
    ({"name": "logit_normal", "logit_std": -1.0}, f"{ROUTE}.logit_std"),
    ({"name": "logit_normal", "logit_mean": "high"}, f"{ROUTE}.logit_mean"),
    ({"name": "logit_normal", "logit_mean": float("nan")}, f"{ROUTE}.logit_mean"),
    ({"name": "mode", "mode_scale": 2.0}, f"{ROUTE}.mode_scale"),
    ({"name": "mode", "mode_scale": -1.5}, f"{ROUTE}.mode_scale"),
    ({"name": "mode", "mode_scale": True}, f"{ROUTE}.mode_scale"),
    ({"name": "soft_split"}, f"{ROUTE}.t_split"),
    ({"name": "soft_split", "t_split": 1000}, f"{ROUTE}.t_split"),
    ({"name": "soft_split", "t_split": 0}, f"{ROUTE}.t_split"),
    ({"name": "soft_split", "t_split": 250.5}, f"{ROUTE}.t_split"),
    ({"name": "soft_split", "t_split": 500, "width": 0}, f"{ROUTE}.width"),
    ({"name": "soft_split", "t_split": 500, "width": -10}, f"{ROUTE}.width"),
    ({"name": "soft_split", "t_split": 500, "width": 1e-4}, f"{ROUTE}.width"),
    ({"name": "soft_split", "t_split": 500, "side": "left"}, f"{ROUTE}.side"),
])
def test_a_bad_density_is_refused_naming_its_key(density, key):
    cfg = config("custom", plan=[{"name": "s", "routes": [{"source": "a", "density": density}]}])
    with pytest.raises(ConfigError) as err:
        Custom.check(cfg, T)  # before it reads anything: the sources' directories are checked last
    assert err.value.key == key, err.value


@pytest.mark.parametrize("width", [-1.0, 1e-4, 5e-324, float("nan"), float("inf")])
def test_a_bad_split_width_is_refused_naming_it(width):
    cfg = config("style_tailoring", split_width=width)
    with pytest.raises(ConfigError) as err:
        StyleTailoring.check(cfg, T)
    assert err.value.key == "strategy.split_width", err.value


def test_a_soft_split_run_trains_and_logs_its_overlapping_routes(data_dirs, tmp_path):
    """End to end on the tiny model: the routing log shows both sources across t_split, the plan the densities."""
    import json

    from conftest import make_cfg
    from style_tailoring.training.run import run

    run_dir = tmp_path / "run"
    metrics = run(make_cfg(data_dirs, run_dir, "strategy=style_tailoring", "strategy.t_split=500",
                           "strategy.split_width=300", "trainer.max_steps=3", "data.batch_size=8",
                           "trainer.log_every_n_steps=1"))
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert [r["density"]["side"] for r in saved["plan"][0]["routes"]] == ["above", "below"]
    assert {"train/style/t_max", "train/alignment/t_min", "train/style/n", "train/alignment/n"} <= set(metrics)
    assert saved["train/style/t_max"] > 500  # style samples above the split: the routes overlap (seed 0's draws)
    assert "soft_split (side=below, t_split=500, width=300)" in (run_dir / "pipeline" / "README.md").read_text()
