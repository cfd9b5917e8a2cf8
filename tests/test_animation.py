"""Animated stickers: the animated world, clips as data, the motion UNet, training through the CLI, the animate
command and the animation metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_cfg
from style_tailoring.animation.sample import save_clip
from style_tailoring.config import REPO_ROOT, ConfigError
from style_tailoring.world.grammar import Content
from style_tailoring.world.motion import (
    FRAMES,
    MOTIONS,
    build_animated,
    clip_tensor,
    held_out_motions,
    motion_caption,
    motions_for,
    parse_motion,
    render_clip,
)
from test_cli import cli

BASE = REPO_ROOT / "assets" / "sticker_world" / "base"


def test_motions_move_the_objects_in_loops_and_keep_the_scene():
    content = Content("one", "blue", "star", "grass")
    clips = {m: clip_tensor(render_clip(content, m, "sticker", np.random.default_rng(5))).int() for m in MOTIONS}
    assert all(c.shape == (FRAMES, 3, 32, 32) for c in clips.values())
    assert (clips["still"] == clips["still"][0]).all()  # nothing moves
    for motion in MOTIONS[1:]:
        steps = (clips[motion][1:] - clips[motion][:-1]).abs().float().mean()
        seam = (clips[motion][0] - clips[motion][-1]).abs().float().mean()
        assert steps > 0.5 and seam < 3 * steps, motion  # it moves, and frame 8 would be frame 0 again
    # The same composition: the first frame of every motion but shake is the still frame.
    for motion in ("bounce", "spin", "pulse"):
        assert torch.equal(clips[motion][0], clips["still"][0]), motion
    assert motions_for(Content("one", "red", "circle")) == tuple(m for m in MOTIONS if m != "spin")
    assert parse_motion(motion_caption(content, "spin")) == "spin" and parse_motion("one blue star") is None


def test_plain_stickers_are_drawn_apart_from_the_renderer_and_move_as_the_world_moves(tmp_path):
    """The test stickers the renderer never drew: a flat shape on the world's grey, with a white die-cut border or
    none and never a shadow; each reference clip moves it by the world's poses, its middle frame is the sticker."""
    from style_tailoring.animation.evaluate import read_eval_dir
    from style_tailoring.world.plain_stickers import BACKGROUND, KINDS, build_plain_stickers

    out = build_plain_stickers(tmp_path / "plain")
    white = {}
    for kind in KINDS:
        rows = [json.loads(line) for line in (out / kind / "metadata.jsonl").read_text().splitlines()]
        assert len(rows) == 19 and all(parse_motion(r["prompt"]) == r["motion"] for r in rows)  # no circle spins
        stickers, _, references = read_eval_dir(out / kind, BACKGROUND)
        assert torch.equal(references[:, FRAMES // 2], stickers)
        assert all(any(not torch.equal(f, clip[FRAMES // 2]) for f in clip) for clip in references)  # all move
        corners = references[:, :, :, :2, :2].flatten(0, 1).permute(0, 2, 3, 1).reshape(-1, 3)
        assert (corners == torch.tensor(BACKGROUND, dtype=torch.uint8)).all()  # a steady, untouched background
        assert not (stickers.int().sum(1) < 200).any()  # no dark pixel: no drop shadow
        white[kind] = int((stickers == 255).all(1).sum())
    assert white["bordered"] > 40 * 19 and white["borderless"] == 0


def test_animated_world_holds_motion_content_combinations_out(tmp_path):
    out = build_animated(tmp_path / "anim", sizes={"video_domain": 60})
    rows = [json.loads(line) for line in (out / "video_domain" / "metadata.jsonl").read_text().splitlines()]
    held = held_out_motions()
    assert len(rows) == 60 and not any(r["motion"] == held[r["subject"]] for r in rows)
    assert any(parse_motion(r["text"]) != r["motion"] for r in rows)  # weak captions
    assert any(parse_motion(r["text"]) == r["motion"] for r in rows)
    clip = Image.open(out / "video_domain" / rows[0]["file_name"])
    assert clip.format == "WEBP"
    evals = [json.loads(line) for line in (out / "video_eval" / "metadata.jsonl").read_text().splitlines()]
    assert evals and all(parse_motion(r["prompt"]) == r["motion"] for r in evals)
    assert sum(r["motion"] == held[r["subject"]] for r in evals) >= len(evals) - 4  # circles cannot spin
    assert Image.open(out / "video_eval" / evals[0]["file_name"]).size == (32, 32)
    # Each eval sticker comes with the rendered clip it is the middle frame of: the reference of frame fidelity.
    from style_tailoring.animation.evaluate import read_eval_dir

    stickers, prompts, references = read_eval_dir(out / "video_eval", (255, 255, 255))
    assert references.shape == (len(evals), FRAMES, 3, 32, 32) and references.dtype == torch.uint8
    assert torch.equal(references[:, FRAMES // 2], stickers)  # lossless: the very pixels
    moving = [i for i, r in enumerate(evals) if r["motion"] != "still"]
    assert all(any(not torch.equal(frame, references[i, FRAMES // 2]) for frame in references[i]) for i in moving)
    # The validation split: the same combinations (prompts), drawn in other layouts.
    val = [json.loads(line) for line in (out / "video_val" / "metadata.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in val] == [r["prompt"] for r in evals]
    val_stickers, _, val_references = read_eval_dir(out / "video_val", (255, 255, 255))
    assert val_references.shape == references.shape and not torch.equal(val_stickers, stickers)


def test_clips_are_read_by_time_even_when_the_encoder_merged_frames(tmp_path):
    from style_tailoring.data.folder import ImageCaptionFolder
    from style_tailoring.data.images import load_clip

    red, blue = Image.new("RGB", (16, 16), (200, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 200))
    save_clip([red, red, red, blue, red, red, red, red], tmp_path / "a.webp")  # WebP keeps 3 frames: 375/125/500 ms
    save_clip([red] * 8, tmp_path / "still.webp")  # one frame
    assert Image.open(tmp_path / "a.webp").n_frames < 8
    colours = [f.getpixel((0, 0)) for f in load_clip(tmp_path / "a.webp", (255, 255, 255), 8)]
    assert colours == [(200, 0, 0)] * 3 + [(0, 0, 200)] + [(200, 0, 0)] * 4
    assert len(load_clip(tmp_path / "still.webp", (255, 255, 255), 8)) == 8
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.webp", "text": "x"}\n'
                                             '{"file_name": "still.webp", "text": "y"}\n')
    folder = ImageCaptionFolder(tmp_path, resolution=16, frames=8)
    item = folder[0]
    assert item["pixel_values"].shape == (8, 3, 16, 16)
    assert item["pixel_values"][3, 2].mean() > 0.5 > item["pixel_values"][2, 2].mean()  # blue frame 3


def test_motion_unet_starts_as_the_image_unet_frame_by_frame():
    from diffusers import UNet2DConditionModel

    from style_tailoring.models.motion import build_animation_unet, frame_embeddings, model_input

    unet = UNet2DConditionModel.from_pretrained(BASE / "unet").eval()
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 4, FRAMES, 16, 16, generator=generator)
    sticker = torch.randn(2, 4, 16, 16, generator=generator)
    text = torch.randn(2, 16, 32, generator=generator)
    t = torch.tensor([700, 300])
    with torch.no_grad():
        image = torch.stack([unet(noisy[:, :, k], t, text).sample for k in range(FRAMES)], 2)
        for conditioning in ("middle", "all", "none"):
            motion = build_animation_unet(unet, conditioning=conditioning).eval()
            out = motion(model_input(noisy, sticker, conditioning), t, frame_embeddings(text, FRAMES)).sample
            assert (out - image).abs().max() < 1e-4, conditioning
        # A still sticker stays still at step 0: the same noisy frame everywhere gives the same output everywhere.
        still = noisy[:, :, :1].expand(-1, -1, FRAMES, -1, -1)
        out = motion(still, t, frame_embeddings(text, FRAMES)).sample
        assert (out - out[:, :, :1]).abs().max() < 1e-4
    # A fresh MotionAdapter is not an identity (why the projections are zeroed).
    from diffusers import MotionAdapter, UNetMotionModel

    fresh = UNetMotionModel.from_unet2d(unet, MotionAdapter(
        block_out_channels=tuple(unet.config.block_out_channels), motion_layers_per_block=1,
        motion_num_attention_heads=4, motion_norm_num_groups=8)).eval()
    with torch.no_grad():
        assert (fresh(noisy, t, frame_embeddings(text, FRAMES)).sample - image).abs().max() > 1e-2


@pytest.mark.parametrize("override, key", [
    ("model.motion.frames=1", "model.motion.frames"),
    ("model.motion.conditioning=first", "model.motion.conditioning"),
    ("model.motion.train=spatial", "model.motion.train"),
    ("model.lora.rank=4", "model.lora.rank"),
    ("data.center_crop=false", "data.center_crop"),
    ("eval.enabled=true", "eval.enabled"),
])
def test_motion_settings_are_checked_naming_the_key(data_dirs, tmp_path, override, key):
    from style_tailoring.training.validate import validate

    cfg = make_cfg(data_dirs, tmp_path, "model.motion.enabled=true", "data.cache.enabled=false", override)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.key == key


@pytest.fixture(scope="module")
def animated_run(tmp_path_factory):
    """Two training steps of motion modules on world clips, through the train CLI."""
    root = tmp_path_factory.mktemp("animated")
    data = build_animated(root / "anim", sizes={"video_domain": 16})
    cli("style_tailoring.train", "strategy=base", "data=folder", "model=sticker_world_base",
        f"data.domain_dir={data / 'video_domain'}", "model.motion.enabled=true", "eval.enabled=false",
        "trainer.max_steps=2", "data.batch_size=4", "logger=none", "optim.lr=1e-3", "hydra.run.dir=run",
        f"paths.data_dir={root}/data", cwd=root)
    return root


def test_motion_training_runs_through_the_train_cli_and_exports_both_forms(animated_run):
    from diffusers import AnimateDiffPipeline, UNet2DConditionModel

    from style_tailoring.animation.sample import load_animation_pipeline

    run = animated_run / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 2
    exported = AnimateDiffPipeline.from_pretrained(run / "pipeline", motion_adapter=None)
    assert type(exported.unet).__name__ == "UNetMotionModel" and exported.unet.config.in_channels == 8
    # model.motion.train=motion: the spatial weights are the image model's; the motion modules and conv_in moved.
    image = UNet2DConditionModel.from_pretrained(BASE / "unet").state_dict()
    trained = exported.unet.state_dict()
    for name, value in image.items():
        changed = not torch.equal(trained[name], value) if trained[name].shape == value.shape else True
        assert changed == name.startswith("conv_in."), name
    assert any("motion_modules" in n and p.abs().sum() > 0 for n, p in trained.items() if "proj_out" in n)
    # image pipeline + motion adapter = the exported model, exactly
    rebuilt = load_animation_pipeline(BASE, motion_adapter=run / "motion_adapter")
    assert all(torch.equal(v, rebuilt.unet.state_dict()[k]) for k, v in trained.items())
    assert rebuilt.sticker_conditioning == "middle" and rebuilt.frames == FRAMES
    # image pipeline + the exported motion UNet swapped in (unet=RUN/pipeline/unet) = the exported model too; its
    # settings come from the run's style_tailoring.json beside it. A motion adapter, when given, comes first.
    swapped = load_animation_pipeline(BASE, unet=run / "pipeline" / "unet")
    assert all(torch.equal(v, swapped.unet.state_dict()[k]) for k, v in trained.items())
    assert swapped.sticker_conditioning == "middle" and swapped.frames == FRAMES
    assert load_animation_pipeline(BASE, motion_adapter=run / "motion_adapter", unet=BASE / "unet").frames == FRAMES
    # An exported pipeline animates with its own UNet in every command: nothing named beside it is read.
    from style_tailoring.animation.sample import motion_weights

    assert motion_weights(run / "pipeline", run / "motion_adapter", BASE / "unet") == {}
    assert motion_weights(BASE, run / "motion_adapter", BASE / "unet") == {"motion_adapter": run / "motion_adapter"}


def test_animate_command_writes_an_animated_webp_and_its_frames(animated_run, tmp_path):
    sticker = animated_run / "anim" / "video_eval" / "000000.png"
    proc = cli("style_tailoring.animate", f"pipeline={animated_run / 'run' / 'pipeline'}", f"image={sticker}",
               "prompt='one red circle, bouncing'", f"out={tmp_path / 'a.webp'}", "steps=2", cwd=tmp_path)
    assert "8 frames" in proc.stdout
    clip = Image.open(tmp_path / "a.webp")
    assert clip.format == "WEBP" and clip.size == (32, 32)
    assert len(list((tmp_path / "a_frames").glob("*.png"))) == FRAMES
    result = json.loads((tmp_path / "a.json").read_text())
    assert result["frames"] == FRAMES and result["seconds"] > 0 and result["conditioning"] == "middle"
    import subprocess
    import sys

    # The default: the world's base with the shipped motion UNet, the sticker given on every frame.
    cli("style_tailoring.animate", f"image={sticker}", "prompt='one red circle, bouncing'",
        f"out={tmp_path / 'default.webp'}", "steps=2", cwd=tmp_path)
    shipped = json.loads((tmp_path / "default.json").read_text())
    assert shipped["conditioning"] == "all" and shipped["unet"].endswith("animation_unet")
    assert len(list((tmp_path / "default_frames").glob("*.png"))) == FRAMES
    # A motion adapter given comes before the default motion UNet.
    cli("style_tailoring.animate", f"image={sticker}", "prompt='one red circle, bouncing'",
        f"motion_adapter={animated_run / 'run' / 'motion_adapter'}", f"out={tmp_path / 'adapter.webp'}", "steps=2",
        cwd=tmp_path)
    chosen = json.loads((tmp_path / "adapter.json").read_text())
    assert chosen["unet"] is None and chosen["motion_adapter"] and chosen["conditioning"] == "middle"
    # ... but not before an exported pipeline's own motion modules: it is not read, and not recorded as read
    cli("style_tailoring.animate", f"pipeline={animated_run / 'run' / 'pipeline'}", f"image={sticker}",
        "prompt='one red circle, bouncing'", f"motion_adapter={animated_run / 'run' / 'motion_adapter'}",
        f"out={tmp_path / 'own.webp'}", "steps=2", cwd=tmp_path)
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["motion_adapter"] is None and own["unet"] is None
    assert np.array_equal(np.array(Image.open(tmp_path / "own.webp")), np.array(clip))  # the same clip as without
    bad = subprocess.run([sys.executable, "-m", "style_tailoring.animate", f"image={sticker}", "prompt=x",
                          f"unet={BASE / 'unet'}"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "unet" in bad.stderr and "not a motion UNet" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "style_tailoring.animate", f"image={tmp_path / 'none.png'}",
                          "prompt=x"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "image" in bad.stderr and "none.png" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "style_tailoring.animate", f"image={sticker}", "prompt=x",
                          f"pipeline={animated_run / 'run' / 'pipeline'}", "steps=0"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert bad.returncode != 0 and "steps" in bad.stderr


def test_animation_metrics_tell_loops_from_cuts_and_the_sticker_from_others():
    from style_tailoring.animation.metrics import condition_fidelity, loop_closure

    rng = np.random.default_rng(3)
    loop = clip_tensor(render_clip(Content("one", "red", "star"), "bounce", "sticker", rng))
    assert loop_closure(loop[None])[0] < 2  # a bounce eases in and out: its seam is its largest step
    half = loop[:5]  # cut at the top of the bounce: the seam jumps all the way down
    assert loop_closure(half[None])[0] > loop_closure(loop[None])[0] + 0.5
    still = loop[:1].expand(FRAMES, -1, -1, -1)[None]
    assert loop_closure(still)[0] == 1
    sticker = loop[FRAMES // 2][None]
    other = clip_tensor(render_clip(Content("two", "blue", "star"), "still", "photo", rng))
    assert condition_fidelity(loop[None], sticker)[0] > 40 > 20 > condition_fidelity(other[None], sticker)[0]


def test_frame_fidelity_undoes_the_motion_and_background_spread_reads_the_corners():
    from style_tailoring.animation.metrics import background_spread, condition_fidelity, frame_fidelity

    rng = np.random.default_rng(4)
    render = clip_tensor(render_clip(Content("one", "red", "star"), "bounce", "sticker", rng))[None]
    sticker = render[:, FRAMES // 2]
    frozen = sticker[:, None].expand(-1, FRAMES, -1, -1, -1)  # the sticker copied into every frame, no motion
    blobs = torch.nn.functional.avg_pool2d(render.flatten(0, 1).float(), 5, 1, 2).round().to(torch.uint8)[None]
    blobs[:, FRAMES // 2] = sticker  # only the conditioned frame keeps the sticker, as the model did
    # Moving exactly as the renderer moves it scores as the sticker itself; not moving, or melting, scores lower,
    # while the middle frame's condition fidelity cannot tell the three apart.
    assert frame_fidelity(render, render)[0] > 60
    assert frame_fidelity(render, render)[0] > frame_fidelity(frozen, render)[0] > frame_fidelity(blobs, render)[0]
    assert condition_fidelity(frozen, sticker)[0] == condition_fidelity(blobs, sticker)[0] > 60
    assert background_spread(render)[0] == 0  # the renderer's background does not move
    tinted = render.clone()
    tinted[:, 1::2] = (tinted[:, 1::2].int() + 9).clamp(max=255).to(torch.uint8)  # every other frame 9 levels up
    assert background_spread(tinted)[0] == pytest.approx(9, abs=0.5)


def test_animation_evaluate_scores_every_frame_and_the_renders_ceiling(animated_run, tmp_path):
    """python -m style_tailoring.animation.evaluate on the animated world's eval folder: metrics.json holds the
    model's numbers and the renders' own (their frame fidelity is perfect, their background steady: a prop or a
    bounce reaching a corner moves it a little)."""
    out = tmp_path / "eval"
    cli("style_tailoring.animation.evaluate", f"pipeline={animated_run / 'run' / 'pipeline'}",
        f"eval_dir={animated_run / 'anim' / 'video_eval'}", "seeds_per_prompt=1", "steps=2", f"out={out}",
        "clip=null", cwd=tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["renders/frame_fidelity"] > 60 and metrics["renders/background_spread"] < 0.5
    assert metrics["renders/condition_fidelity"] == metrics["renders/frame_fidelity"]
    assert 5 < metrics["animation/frame_fidelity"] < metrics["renders/frame_fidelity"]
    assert metrics["animation/background_spread"] > 0 and "renders/content_consistency" in metrics
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["animation/clips"] and {"frame_fidelity", "background_spread"} <= set(rows[0])
    # What scored it: the commit and digests of the weights, judges and eval folder; the judges' paths, inside the
    # repository, are recorded relative to it.
    provenance = metrics["provenance"]
    assert provenance["commit"] and provenance["weights"]["pipeline"].startswith("sha256:")
    assert set(provenance["weights"]) == {"pipeline"}  # an exported pipeline: the default motion UNet is not read
    assert {"judges", "eval_dir"} <= set(provenance)
    assert metrics["settings"]["judges"]["path"] == "assets/sticker_world/judges"


def command_config(name: str, schema, overrides: list[str], root):
    """A command's settings as its CLI composes them (conf/NAME.yaml and its defaults), checked by its schema."""
    from hydra import compose, initialize_config_dir

    from style_tailoring.config import CONF_DIR, merge_into_schema

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return merge_into_schema(schema, compose(name, overrides=[f"paths.root_dir={root}", *overrides]))


def test_teachers_animate_rate_and_keep_one_clip_per_sticker(animated_run, tmp_path):
    from style_tailoring.config import TeachersConfig
    from style_tailoring.hitl.teachers import run_teachers
    from style_tailoring.io import read_jsonl

    run = animated_run / "run"
    prompts = build_animated(animated_run / "anim", sizes={"video_domain": 16, "video_prompts": 3})
    cfg = command_config("teachers", TeachersConfig, [
        f"teachers=[{run / 'pipeline'},{run / 'motion_adapter'}]", f"pipeline={BASE}", "prepare=null",
        f"prompts_dir={prompts / 'video_prompts'}", f"out={tmp_path / 'judged'}", "k=2", "steps=2",
        "min_fidelity=0.0"], tmp_path)
    assert cfg.motion_judge["_target_"].endswith("MotionJudge")  # the world's judge, plugged in by conf/animation_data
    report = run_teachers(cfg)
    candidates = read_jsonl(tmp_path / "judged" / "candidates" / "metadata.jsonl")
    assert len(candidates) == 2 * 3 * 2 and len({c["seed"] for c in candidates}) == 12
    assert all(c["accepted"] == (c["motion_right"] is True) for c in candidates)  # fidelity bar at 0 dB
    kept = read_jsonl(tmp_path / "judged" / "kept" / "metadata.jsonl")
    assert len(kept) == report["kept"] <= 3 and len({k["sticker"] for k in kept}) == len(kept)
    assert sum(t["candidates"] for t in report["teachers"].values()) == 12
    # People instead of judges: the HITL ratings format; every candidate must be rated.
    lines = ["file_name,aligned,style"] + [f"{c['file_name']},{int(c['sticker'] == 0)},4" for c in candidates]
    (tmp_path / "people.csv").write_text("\n".join(lines) + "\n")
    cfg.ratings, cfg.out = str(tmp_path / "people.csv"), str(tmp_path / "nothing_animated")
    with pytest.raises(ConfigError, match="run once without ratings"):
        run_teachers(cfg)  # people rate clips the judged run wrote: without them there is nothing to rate
    cfg.out = str(tmp_path / "judged")
    clip_bytes = {c["file_name"]: (tmp_path / "judged" / "candidates" / c["file_name"]).read_bytes()
                  for c in candidates}
    report = run_teachers(cfg)
    kept = read_jsonl(tmp_path / "judged" / "kept" / "metadata.jsonl")
    assert report["rater"] == "people" and [k["sticker"] for k in kept] == [0]
    assert (tmp_path / "judged" / "kept" / kept[0]["file_name"]).read_bytes() == clip_bytes[kept[0]["file_name"]]
    teachers = list(cfg.teachers)
    cfg.teachers = teachers[::-1]
    with pytest.raises(ConfigError, match="not by these teachers"):
        run_teachers(cfg)
    cfg.teachers = teachers
    (tmp_path / "people.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ConfigError, match="rate them all"):
        run_teachers(cfg)
    # The kept set trains a student through the train CLI, starting from a teacher's animation UNet.
    cli("style_tailoring.train", "strategy=base", "data=folder", "model=sticker_world_base",
        f"data.domain_dir={tmp_path / 'judged' / 'kept'}", "model.motion.enabled=true", "eval.enabled=false",
        f"model.init_unet={run / 'pipeline'}", "trainer.max_steps=1", "data.batch_size=2", "logger=none",
        "hydra.run.dir=student", f"paths.data_dir={tmp_path}/data", cwd=tmp_path)
    assert json.loads((tmp_path / "student" / "metrics.json").read_text())["status"] == "completed"


def test_shipped_motion_judge_reads_fresh_clips():
    from style_tailoring.world.motion import load_motion_judge, motion_pool, predict

    judges = REPO_ROOT / "assets" / "sticker_world" / "judges_motion"
    pool = motion_pool(120, seed=4321)  # a stream never used in training
    accuracy = (predict(load_motion_judge(judges), pool["images"]) == pool["labels"]).float().mean()
    assert accuracy >= 0.9
    recorded = json.loads((judges / "accuracy.json").read_text())
    assert recorded["motion"] >= 0.95 and "command" in recorded
    assert sum(f.stat().st_size for f in judges.rglob("*") if f.is_file()) < 3 * 2**20


def test_continuing_an_animation_run_keeps_its_conditioning(animated_run, data_dirs, tmp_path):
    from style_tailoring.models.components import build_components

    pipeline = animated_run / "run" / "pipeline"
    common = ["model=sticker_world_base", "model.motion.enabled=true", f"model.init_unet={pipeline}"]
    comps = build_components(make_cfg(data_dirs, tmp_path, *common).model)
    assert comps.is_animation and comps.unet.config.in_channels == 8  # the run's own UNetMotionModel
    with pytest.raises(ConfigError) as err:
        build_components(make_cfg(data_dirs, tmp_path, *common, "model.motion.conditioning=none").model)
    assert err.value.key == "model.motion.conditioning"
    with pytest.raises(ConfigError) as err:  # an animation UNet needs model.motion.enabled
        build_components(make_cfg(data_dirs, tmp_path, "model=sticker_world_base", f"model.init_unet={pipeline}").model)
    assert err.value.key == "model.init_unet"
