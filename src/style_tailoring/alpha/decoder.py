"""The paper's alpha decoder: a trained VAE's decoder with a fourth output channel (alpha), trained decoder-only.

The last convolution grows from 3 to 4 output channels; the alpha filter starts as the mean of the R, G and B
filters (the paper's initialisation) and the colour filters are kept, so the decoder starts as the old one. Only the
decoder trains: the encoder, `post_quant_conv` and so the latent space stay as they were, and every UNet trained on
that VAE's latents keeps working with the new decoder.

What the decoder outputs is straight (un-premultiplied) colour and alpha — what a transparent PNG stores, so a stock
diffusers pipeline returns usable RGBA images. Its loss is on the composite onto the background the training images
were composited onto (the colour the UNet's world has behind every sticker, `data.background`) and on alpha:
    L = |F̂·â + b·(1 − â) − C|² + |â − a|²
where C = F·a + b·(1 − a) is what the encoder saw. The folder it is saved to is an ordinary `AutoencoderKL`
(`out_channels: 4`) plus `alpha.json`: the background, the encoder's digest (a decoder only fits the encoder it
was trained behind) and how it was made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from style_tailoring.alpha.matte import RGBAFolder, composite
from style_tailoring.models.safe_load import weights_kwargs

log = logging.getLogger(__name__)
ALPHA_FILE = "alpha.json"


def encoder_digest(vae) -> str:
    """A fingerprint of everything that makes the latent space: encoder, quant_conv and post_quant_conv weights."""
    digest = hashlib.sha1()
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.", "post_quant_conv.")):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def extend_decoder(vae):
    """A copy of the 3-channel `vae` with a 4-channel decoder output, alpha initialised as the mean of R, G, B."""
    from diffusers import AutoencoderKL

    if vae.config.out_channels != 3:
        raise ValueError(f"the VAE decodes {vae.config.out_channels} channels; the alpha decoder extends an RGB one")
    # without diffusers' "_use_default_values": a VAE built in code with the default out_channels lists it there,
    # and from_config would then put the default (3) back over the 4 asked for
    config = {key: value for key, value in vae.config.items() if key != "_use_default_values"}
    extended = AutoencoderKL.from_config({**config, "out_channels": 4})
    state = vae.state_dict()
    weight, bias = state["decoder.conv_out.weight"], state["decoder.conv_out.bias"]
    state["decoder.conv_out.weight"] = torch.cat([weight, weight.mean(0, keepdim=True)])
    state["decoder.conv_out.bias"] = torch.cat([bias, bias.mean(0, keepdim=True)])
    extended.load_state_dict(state)
    return extended


def decode_rgba(vae, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(straight colour N×3×H×W, alpha N×1×H×W), both in [0, 1], from unscaled latents."""
    out = (vae.decode(latents).sample.clamp(-1, 1) + 1) / 2
    return out[:, :3], out[:, 3:]


TRAINABLE = ("decoder", "last_blocks")


def trainable_parameters(model, which: str) -> list:
    """What a decoder-only finetune trains: the whole decoder, or its last up block and output layers only (the
    colours the rest of the decoder already makes stay as they are; the new alpha row is fitted on top)."""
    if which == "decoder":
        return list(model.decoder.parameters())
    if which == "last_blocks":
        d = model.decoder
        return [*d.up_blocks[-1].parameters(), *d.conv_norm_out.parameters(), *d.conv_out.parameters()]
    raise ValueError(f"trainable must be one of {TRAINABLE}, got {which!r}")


