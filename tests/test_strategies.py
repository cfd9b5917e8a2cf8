"""Routing invariants of the plans, checked on the real data stream (property-style, with hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from style_tailoring.config import RunConfig
from style_tailoring.data.routed import RoutedStream
from style_tailoring.training.strategies import build_plan, recorded_t_split, strategy_node

T = 1000
N = 2000  # samples per property check


def plan_for(name, **overrides):
    cfg = OmegaConf.structured(RunConfig)
    settings = {k.removeprefix("strategy."): overrides.pop(k) for k in list(overrides) if k.startswith("strategy.")}
    cfg.strategy = strategy_node(name, **settings)
    cfg.trainer = {"max_steps": overrides.pop("max_steps", 10)}
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return build_plan(cfg, T)


def draw(plan, n=N, seed=0, stage=0):
    """(source, item, timestep) of the first n samples of a stage, as the stream draws them."""
    sources = {name: list(range(50)) for name in plan.sources}
    stream = RoutedStream(sources, plan, batch_size=4, seed=seed)
    route_ids, items, timesteps, _ = stream.draw(0, n, stage)
    routes = plan.stages[stage].routes
    return [(routes[r].source, int(i), int(t)) for r, i, t in zip(route_ids, items, timesteps)]


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
        stream = RoutedStream(sources, plan, seed=7, **{"batch_size": 3, **kw})
        return [(b["index"].tolist(), b["text"], b["timesteps"].tolist()) for b in stream]

    full = batches()
    assert len(full) == 12 and batches(start_step=5) == full[5:]
    rank0, rank1 = batches(rank=0, world_size=2), batches(rank=1, world_size=2)
    assert len(rank0) == len(rank1) == 12
    seen0 = {g for index, _, _ in rank0 for g in index}
    seen1 = {g for index, _, _ in rank1 for g in index}
    assert not seen0 & seen1 and seen0 | seen1 == set(range(12 * 2 * 3))  # disjoint, and every sample once
    # Samples are a function of (seed, global index) alone: two ranks of batch 3 are one process of batch 6, split.
    single = batches(batch_size=6)
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        assert single[step] == (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def test_uniform_draws_are_a_pure_function_of_seed_index_and_draw():
    from style_tailoring.data.routed import uniforms

    indices = np.arange(100_000, dtype=np.uint64)
    u = uniforms(3, indices, 0)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.005
    assert np.array_equal(u[500:700], uniforms(3, indices[500:700], 0))  # batch-independent
    assert np.corrcoef(u, uniforms(3, indices, 1))[0, 1] < 0.01  # draws of one sample are independent
    assert not np.array_equal(u, uniforms(4, indices, 0))
    counts, _ = np.histogram(u, bins=20, range=(0, 1))
    assert counts.min() > 0.95 * counts.mean()


def test_exact_composition_puts_round_share_of_each_route_in_every_batch():
    plan = plan_for("mixture", max_steps=5, **{"data.mixture": 0.3, "strategy.exact_composition": True})
    assert plan.stages[0].exact and plan.stages[0].route_counts(10) == [7, 3]
    assert plan.stages[0].route_counts(4) == [3, 1]  # 2.8 / 1.2: largest remainder
    fake = [{"pixel_values": torch.zeros(1), "text": ""}] * 9
    stream = RoutedStream({n: fake for n in plan.sources}, plan, batch_size=10, seed=0)
    for batch in stream:
        assert batch["source"].tolist() == [0] * 7 + [1] * 3
    assert len(set(map(tuple, (b["timesteps"].tolist() for b in stream)))) == 5  # timesteps still vary


def test_route_weights_and_caption_dropout_reach_the_batch():
    routes = [{"source": "a", "share": 0.5}, {"source": "b", "share": 0.5, "weight": 0.25, "t_max": 10}]
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), {"trainer": {"max_steps": 40}})
    cfg.strategy = strategy_node("custom", plan=[{"name": "s", "routes": routes}])
    plan = build_plan(cfg, T)
    assert plan.stages[0].routes[1].t_max == 10 and plan.stages[0].routes[0].t_max == T
    items = [{"pixel_values": torch.zeros(1), "text": "caption"}] * 5
    stream = RoutedStream({"a": items, "b": items}, plan, batch_size=50, seed=0, caption_dropout=0.2)
    batches = list(stream)
    source = torch.cat([b["source"] for b in batches])
    weight, t = torch.cat([b["weight"] for b in batches]), torch.cat([b["timesteps"] for b in batches])
    assert torch.equal(weight, torch.where(source == 1, 0.25, 1.0)) and (t[source == 1] < 10).all()
    dropped = torch.cat([b["caption_dropped"] for b in batches])
    texts = [text for b in batches for text in b["text"]]
    assert abs(dropped.float().mean().item() - 0.2) < binomial_tolerance(0.2, len(dropped))
    assert all((text == "") == bool(d) for text, d in zip(texts, dropped))


def test_unknown_plan_source_is_refused():
    plan = plan_for("base")
    with pytest.raises(ValueError, match="domain"):
        RoutedStream({"style": [1]}, plan, batch_size=1, seed=0)


@pytest.mark.parametrize("name, recorded", [("style_tailoring", 250), ("mixture", None), ("base", None)])
def test_only_a_splitting_strategy_records_its_t_split(name, recorded):
    cfg = OmegaConf.structured(RunConfig)
    cfg.strategy = strategy_node(name, **({"t_split": 250} if name == "style_tailoring" else {}))
    assert recorded_t_split(cfg) == recorded


@pytest.mark.parametrize("name", ["base", "alignment_only", "sequential", "mixture", "style_tailoring"])
def test_every_strategy_config_takes_exact_composition_from_the_command_line(name, tmp_path):
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from style_tailoring.config import to_run_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_run_config(compose("train", overrides=[f"strategy={name}", "strategy.exact_composition=true",
                                                        f"run_dir={tmp_path}", f"paths.root_dir={tmp_path}"]))
    assert all(stage.exact for stage in build_plan(cfg, T).stages)


def compose_run(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from style_tailoring.config import to_run_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return to_run_config(compose("train", overrides=[f"run_dir={tmp_path}", f"paths.root_dir={tmp_path}",
                                                         *overrides]))


FORGE_SOURCES = ["data.sources.styleref.dir=/ref", "data.sources.aux.dir=/aux", "data.sources.styleref_bg.dir=/bg",
                 "data.sources.aux_bg.dir=/aux_bg"]


def test_styleforge_is_a_plan_of_weighted_styleref_and_aux_routes_in_exact_batches(tmp_path):
    from style_tailoring.training.strategies import strategy_class

    cfg = compose_run(tmp_path, "strategy=styleforge", "strategy.aux_weight=0.5", "strategy.aux_share=0.25",
                      *FORGE_SOURCES[:2])
    strategy_class(cfg).check(cfg, T)
    stage = build_plan(cfg, T).stages[0]
    assert stage.exact and [(r.source, r.share, r.weight, r.t_min, r.t_max) for r in stage.routes] == [
        ("styleref", 0.75, 1.0, 0, T), ("aux", 0.25, 0.5, 0, T)]
    assert stage.route_counts(8) == [6, 2]
    # the dual binding's prompts, and the identifier at sampling time
    assert cfg.data.sources.styleref.caption == "sks style" and cfg.data.sources.aux.caption == "style"
    assert cfg.strategy.style_prompt == ", sks style"
    renamed = compose_run(tmp_path, "strategy=styleforge", "strategy.identifier=zq", *FORGE_SOURCES[:2])
    assert renamed.data.sources.styleref.caption == "zq style" and renamed.strategy.style_prompt == ", zq style"
    # lambda = 0 is DreamBooth on StyleRef alone: every sample StyleRef, the Aux set not even needed
    plain = compose_run(tmp_path, "strategy=styleforge", "strategy.aux_weight=0", FORGE_SOURCES[0])
    strategy_class(plain).check(plain, T)
    assert [(r.source, r.share) for r in build_plan(plain, T).stages[0].routes] == [("styleref", 1.0)]


def test_multi_styleforge_binds_characters_and_backgrounds_to_two_identifiers(tmp_path):
    from style_tailoring.training.strategies import strategy_class

    cfg = compose_run(tmp_path, "strategy=multi_styleforge", *FORGE_SOURCES)
    strategy_class(cfg).check(cfg, T)
    stage = build_plan(cfg, T).stages[0]
    assert [r.source for r in stage.routes] == ["styleref", "aux", "styleref_bg", "aux_bg"]
    assert stage.route_counts(8) == [2, 2, 2, 2]
    captions = {name: cfg.data.sources[name].caption for name in ("styleref", "aux", "styleref_bg", "aux_bg")}
    assert captions == {"styleref": "sks style", "aux": "style", "styleref_bg": "pxq style", "aux_bg": "style"}


@pytest.mark.parametrize("overrides, key", [
    (["strategy.aux_weight=-1"], "strategy.aux_weight"),
    (["strategy.aux_share=1.0"], "strategy.aux_share"),
    (["strategy.identifier='two words'"], "strategy.identifier"),
    (["data.sources.styleref.caption='a sticker'"], "data.sources.styleref.caption"),
    (["~data.sources.aux.dir"], "data.sources.aux.dir"),
])
def test_styleforge_settings_are_checked_naming_the_key(overrides, key, tmp_path):
    from style_tailoring.config import ConfigError
    from style_tailoring.training.validate import validate

    sources = [s for s in FORGE_SOURCES[:2] if not (s.endswith("/aux") and "~data.sources.aux.dir" in overrides)]
    cfg = compose_run(tmp_path, "strategy=styleforge", *sources, *[o for o in overrides if not o.startswith("~")])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_styleforge_trains_on_folders_and_its_lora_samples_the_identifier_in_stock_diffusers(data_dirs, tmp_path):
    import json

    from diffusers import StableDiffusionPipeline

    from conftest import make_cfg
    from style_tailoring.models.components import build_tiny, make_pipeline
    from style_tailoring.training.run import run

    cfg = make_cfg(data_dirs, tmp_path / "run", "strategy=styleforge", "trainer.max_steps=3", "model.lora.rank=4",
                   f"data.sources.styleref.dir={data_dirs['style']}",
                   f"data.sources.aux.dir={data_dirs['alignment']}")
    metrics = run(cfg)
    assert metrics["strategy"] == "styleforge" and metrics["steps"] == 3
    assert [r["source"] for r in metrics["plan"][0]["routes"]] == ["styleref", "aux"]
    meta = json.loads((tmp_path / "run" / "pipeline" / "style_tailoring.json").read_text())
    assert meta["strategy"] == "styleforge" and meta["style_prompt"] == ", sks style"
    make_pipeline(build_tiny(cfg.model, seed=cfg.seed)).save_pretrained(tmp_path / "base")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "base")
    plain = pipe("a red square, sks style", num_inference_steps=2, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    pipe.load_lora_weights(tmp_path / "run" / "lora")
    styled = pipe("a red square, sks style", num_inference_steps=2, height=32, width=32, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert styled.shape == (1, 32, 32, 3) and not np.allclose(plain, styled)


def test_a_strategy_declares_its_sources_so_their_dirs_take_no_plus(tmp_path):
    """strategy=styleforge reads styleref and aux: their directories are set like any key; a source no strategy
    reads is new to Hydra (it takes +), and a misspelled one is refused by name."""
    from hydra.errors import ConfigCompositionException

    cfg = compose_run(tmp_path, "strategy=styleforge", "data.sources.styleref.dir=/ref", "data.sources.aux.dir=/aux")
    assert cfg.data.sources.styleref.dir == "/ref" and cfg.data.sources.aux.caption == "style"
    with pytest.raises(ConfigCompositionException, match="stylref"):
        compose_run(tmp_path, "strategy=styleforge", "data.sources.stylref.dir=/ref")
    with pytest.raises(ConfigCompositionException, match="styleref"):
        compose_run(tmp_path, "strategy=base", "data.sources.styleref.dir=/ref")
    assert compose_run(tmp_path, "strategy=base", "+data.sources.styleref.dir=/ref").data.sources.styleref.dir


def test_a_strategy_takes_only_its_own_settings_each_named_when_wrong(tmp_path):
    """A strategy's settings are its class's: mixture has no split, so strategy.t_split is refused for it (a union
    of every strategy's settings would let it sit there unused), and a mistyped value names its key."""
    from style_tailoring.config import ConfigError

    with pytest.raises(ConfigError, match=r"strategy.t_split: is not a setting of .*Mixture"):
        compose_run(tmp_path, "strategy=mixture", "+strategy.t_split=500")
    with pytest.raises(ConfigError, match=r"^strategy.t_split: "):
        compose_run(tmp_path, "strategy=style_tailoring", "strategy.t_split=soon")
    cfg = compose_run(tmp_path, "strategy=sequential")
    assert cfg.strategy.stage_steps is None and cfg.strategy.fresh_optimizer is False and "t_split" not in cfg.strategy
