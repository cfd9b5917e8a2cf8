"""python -m style_tailoring.alpha {train,measure,grid}

  train    extend a pipeline's VAE decoder with an alpha channel and train the decoder on transparent images:
           --pipeline DIR --data DIR [--data DIR] --background COLOUR --out DIR [--steps --batch-size --lr --seed]
           (--no-alpha: the control, the 3-channel decoder finetuned the same way)
  measure  alpha IoU / boundary F / alpha MAE / composite PSNR of a trained decoder on held-out RGBA images, beside
           the 3-channel decoder and the background-threshold baseline: --decoder DIR --pipeline DIR --test DIR
           --tune DIR [--control DIR] [--out FILE.json]
  grid     the same latents decoded by the RGB decoder and by the alpha decoder (over a checkerboard and on white):
           --pipeline DIR --decoder DIR --prompts FILE --out FILE.png [--n --suffix --guidance --steps --seed]
The background is the colour the training images were composited onto (data.background; the world's is #dee0e6).
Weights load from safetensors only; --allow-pickle also loads a pickled (.bin) --pipeline / --control VAE
(unpickling runs any code the file holds: only files you trust).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from style_tailoring.config import ConfigError
from style_tailoring.data.images import parse_background
from style_tailoring.models.safe_load import weights_kwargs


def load_vae(path: Path, allow_pickle: bool = False):
    """The VAE of a pipeline directory, or a VAE folder itself."""
    from diffusers import AutoencoderKL

    path = Path(path).expanduser()
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--pipeline: no VAE at {path} (expected {path}/vae/config.json or {path}/config.json)")
    return AutoencoderKL.from_pretrained(folder, **weights_kwargs(folder, allow_pickle, key="--pipeline",
                                                                  switch="--allow-pickle")).eval()


def train(args) -> Path:
    from style_tailoring.alpha.decoder import encoder_digest, save_alpha_decoder, train_alpha_decoder

    vae = load_vae(args.pipeline, args.allow_pickle)
    background = args.background
    resolution = args.resolution or vae.config.sample_size
    started = time.time()
    model = train_alpha_decoder(vae, args.data, background=background, resolution=resolution, steps=args.steps,
                                batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                with_alpha=not args.no_alpha)
    if args.no_alpha:  # the control is a plain 3-channel VAE folder
        from style_tailoring.io import atomic_dir

        with atomic_dir(Path(args.out)) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        return Path(args.out)
    about = {"source_vae": str(args.pipeline), "data": [str(d) for d in args.data], "resolution": resolution,
             "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "train_seconds": round(time.time() - started), "command": args.command_line}
    return save_alpha_decoder(model, args.out, background=background, source_digest=encoder_digest(vae), about=about)


def measure_cmd(args) -> dict:
    from diffusers import AutoencoderKL

    from style_tailoring.alpha.decoder import read_alpha_info
    from style_tailoring.alpha.measure import measure
    from style_tailoring.io import write_json

    info = read_alpha_info(args.decoder, "--decoder")
    background = args.background or tuple(info["background"])
    rgb_vae = load_vae(args.pipeline, args.allow_pickle)
    alpha_vae = AutoencoderKL.from_pretrained(Path(args.decoder), **weights_kwargs(args.decoder, key="--decoder",
                                                                                   switch=None)).eval()
    control = load_vae(args.control, args.allow_pickle) if args.control else None
    result = measure(alpha_vae, rgb_vae, args.test, args.tune, background, info.get("resolution") or
                     rgb_vae.config.sample_size, control_vae=control)
    summary = {k: v for k, v in result.items() if k != "per_image"}
    print(json.dumps(summary, indent=2))
    if args.out:
        write_json(Path(args.out), {"decoder": str(args.decoder), **result})
    return result


@torch.no_grad()
def grid(args) -> Path:
    from diffusers import DiffusionPipeline

    from style_tailoring.alpha.decoder import attach_alpha_decoder, read_alpha_info
    from style_tailoring.alpha.matte import checkerboard_composite, composite, to_rgba_uint8
    from style_tailoring.sampling.generate import load_prompts

    pipe = DiffusionPipeline.from_pretrained(args.pipeline, **weights_kwargs(args.pipeline, args.allow_pickle,
                                                                             key="--pipeline", switch="--allow-pickle"))
    pipe.set_progress_bar_config(disable=True)
    alpha_vae = attach_alpha_decoder(pipe.vae, args.decoder, key="--decoder")
    background = tuple(read_alpha_info(args.decoder, "--decoder")["background"])
    prompts = load_prompts(args.prompts)[: args.n]
    latents = pipe([p + args.suffix for p in prompts], num_inference_steps=args.steps, guidance_scale=args.guidance,
                   generator=[torch.Generator().manual_seed(args.seed + i) for i in range(len(prompts))],
                   output_type="latent").images / pipe.vae.config.scaling_factor
    rgb = ((pipe.vae.decode(latents).sample.clamp(-1, 1) + 1) / 2)
    out = (alpha_vae.decode(latents).sample.clamp(-1, 1) + 1) / 2
    rgba = to_rgba_uint8(out[:, :3], out[:, 3:])
    white = composite(out[:, :3], out[:, 3:], (255, 255, 255))
    as_uint8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    rows = [as_uint8(rgb), np.stack([checkerboard_composite(x) for x in rgba]), as_uint8(white)]
    sheet = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    image = Image.fromarray(sheet)
    image = image.resize((image.width * args.zoom, image.height * args.zoom), Image.NEAREST)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"grid written to {args.out}: rows = RGB decoder on {background}, alpha decoder over a checkerboard, "
          "alpha decoder on white")
    return Path(args.out)


def main(argv=None) -> None:
    import sys

    parser = argparse.ArgumentParser(prog="python -m style_tailoring.alpha", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--pipeline", type=Path, required=True)
    t.add_argument("--data", type=Path, action="append", required=True)
    t.add_argument("--background", default="white")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--resolution", type=int)
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-alpha", action="store_true",
                   help="the control: finetune the 3-channel decoder the same way (no alpha channel)")
    m = sub.add_parser("measure")
    m.add_argument("--decoder", type=Path, required=True)
    m.add_argument("--pipeline", type=Path, required=True)
    m.add_argument("--test", type=Path, required=True)
    m.add_argument("--tune", type=Path, required=True)
    m.add_argument("--background")
    m.add_argument("--control", type=Path, help="a `train --no-alpha` VAE: the fair colour reference")
    m.add_argument("--out", type=Path)
    g = sub.add_parser("grid")
    g.add_argument("--pipeline", type=Path, required=True)
    g.add_argument("--decoder", type=Path, required=True)
    g.add_argument("--prompts", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--n", type=int, default=8)
    g.add_argument("--suffix", default="")
    g.add_argument("--guidance", type=float, default=3.0)
    g.add_argument("--steps", type=int, default=25)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--zoom", type=int, default=3)
    for command in (t, m, g):
        command.add_argument("--allow-pickle", action="store_true",
                             help="also load pickled (.bin) pipeline weights (unpickling runs code: trusted files only)")
    args = parser.parse_args(argv)
    args.command_line = "python -m style_tailoring.alpha " + " ".join(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        args.background = parse_background(args.background) if getattr(args, "background", None) else None
    except ValueError as err:
        parser.error(f"--background: {err}")
    try:
        if args.command == "train":
            args.background = args.background or (255, 255, 255)
            print(f"{'control decoder' if args.no_alpha else 'alpha decoder'} written to {train(args)}")
        elif args.command == "measure":
            measure_cmd(args)
        else:
            grid(args)
    except ConfigError as err:  # a refused or mismatched folder: the message, not a traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
