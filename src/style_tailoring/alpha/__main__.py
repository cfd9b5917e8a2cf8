"""python -m style_tailoring.alpha action={train,measure,grid} [key=value ...] (settings: conf/alpha.yaml; --help)

  action=train    extend a pipeline's VAE decoder with an alpha channel and train the decoder on transparent images:
                  pipeline=DIR data_dirs=DIR (data_dirs=[DIR,DIR]: several) background=COLOUR out=DIR
                  [steps= batch_size= lr= seed= resolution= composite_weight= trainable=decoder|last_blocks]
                  (no_alpha=true: the control, the 3-channel decoder finetuned the same way)
  action=measure  alpha IoU / boundary F / alpha MAE / composite PSNR of a trained decoder on held-out RGBA images,
                  beside the 3-channel decoder and the background-threshold baseline: decoder=DIR pipeline=DIR
                  test=DIR tune=DIR [control=DIR] [out=FILE.json]
  action=grid     the same latents decoded by the RGB decoder and by the alpha decoder (over a checkerboard and on
                  white): pipeline=DIR decoder=DIR prompts=FILE out=FILE.png [n= suffix= guidance=
                  num_inference_steps= seed= zoom=]
A setting only another action reads is refused, naming it. The background is the colour the training images were
composited onto (data.background; the world's is '#dee0e6', quoted: `background="'#dee0e6'"` in a shell). Weights
load from safetensors only; allow_pickle=true also loads a pickled (.bin) pipeline / control VAE (unpickling runs
any code the file holds: only files you trust). The work itself: alpha/decoder.py and alpha/measure.py.
"""

from __future__ import annotations

import json
import math
import sys

import hydra
from omegaconf import DictConfig

from style_tailoring.alpha.decoder import TRAINABLE
from style_tailoring.config import AlphaConfig, ConfigError, merge_into_schema

ACTIONS = ("train", "measure", "grid")
# The settings that only some actions read (pipeline, out and allow_pickle: every action).
READ_BY = {
    "decoder": ("measure", "grid"), "background": ("train", "measure"), "seed": ("train", "grid"),
    **{key: ("train",) for key in ("data_dirs", "resolution", "steps", "batch_size", "lr", "no_alpha",
                                   "composite_weight", "trainable")},
    **{key: ("measure",) for key in ("test", "tune", "control")},
    **{key: ("grid",) for key in ("prompts", "n", "suffix", "guidance", "num_inference_steps", "zoom")},
}
# What each action cannot do without, beside pipeline (required by all: ??? in conf/alpha.yaml).
REQUIRED = {"train": ("data_dirs", "out"), "measure": ("decoder", "test", "tune"),
            "grid": ("decoder", "prompts", "out")}


def check_alpha_settings(cfg) -> None:
    """Before any work: a known action, its required settings set, none that only another action reads changed
    from its default, and a background PIL knows."""
    from style_tailoring.data.images import parse_background

    if cfg.action not in ACTIONS:
        raise ConfigError("action", f"unknown action {cfg.action!r}; one of {', '.join(ACTIONS)}")
    defaults = AlphaConfig()
    for key, actions in READ_BY.items():
        if cfg.action not in actions and cfg[key] != getattr(defaults, key):
            raise ConfigError(key, f"is read by action={' / action='.join(actions)} only, not action={cfg.action}")
    for key in REQUIRED[cfg.action]:
        if not cfg[key]:
            raise ConfigError(key, f"is required for action={cfg.action}")
    if cfg.trainable not in TRAINABLE:
        raise ConfigError("trainable", f"must be one of {list(TRAINABLE)}, got {cfg.trainable!r}")
    if not 0 < cfg.composite_weight < math.inf:  # nan and inf too
        raise ConfigError("composite_weight", f"must be a finite number > 0, got {cfg.composite_weight}")
    if cfg.no_alpha and cfg.composite_weight != AlphaConfig.composite_weight:
        raise ConfigError("composite_weight", "weighs the composite against the alpha term, which the control "
                                              "(no_alpha=true) does not have: leave it at 1")
    if cfg.background:
        try:
            parse_background(cfg.background)
        except ValueError as err:
            raise ConfigError("background", str(err)) from None


def run_alpha(cfg, command: str = "") -> None:
    """The command on its validated settings (AlphaConfig); `command`: its command line, recorded in alpha.json."""
    from style_tailoring.data.images import parse_background

    check_alpha_settings(cfg)
    background = parse_background(cfg.background) if cfg.background else None
    if cfg.action == "train":
        from style_tailoring.alpha.decoder import train_decoder

        out = train_decoder(cfg.pipeline, list(cfg.data_dirs), cfg.out, background=background or (255, 255, 255),
                            resolution=cfg.resolution, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                            seed=cfg.seed, with_alpha=not cfg.no_alpha, composite_weight=cfg.composite_weight,
                            trainable=cfg.trainable, allow_pickle=cfg.allow_pickle,
                            command=command)
        print(f"{'control decoder' if cfg.no_alpha else 'alpha decoder'} written to {out}")
    elif cfg.action == "measure":
        from style_tailoring.alpha.measure import measure_decoder

        result = measure_decoder(cfg.decoder, cfg.pipeline, cfg.test, cfg.tune, background=background,
                                 control=cfg.control, allow_pickle=cfg.allow_pickle, out=cfg.out)
        print(json.dumps({k: v for k, v in result.items() if k != "per_image"}, indent=2))
    else:
        from style_tailoring.alpha.decoder import decoder_grid, read_alpha_info

        out = decoder_grid(cfg.pipeline, cfg.decoder, cfg.prompts, cfg.out, n=cfg.n, suffix=cfg.suffix,
                           guidance=cfg.guidance, num_inference_steps=cfg.num_inference_steps, seed=cfg.seed,
                           zoom=cfg.zoom, allow_pickle=cfg.allow_pickle)
        trained_on = tuple(read_alpha_info(cfg.decoder, "decoder")["background"])
        print(f"grid written to {out}: rows = RGB decoder on {trained_on}, alpha decoder over a checkerboard, "
              "alpha decoder on white")


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="alpha")
def main(cfg: DictConfig) -> None:
    if isinstance(cfg.get("data_dirs"), str):  # data_dirs=DIR: one folder
        cfg.data_dirs = [cfg.data_dirs]
    try:
        run_alpha(merge_into_schema(AlphaConfig, cfg),
                  command="python -m style_tailoring.alpha " + " ".join(sys.argv[1:]))
    except ConfigError as err:  # a wrong setting, a refused or mismatched folder: the message, not a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
