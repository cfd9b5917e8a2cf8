"""Hostile weights: pickled checkpoints are refused unless allowed, no code is trusted from a model repository, and
a resumed checkpoint cannot run code.

Unpickling a `.bin` / `.ckpt` calls whatever the file names; safetensors holds tensors only. The tiny model is saved
the legacy way (`safe_serialization=False`) and offered to every loader of the package that takes a user's path.
"""

from __future__ import annotations

import ast
import logging
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_cfg
from faultlib import REPO, record
from style_tailoring.config import ConfigError

SRC = REPO / "src" / "style_tailoring"


def leave_marker(path: str) -> None:
    Path(path).write_text("unpickling ran code")


class RunsCodeWhenUnpickled:
    """A pickled object whose loading calls a function of the file's choosing: here a harmless marker file, in an
    attack anything at all."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return leave_marker, (self.marker,)


def pickle_weights(folder: Path) -> None:
    """Every safetensors file under `folder` replaced by the pickled file a legacy save writes (transformers 5 has
    no safe_serialization=False: its text encoder is converted the same way)."""
    for file in list(folder.rglob("*.safetensors")):
        stem = "pytorch_model" if file.stem == "model" else file.stem
        torch.save(load_file(file), file.with_name(stem + ".bin"))
        file.unlink()


@pytest.fixture(scope="module")
def models(data_dirs, tmp_path_factory) -> dict[str, Path]:
    from style_tailoring.models.components import build_tiny, make_pipeline
    from style_tailoring.models.motion import build_animation_unet, save_motion_adapter

    root = tmp_path_factory.mktemp("models")
    comps = build_tiny(make_cfg(data_dirs, root / "unused").model, seed=0)
    make_pipeline(comps).save_pretrained(root / "safe", safe_serialization=True)
    make_pipeline(comps).save_pretrained(root / "pickled", safe_serialization=False)
    pickle_weights(root / "pickled")
    comps.unet = build_animation_unet(comps.unet, heads=2)
    make_pipeline(comps).save_pretrained(root / "animation", safe_serialization=False)
    pickle_weights(root / "animation")
    save_motion_adapter(comps.unet, root / "adapter", heads=2, conditioning="middle", frames=4)
    pickle_weights(root / "adapter")
    (root / "lora").mkdir()
    torch.save({"unet.down_blocks.0.lora_A.weight": torch.zeros(4, 4)}, root / "lora" / "pytorch_lora_weights.bin")
    (root / "clip").mkdir()
    (root / "clip" / "config.json").write_text("{}")
    torch.save({"text_projection.weight": torch.zeros(2, 2)}, root / "clip" / "pytorch_model.bin")
    return {"root": root, **{p.name: p for p in root.iterdir()}}


def test_the_legacy_save_is_pickled_only(models):
    """What the cases below are offered: no safetensors file anywhere, pickled weights in every component."""
    for name in ("pickled", "animation", "adapter"):
        assert not list(models[name].rglob("*.safetensors")), name
    assert {p.relative_to(models["pickled"]).as_posix() for p in models["pickled"].rglob("*.bin")} == {
        "unet/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin"}


def _pretrained(data_dirs, models, *extra):
    from style_tailoring.models.components import build_components

    run_dir = models["root"] / "run"
    return build_components(make_cfg(data_dirs, run_dir, "model=pretrained", f"model.pretrained={models['pickled']}",
                                     "model.resolution=32", *extra).model)


def _init_unet(data_dirs, models):
    from style_tailoring.models.components import build_components

    return build_components(make_cfg(data_dirs, models["root"] / "run", f"model.init_unet={models['pickled']}").model)


def _evaluate(models):
    from style_tailoring.evaluation.standalone import load_pipeline

    return load_pipeline(str(models["pickled"]))


def _evaluate_unet(models):
    from style_tailoring.evaluation.standalone import load_pipeline

    return load_pipeline(str(models["safe"]), unet=str(models["pickled"] / "unet"))


def _hitl(models, lora=False):
    from style_tailoring.hitl.candidates import Generator, load_generator

    if lora:
        return load_generator(Generator("teacher", str(models["safe"]), str(models["lora"])))
    return load_generator(Generator("model", str(models["pickled"])))


def _late_unet(models):
    from style_tailoring.evaluation.standalone import load_pipeline
    from style_tailoring.sampling.samplers import TimestepSplitSampler

    TimestepSplitSampler(t_switch=500, late_unet=str(models["pickled"])).prepare(load_pipeline(str(models["safe"])))


def _animation(models, adapter=False):
    from style_tailoring.animation.sample import load_animation_pipeline

    if adapter:
        return load_animation_pipeline(str(models["safe"]), motion_adapter=str(models["adapter"]))
    return load_animation_pipeline(str(models["animation"]))


def _alpha_cli(models):
    from style_tailoring.alpha.decoder import load_vae  # what the alpha command's pipeline= loads with

    return load_vae(models["pickled"])


def _clip_metric(models):
    from style_tailoring.evaluation.metrics.clip import load_clip

    return load_clip(models["clip"])


# (case, loader, the key the refusal names, the switch it names: None where only converting the weights helps)
LOADERS = [
    ("model.pretrained (train)", lambda d, m: _pretrained(d, m), "model.pretrained", "model.allow_pickle=true"),
    ("model.init_unet (train)", _init_unet, "model.init_unet", "model.allow_pickle=true"),
    ("evaluate pipeline=", lambda d, m: _evaluate(m), "pipeline", "model.allow_pickle=true"),
    ("evaluate unet=", lambda d, m: _evaluate_unet(m), "unet", "model.allow_pickle=true"),
    ("HITL generator pipeline", lambda d, m: _hitl(m), "pipeline", "hitl.allow_pickle=true"),
    ("HITL teacher LoRA", lambda d, m: _hitl(m, lora=True), "hitl.teachers.lora", "hitl.allow_pickle=true"),
    ("timestep_split late UNet", lambda d, m: _late_unet(m), "eval.sampler.late_unet", None),
    ("animation pipeline", lambda d, m: _animation(m), "pipeline", "allow_pickle=true"),
    ("animation motion adapter", lambda d, m: _animation(m, adapter=True), "motion_adapter", "allow_pickle=true"),
    ("alpha pipeline=", lambda d, m: _alpha_cli(m), "pipeline", "allow_pickle=true"),
    ("CLIP metric directory", lambda d, m: _clip_metric(m), "eval.clip.model_path", None),
]


@pytest.mark.parametrize("case, load, key, switch", LOADERS, ids=[case for case, *_ in LOADERS])
def test_pickled_only_weights_are_refused_naming_the_directory_and_the_switch(data_dirs, models, case, load, key,
                                                                             switch):
    with pytest.raises(ConfigError) as refused:
        load(data_dirs, models)
    message = str(refused.value)
    assert message.startswith(f"{key}: ") and "pickled weights only" in message, message
    assert any(str(models[name]) in message for name in ("pickled", "animation", "adapter", "lora", "clip")), message
    if switch:
        assert f"set {switch}" in message, message
    record("pickled (.bin) weights", case, "refused")


def test_allow_pickle_loads_the_same_weights_with_a_warning_naming_the_files(data_dirs, models, caplog):
    from style_tailoring.animation.sample import load_animation_pipeline
    from style_tailoring.evaluation.standalone import load_pipeline

    with caplog.at_level(logging.WARNING, logger="style_tailoring.models"):
        comps = _pretrained(data_dirs, models, "model.allow_pickle=true")
    warning = caplog.text
    assert str(models["pickled"]) in warning and "unet/diffusion_pytorch_model.bin" in warning, warning
    safe = load_file(models["safe"] / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(safe[k], v) for k, v in comps.unet.state_dict().items())
    evaluated = load_pipeline(str(models["pickled"]), allow_pickle=True).unet.state_dict()
    assert all(torch.equal(safe[k], v) for k, v in evaluated.items())
    assert load_animation_pipeline(str(models["animation"]), allow_pickle=True).frames == 8
    record("pickled (.bin) weights", "model.allow_pickle=true (trusted file)", "survived", cases=3)


def test_pickled_metric_weights_are_refused_before_any_training(data_dirs, models):
    from style_tailoring.evaluation.validate import check_eval_settings

    cfg = make_cfg(data_dirs, models["root"] / "run", "eval.enabled=true", "eval/sampler=plain",
                   f"eval.clip.model_path={models['clip']}")
    with pytest.raises(ConfigError, match=r"^eval\.clip\.model_path: .*pickled weights only"):
        check_eval_settings(cfg.eval)
    record("pickled (.bin) weights", "eval.clip.model_path, checked before training", "refused")


def test_inception_weights_that_would_run_code_are_refused_unread(tmp_path):
    """torch-fidelity unpickles eval.fid.weights_path with weights_only=False: a file that holds more than tensors is
    refused before it gets there, and its code never runs; a plain state dict passes."""
    from style_tailoring.evaluation.metrics.fidelity import _require_local_weights

    marker, control = tmp_path / "pwned", tmp_path / "control"
    hostile = tmp_path / "weights-inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "payload": RunsCodeWhenUnpickled(marker)}, hostile)
    with pytest.raises(ConfigError, match=r"^eval\.fid\.weights_path: .*pickled objects beyond tensors"):
        _require_local_weights("inception-v3-compat", hostile)
    assert not marker.exists()
    pickle.loads(pickle.dumps(RunsCodeWhenUnpickled(control)))  # the payload is live: plain unpickling runs it
    assert control.read_text() == "unpickling ran code"
    plain = tmp_path / "plain.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, plain)
    _require_local_weights("inception-v3-compat", plain)
    record("pickled checkpoint that runs code", "FID Inception weights (eval.fid.weights_path)", "refused")


def test_resuming_from_a_checkpoint_that_runs_code_is_refused_and_the_code_never_runs(data_dirs, tmp_path):
    """Lightning resumes with weights_only=True (training/run.py): a checkpoint whose unpickling would call a
    function is refused before anything in it runs."""
    from style_tailoring.training.run import run

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"global_step": 1, "state_dict": {}, "payload": RunsCodeWhenUnpickled(marker)}, checkpoint)
    cfg = make_cfg(data_dirs, tmp_path / "run", "trainer.max_steps=2", "data.cache.enabled=false",
                   f"ckpt_path={checkpoint}")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run(cfg)
    assert not marker.exists()
    assert not (tmp_path / "run" / "metrics.json").exists()
    record("pickled checkpoint that runs code", "resume (ckpt_path)", "refused")


# -------------------------------------------------------------------------------------- the source, read by ast
WEIGHTLESS = ("Tokenizer", "Processor", "Scheduler", "scheduler")  # from_pretrained of files without weights
WEIGHT_LOADERS = {"from_pretrained", "load_lora_weights", "load_lora_adapter"}


def _dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str) -> list[str]:
    """Every call in `source` that trusts a file: trust_remote_code not False, torch.load without
    weights_only=True, a Lightning fit that resumes without weights_only=True, and a weights `from_pretrained` /
    LoRA load with neither use_safetensors=True nor `**` of what `weights_kwargs(...)` returned."""
    tree = ast.parse(source)
    safe_kwargs = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and isinstance(node.value, ast.Call) and _dotted(node.value.func).endswith("weights_kwargs")
                   for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        named = {k.arg: k.value for k in node.keywords if k.arg}
        line, func = node.lineno, _dotted(node.func)
        trusts = named.get("trust_remote_code")
        if trusts is not None and not (isinstance(trusts, ast.Constant) and trusts.value is False):
            found.append((line, "trust_remote_code"))
        if func == "torch.load" and not _is_true(named.get("weights_only")):
            found.append((line, "torch.load without weights_only=True"))
        if func.endswith(".fit") and "ckpt_path" in named and not _is_true(named.get("weights_only")):
            found.append((line, "resume without weights_only=True"))
        if func.rpartition(".")[2] in WEIGHT_LOADERS and not any(w in func for w in WEIGHTLESS):
            unpacked = [k.value for k in node.keywords if k.arg is None]
            safe = _is_true(named.get("use_safetensors")) or any(
                (isinstance(v, ast.Name) and v.id in safe_kwargs)
                or (isinstance(v, ast.Call) and _dotted(v.func).endswith("weights_kwargs")) for v in unpacked)
            if not safe:
                found.append((line, f"{func} may unpickle"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


HOSTILE = """
model = AutoModel.from_pretrained(path, trust_remote_code=True, use_safetensors=True)
other = AutoModel.from_pretrained(path, trust_remote_code=flag, use_safetensors=True)
state = torch.load(path)
also = torch.load(path, weights_only=False)
trainer.fit(module, ckpt_path=path)
unet = UNet2DConditionModel.from_pretrained(path)
pipe.load_lora_weights(path, use_safetensors=None)
tokenizer = AutoTokenizer.from_pretrained(path)
weights = weights_kwargs(path, allow)
fine = UNet2DConditionModel.from_pretrained(path, **weights)
"""


def test_the_source_scan_finds_each_kind_of_unsafe_call():
    """The scan below is only worth what it catches: every unsafe line of a hostile snippet, and no safe one."""
    assert [f.split(": ", 1)[1] for f in unsafe_calls(HOSTILE)] == [
        "trust_remote_code", "trust_remote_code", "torch.load without weights_only=True",
        "torch.load without weights_only=True", "resume without weights_only=True",
        "UNet2DConditionModel.from_pretrained may unpickle", "pipe.load_lora_weights may unpickle"]


def test_the_package_never_trusts_remote_code_and_never_unpickles_weights():
    files = sorted(SRC.rglob("*.py"))
    found = {f"{path.relative_to(REPO)}: {problem}" for path in files for problem in unsafe_calls(path.read_text())}
    assert not found, "\n".join(sorted(found))
    loads = sum(isinstance(n, ast.Call) and (_dotted(n.func).rpartition(".")[2] in WEIGHT_LOADERS
                                             or _dotted(n.func) == "torch.load"
                                             or any(k.arg == "ckpt_path" for k in n.keywords))
                for path in files for n in ast.walk(ast.parse(path.read_text())))  # the call sites checked
    record("code trusted from a file", "trust_remote_code, torch.load, resume, from_pretrained (source scan)",
           "refused", cases=loads)