def train_alpha_decoder(vae, data_dirs: list[Path], *, background: tuple[int, int, int], resolution: int,
                        steps: int = 1500, batch_size: int = 32, lr: float = 3e-4, seed: int = 0,
                        with_alpha: bool = True, composite_weight: float = 1.0, trainable: str = "decoder"):
    """Extend `vae` and train its decoder on the RGBA images of `data_dirs`; returns the 4-channel VAE.
    The loss is `composite_weight`·|composite error|² + |alpha error|² (a weight above 1 keeps the colours closer to
    the 3-channel decoder's); `trainable`: the whole decoder or its last blocks (trainable_parameters).
    `with_alpha=False` is the control: the same decoder-only finetune of the 3-channel decoder on the composites, which
    separates what the alpha channel costs the colours from what the extra sticker training gives them."""
    from diffusers import AutoencoderKL
    from torch.utils.data import ConcatDataset, DataLoader

    torch.manual_seed(seed)
    data = ConcatDataset([RGBAFolder(d, resolution) for d in data_dirs])
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(data) >= batch_size,
                        generator=torch.Generator().manual_seed(seed))
    if with_alpha:
        model = extend_decoder(vae)
    else:
        model = AutoencoderKL.from_config(vae.config)
        model.load_state_dict(vae.state_dict())
    model.requires_grad_(False)
    params = trainable_parameters(model, trainable)
    for p in params:
        p.requires_grad_(True)
    model.encoder.eval()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    noise = torch.Generator().manual_seed(seed + 1)
    step, started = 0, time.time()
    while step < steps:
        for rgba in loader:
            colour, alpha = rgba[:, :3], rgba[:, 3:]
            target = composite(colour, alpha, background)
            with torch.no_grad():  # posterior samples, as the UNet's latents are drawn from the same distribution
                posterior = model.encode(target * 2 - 1).latent_dist
                latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise)
            if with_alpha:
                colour_hat, alpha_hat = decode_rgba(model, latents)
                loss = (composite_weight * F.mse_loss(composite(colour_hat, alpha_hat, background), target)
                        + F.mse_loss(alpha_hat, alpha))
            else:
                loss = F.mse_loss((model.decode(latents).sample.clamp(-1, 1) + 1) / 2, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % 250 == 0 or step == steps:
                log.info("alpha decoder step %d/%d loss %.5f (%.0f s)", step, steps, loss.item(),
                         time.time() - started)
            if step == steps:
                break
    return model.eval()


def load_vae(path, allow_pickle: bool = False, key: str = "pipeline", switch: Optional[str] = "allow_pickle=true"):
    """The VAE of a pipeline directory, or a VAE folder itself; a ConfigError naming `key` where there is none.
    Safetensors only unless `allow_pickle` (see models.safe_load.weights_kwargs; `switch` is named in a refusal)."""
    from diffusers import AutoencoderKL

    from style_tailoring.config import ConfigError, config_path

    path = config_path(key, path)
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise ConfigError(key, f"no VAE at {path} (expected {path}/vae/config.json or {path}/config.json)")
    return AutoencoderKL.from_pretrained(folder, **weights_kwargs(folder, allow_pickle, key=key, switch=switch)).eval()


def train_decoder(pipeline, data_dirs, out, *, background: tuple[int, int, int] = (255, 255, 255),
                  resolution: Optional[int] = None, steps: int = 1500, batch_size: int = 32, lr: float = 3e-4,
                  seed: int = 0, with_alpha: bool = True, composite_weight: float = 1.0, trainable: str = "decoder",
                  allow_pickle: bool = False, command: str = "") -> Path:
    """`python -m style_tailoring.alpha action=train`: the alpha decoder of `pipeline`'s VAE (a pipeline or VAE
    folder) trained on the RGBA images of `data_dirs` and saved into `out` with its alpha.json (`command`, the
    command line that made it, is recorded there); resolution None: the VAE's sample size. `with_alpha=False`: the
    control, a plain 3-channel VAE folder finetuned the same way (see train_alpha_decoder)."""
    from style_tailoring.io import atomic_dir

    vae = load_vae(pipeline, allow_pickle)
    resolution = resolution or vae.config.sample_size
    started = time.time()
    model = train_alpha_decoder(vae, [Path(d) for d in data_dirs], background=background, resolution=resolution,
                                steps=steps, batch_size=batch_size, lr=lr, seed=seed, with_alpha=with_alpha,
                                composite_weight=composite_weight, trainable=trainable)
    if not with_alpha:  # the control is a plain 3-channel VAE folder
        with atomic_dir(Path(out)) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        return Path(out)
    from style_tailoring.provenance import portable

    about = {"source_vae": portable(pipeline), "data": [portable(d) for d in data_dirs], "resolution": resolution,
             "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
             "composite_weight": composite_weight, "trainable": trainable,
             "train_seconds": round(time.time() - started), "command": command}
    return save_alpha_decoder(model, out, background=background, source_digest=encoder_digest(vae), about=about)


def save_alpha_decoder(vae, out_dir: Path, *, background: tuple[int, int, int], source_digest: str,
                       about: dict) -> Path:
    """The 4-channel AutoencoderKL and its alpha.json, written into `out_dir` atomically."""
    from style_tailoring.io import atomic_dir, drop_load_paths

    with atomic_dir(Path(out_dir)) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
        drop_load_paths(tmp)
        (tmp / ALPHA_FILE).write_text(json.dumps({"background": list(background), "encoder_digest": source_digest,
                                                  **about}, indent=2) + "\n")
    return Path(out_dir)


def read_alpha_info(path, key: str = "model.alpha_decoder") -> dict:
    """alpha.json of an alpha decoder folder; a ConfigError naming `key` when the folder is not one."""
    from style_tailoring.config import ConfigError, config_path

    folder = config_path(key, path)
    info_file, config_file = folder / ALPHA_FILE, folder / "config.json"
    if not info_file.is_file() or not config_file.is_file():
        raise ConfigError(key, f"{path} is not an alpha decoder folder (needs config.json and {ALPHA_FILE}; "
                               "make one with `python -m style_tailoring.alpha action=train`)")
    try:
        info = json.loads(info_file.read_text())
        out_channels = json.loads(config_file.read_text()).get("out_channels")
    except ValueError as err:
        raise ConfigError(key, f"{folder}: unreadable JSON ({err})") from None
    if out_channels != 4 or "background" not in info or "encoder_digest" not in info:
        raise ConfigError(key, f"{folder}: not an alpha decoder (out_channels {out_channels}, "
                               f"alpha.json keys {sorted(info)})")
    return info


def check_alpha_decoder(path, background: str, key: str = "model.alpha_decoder") -> None:
    """Before any work: `path` (if set) is an alpha decoder trained on `background`, the data.background colour;
    the encoder it needs is checked once the model is loaded (attach_alpha_decoder)."""
    from style_tailoring.config import ConfigError
    from style_tailoring.data.images import parse_background

    if path:
        info = read_alpha_info(path, key)
        try:
            colour = parse_background(background)
        except ValueError as err:
            raise ConfigError("data.background", str(err)) from None
        if tuple(info["background"]) != colour:
            raise ConfigError(key, f"{path} was trained on background {tuple(info['background'])} but "
                                   f"data.background is {background!r} {colour}")


def attach_alpha_decoder(vae, path, *, background: Optional[tuple[int, int, int]] = None,
                         key: str = "model.alpha_decoder"):
    """The alpha decoder at `path` in place of `vae`, after checking that it was trained behind this very encoder
    (and, when given, on the same background the images are composited onto)."""
    from diffusers import AutoencoderKL

    from style_tailoring.config import ConfigError

    info = read_alpha_info(path, key)
    if background is not None and tuple(info["background"]) != tuple(background):
        raise ConfigError(key, f"{path} was trained on background {tuple(info['background'])} but data.background "
                               f"is {tuple(background)}: the composite the UNet learnt would not match")
    digest = encoder_digest(vae)
    if info["encoder_digest"] != digest:
        raise ConfigError(key, f"{path} was trained behind another VAE encoder (digest {info['encoder_digest']}, "
                               f"this model's is {digest}): its decoder does not fit these latents")
    # safetensors only: alpha decoders are this package's own folders (save_alpha_decoder writes safetensors)
    alpha_vae = AutoencoderKL.from_pretrained(Path(path).expanduser(), **weights_kwargs(path, key=key, switch=None))
    return alpha_vae.to(device=vae.device, dtype=vae.dtype).eval()


@torch.no_grad()
def decoder_grid(pipeline, decoder, prompts, out, *, n: int = 8, suffix: str = "", guidance: float = 3.0,
                 num_inference_steps: int = 25, seed: int = 0, zoom: int = 3, allow_pickle: bool = False) -> Path:
    """`python -m style_tailoring.alpha action=grid`: the same latents of `pipeline` (the first `n` prompts of
    `prompts`, + `suffix`, one seed each from `seed`) decoded by its RGB decoder and by the alpha decoder `decoder`,
    over a checkerboard and on white: a PNG of three rows, each image `zoom` times enlarged, written to `out`."""
    import numpy as np
    from diffusers import DiffusionPipeline
    from PIL import Image

    from style_tailoring.alpha.matte import checkerboard_composite, to_rgba_uint8
    from style_tailoring.sampling.generate import load_prompts

    pipe = DiffusionPipeline.from_pretrained(pipeline, **weights_kwargs(pipeline, allow_pickle, key="pipeline",
                                                                        switch="allow_pickle=true"))
    pipe.set_progress_bar_config(disable=True)
    alpha_vae = attach_alpha_decoder(pipe.vae, decoder, key="decoder")
    prompts = load_prompts(prompts)[:n]
    latents = pipe([p + suffix for p in prompts], num_inference_steps=num_inference_steps, guidance_scale=guidance,
                   generator=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))],
                   output_type="latent").images / pipe.vae.config.scaling_factor
    rgb = ((pipe.vae.decode(latents).sample.clamp(-1, 1) + 1) / 2)
    decoded = (alpha_vae.decode(latents).sample.clamp(-1, 1) + 1) / 2
    rgba = to_rgba_uint8(decoded[:, :3], decoded[:, 3:])
    white = composite(decoded[:, :3], decoded[:, 3:], (255, 255, 255))
    as_uint8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    rows = [as_uint8(rgb), np.stack([checkerboard_composite(x) for x in rgba]), as_uint8(white)]
    sheet = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    image = Image.fromarray(sheet)
    image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return Path(out)
