"""What every command's schema shares: the repository's paths, ConfigError, merging a composed config into a
schema (every missing value, unknown key and wrong type named) and building a `_target_` node."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.nodes import FloatNode

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"
# ${repo:assets/...} points into this checkout (shipped weights), whatever the working directory.
OmegaConf.register_new_resolver("repo", lambda sub="": str(REPO_ROOT / sub), replace=True)
PLAIN_SAMPLER = {"_target_": "style_tailoring.sampling.samplers.PlainSampler"}


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the key's dotted name."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


def compose(name: str, overrides: list[str]) -> DictConfig:
    """conf/NAME.yaml composed with `overrides`, as its command would compose it — from library code too, and from
    inside another running Hydra command (the world build composes `train` for the runs it makes): Hydra's global
    state is set aside for the composition and put back after it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    running = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(name, overrides=list(overrides))
    finally:
        state = GlobalHydra.instance()  # the context restores its own backup, a new instance: ask again
        state.clear()
        if running is not None:
            state.initialize(running)


def config_path(key: str, path) -> Path:
    """The path config key `key` gives, expanded; a ConfigError naming `key` if the file system refuses the name
    itself (longer than a file name may be), which pathlib's exists/is_file raise as OSError instead of answering."""
    full = Path(path).expanduser()
    try:
        full.exists()
    except OSError as err:
        raise ConfigError(key, f"{str(path)[:80]!r}... is no usable path ({err.strerror})") from None
    return full


def _sampler_by_name(plain: dict) -> None:
    """`eval.sampler=NAME` on the command line sets a string where the group `eval/sampler=NAME` sets the node:
    accept both by reading conf/eval/sampler/NAME.yaml (settings then go through eval.sampler.KEY=...)."""
    ev = plain.get("eval")
    if not isinstance(ev, dict) or not isinstance(ev.get("sampler"), str):
        return
    name = ev["sampler"]
    path = CONF_DIR / "eval" / "sampler" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError("eval.sampler", f"unknown sampler {name!r}; one of {known}")
    ev["sampler"] = OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _check_float(value, key: str) -> None:
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        raise ConfigError(key, f"an integer of {len(str(abs(value)))} digits is too large for a float")


def _check_shapes(schema, value, key: str = "") -> None:
    """What OmegaConf's merge gets wrong: a mapping where the schema has a list (or the reverse) fails naming no key,
    a list or mapping inside a list of numbers or strings is taken as it is, and an integer too large for a float
    fails naming no key. Unknown keys and wrong scalar types are the merge's to name."""
    if value is None:
        return
    if OmegaConf.is_list(schema):
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        element = schema._metadata.element_type
        for i, item in enumerate(value):
            if element in (int, float, bool, str) and isinstance(item, (list, dict)):
                raise ConfigError(f"{key}.{i}", f"is a {type(item).__name__} in a list of {element.__name__}")
            if element is float:
                _check_float(item, f"{key}.{i}")
    elif OmegaConf.is_dict(schema):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        if schema._is_none():  # an optional mapping the schema leaves open (data.prepare)
            return
        for name, item in value.items():
            if name in schema:
                _check_shapes(schema._get_node(name), item, f"{key}.{name}" if key else str(name))
    elif isinstance(schema, FloatNode):
        _check_float(value, key)


def merge_into_schema(schema_cls, cfg: DictConfig) -> DictConfig:
    """Merge a composed config into a schema: missing required values, unknown keys and wrong types fail, named."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
    if missing:
        raise ConfigError(missing[0], f"is required (set it on the command line: {missing[0]}=...)")
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    _sampler_by_name(plain)
    schema = OmegaConf.structured(schema_cls)
    _check_shapes(schema, plain)
    try:
        return OmegaConf.merge(schema, plain)
    except Exception as err:  # omegaconf's errors carry the full key; keep them but give one error type
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(str(key), str(err).splitlines()[0]) from None


def target_object(key: str, target):
    """What a `_target_` names, imported; a ConfigError naming `key._target_` when it is missing or cannot be."""
    from hydra.utils import get_object

    if not target:
        raise ConfigError(f"{key}._target_", "is required (what to instantiate)")
    try:
        return get_object(target)
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError, ...: all mean "cannot be found"
        raise ConfigError(f"{key}._target_", f"cannot import {target!r} ({type(err).__name__})") from None


def target_settings(node, key: str) -> DictConfig:
    """A `_target_` node whose target is a dataclass (a strategy), merged into that dataclass: its settings typed,
    a missing one filled with the class's default, an unknown or mistyped one a ConfigError naming `key.<setting>`.
    The target is looked up by name, as instantiating it would, so this room imports none of them."""
    from dataclasses import is_dataclass

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = plain.pop("_target_", None)
    cls = target_object(key, target)
    if not is_dataclass(cls):
        raise ConfigError(f"{key}._target_", f"{target} is not a settings class (a dataclass)")
    schema = OmegaConf.structured(cls)
    _check_shapes(schema, plain, key)
    unknown = sorted(set(plain) - set(schema))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"is not a setting of {target} (its settings: {sorted(schema)})")
    try:
        merged = OmegaConf.merge(schema, plain)
    except Exception as err:  # omegaconf names the field; put the node's key in front
        field_name = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}.{field_name}", str(err).splitlines()[0]) from None
    OmegaConf.set_struct(merged, False)
    merged["_target_"] = target
    OmegaConf.set_struct(merged, True)
    return merged


def build_target(spec, recursive: bool = True):
    """A `_target_` node (a judge, a data builder: how the world and a user's own pieces plug in) instantiated with
    its arguments; None stays None. `recursive=False`: a nested `_target_` node stays a plain node (the target
    builds it when it needs it)."""
    if spec is None:
        return None
    from hydra.utils import instantiate

    plain = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    return instantiate(plain, _convert_="all", _recursive_=recursive)
