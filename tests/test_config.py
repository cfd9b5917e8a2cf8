"""Every bad config value fails before any work, with the key's name in the message."""

from __future__ import annotations

import pytest

from conftest import make_cfg
from style_tailoring.config import ConfigError
from style_tailoring.training.run import run


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["strategy=style_tailoring", "strategy.t_split=0"], "strategy.t_split"),
        (["strategy=style_tailoring", "strategy.t_split=1000"], "strategy.t_split"),
        (["strategy=style_tailoring", "strategy.t_split=null"], "strategy.t_split"),
        (["strategy=style_tailoring", "strategy.split_width=-50"], "strategy.split_width"),
        (["strategy=custom", "strategy.plan=[{routes: [{source: style, density: {name: mode, mode_scale: 3}}]}]"],
         "strategy.plan.0.routes.0.density.mode_scale"),
        (["strategy=custom", "strategy.plan=[{routes: [{source: style, density: {name: soft_split}}]}]"],
         "strategy.plan.0.routes.0.density.t_split"),
        (["strategy=mixture", "data.mixture=1.5"], "data.mixture"),
        (["strategy=style_tailoring", "data.mixture=-0.1"], "data.mixture"),
        (["strategy.name=dreambooth"], "strategy.name"),
        (["strategy=sequential", "strategy.stages=[alignment,stickers]"], "data.sources.stickers.dir"),
        (["strategy=sequential", "strategy.stage_steps=[1,1]"], "strategy.stage_steps"),
        (["strategy=base", "trainer.max_steps=0"], "trainer.max_steps"),
        (["strategy=base", "data.domain_dir=null"], "data.sources.domain.dir"),
        (["data.on_bad_sample=ignore"], "data.on_bad_sample"),
        (["model.prediction_type=sample"], "model.prediction_type"),
        (["model=pretrained", "model.pretrained=/nonexistent/sd15"], "model.pretrained"),
    ],
)
def test_bad_value_fails_before_any_work(data_dirs, tmp_path, overrides, key):
    cfg = make_cfg(data_dirs, tmp_path / "run", *overrides)
    with pytest.raises(ConfigError) as err:
        run(cfg)
    assert err.value.key == key and str(err.value).startswith(key)
    assert not (tmp_path / "run").exists()  # nothing was written: the check ran first


def test_unknown_key_and_wrong_type_are_named(data_dirs, tmp_path):
    with pytest.raises(ConfigError, match="batchsize"):
        make_cfg(data_dirs, tmp_path / "run", "+data.batchsize=3")
    with pytest.raises(ConfigError, match="data.batch_size"):
        make_cfg(data_dirs, tmp_path / "run", "data.batch_size=eight")


def test_required_pretrained_path_is_named(data_dirs, tmp_path):
    with pytest.raises(ConfigError, match="model.pretrained"):
        make_cfg(data_dirs, tmp_path / "run", "model=pretrained")


def test_pretrained_dir_without_model_index_is_explained(data_dirs, tmp_path):
    (tmp_path / "not_a_pipeline").mkdir()
    cfg = make_cfg(data_dirs, tmp_path / "run", "model=pretrained", f"model.pretrained={tmp_path / 'not_a_pipeline'}")
    with pytest.raises(ConfigError, match="model_index.json"):
        run(cfg)


def test_the_default_configs_compose_into_the_schema(tmp_path):
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR
    from style_tailoring.config import to_run_config
    from style_tailoring.evaluate import to_evaluate_config

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        train = to_run_config(compose("train", overrides=[f"run_dir={tmp_path}", f"paths.root_dir={tmp_path}"]))
        evaluate = to_evaluate_config(compose("evaluate", overrides=[f"run_dir={tmp_path}", "pipeline=p",
                                                                     f"paths.root_dir={tmp_path}"]))
    assert (train.model.name, train.data.name, train.strategy.name) == ("sticker_world_base", "sticker_world",
                                                                         "style_tailoring")
    assert train.eval.judges.path and train.eval.fid.feature_extractor == "clip-local"
    assert train.data.prepare._target_.endswith("build_datasets")
    assert train.eval.sampler._target_.endswith("PlainSampler")
    assert evaluate.data.name == "sticker_world" and evaluate.eval.prompt_suffix is None


def test_a_group_option_spelled_with_a_dot_works_like_the_slash():
    """`eval.sampler=timestep_split eval.sampler.t_switch=500`: Hydra alone refuses the setting after a dotted group
    option; the commands rewrite it to `eval/sampler=timestep_split` first. A value that is no option stays."""
    from style_tailoring.cli import group_spelling

    argv = ["pipeline=p", "eval.sampler=timestep_split", "eval.sampler.t_switch=500", "eval.sampler=nothing_such",
            "model.tiny.text_layers=2", "+eval.sampler=dci", "data=folder"]
    assert group_spelling(argv) == ["pipeline=p", "eval/sampler=timestep_split", "eval.sampler.t_switch=500",
                                    "eval.sampler=nothing_such", "model.tiny.text_layers=2", "+eval.sampler=dci",
                                    "data=folder"]


def test_a_command_composes_another_commands_config_while_its_own_hydra_runs(tmp_path):
    """The world build is a Hydra command that composes `train` for the runs it makes (the base, the student, the
    SD3 base, the motion adapter, the ceiling's evaluation settings): Hydra refuses a second initialisation, so
    config.compose sets the running one aside and puts it back."""
    import subprocess
    import sys

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from style_tailoring.config import CONF_DIR, compose

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # as inside `python -m ...world`
        cfg = compose("train", ["strategy=mixture", "data.mixture=0.75"])
        assert cfg.strategy.name == "mixture" and cfg.data.mixture == 0.75
        assert GlobalHydra.instance().is_initialized()
        assert hydra_compose("world", overrides=["only=sd3"]).only == "sd3"  # the running one is back
    # And through the real command line: the world step that composes `train` runs inside `python -m ...world`
    script = ("import sys, hydra\n"
              "from style_tailoring.config import CONF_DIR, compose\n"
              "@hydra.main(version_base='1.3', config_path=str(CONF_DIR), config_name='world')\n"
              "def main(cfg):\n"
              "    print('composed', compose('train', ['strategy=base']).strategy.name)\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script, f"hydra.run.dir={tmp_path}"], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and "composed base" in done.stdout, done.stderr[-2000:]
