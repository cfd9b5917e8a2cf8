"""How well an alpha decoder cuts stickers out, on VAE round trips of held-out transparent renders.

Each test image (true straight colour F, matte a) is composited onto the background (C), encoded (posterior mode)
and decoded twice from the same latents: by the alpha decoder (F̂, â) and by the 3-channel decoder it was made
from (Ĉ₃). Reported, as means over the test images:
- the alpha decoder: alpha IoU, boundary F-score, alpha MAE against a, and PSNR of its composite F̂·â + b·(1 − â)
  against C;
- the 3-channel decoder: PSNR of Ĉ₃ against C (the alpha decoder's composite may lose at most 0.5 dB to it), and,
  given the control (the 3-channel decoder finetuned decoder-only on the same composites, same steps), its PSNR:
  the fair reference, since the alpha decoder's extra training on stickers also sharpens its colours;
- the baseline a user tries first: a binary matte thresholded from Ĉ₃ against the known background colour, with
  the threshold chosen on the (training) tuning set for the best IoU, then scored on the test set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from style_tailoring.alpha.matte import (
    RGBAFolder,
    alpha_iou,
    boundary_f,
    composite,
    psnr,
    threshold_matte,
)

THRESHOLDS = tuple(range(2, 80, 2))  # the baseline's candidate thresholds (0–255 per channel)


@torch.no_grad()
def round_trip(encoder_vae, data: RGBAFolder, background, decoders: dict, batch_size: int = 64,
               limit: int | None = None) -> dict:
    """True tensors of (the first `limit` images of) `data`, and their composites encoded once by `encoder_vae`
    (posterior mode) and decoded by each of `decoders` (VAEs behind that same encoder: decoder-only finetunes),
    3 or 4 channels: {"alpha", "composite", "decoded": {name: N×C×H×W}}."""
    true, decoded = [], {name: [] for name in decoders}
    n = len(data) if limit is None else min(limit, len(data))
    for start in range(0, n, batch_size):
        rgba = torch.stack([data[i] for i in range(start, min(start + batch_size, n))])
        latents = encoder_vae.encode(composite(rgba[:, :3], rgba[:, 3:], background) * 2 - 1).latent_dist.mode()
        true.append(rgba)
        for name, vae in decoders.items():
            decoded[name].append((vae.decode(latents).sample.clamp(-1, 1) + 1) / 2)
    true = torch.cat(true)
    return {"alpha": true[:, 3:], "composite": composite(true[:, :3], true[:, 3:], background),
            "decoded": {name: torch.cat(parts) for name, parts in decoded.items()}}


def tune_threshold(rgb_vae, tune: RGBAFolder, background, limit: int = 256) -> float:
    """The baseline's threshold with the best mean IoU on the tuning images."""
    out = round_trip(rgb_vae, tune, background, {"rgb": rgb_vae}, limit=limit)
    scores = [alpha_iou(threshold_matte(out["decoded"]["rgb"], background, tau), out["alpha"]).mean().item()
              for tau in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(scores))])


def measure(alpha_vae, rgb_vae, test_dir: Path, tune_dir: Path, background, resolution: int,
            control_vae=None) -> dict:
    """Per-image scores of the alpha decoder and the baseline, and their means (see the module docstring).
    `control_vae`: the 3-channel decoder finetuned like the alpha decoder (train --no-alpha), whose composite PSNR is
    what the alpha channel's cost is measured against."""
    test = RGBAFolder(test_dir, resolution)
    decoders = {"alpha": alpha_vae, "rgb": rgb_vae, **({"control": control_vae} if control_vae is not None else {})}
    out = round_trip(rgb_vae, test, background, decoders)
    decoded, truth, target = out["decoded"], out["alpha"], out["composite"]
    colour_hat, alpha_hat = decoded["alpha"][:, :3], decoded["alpha"][:, 3:]
    tau = tune_threshold(rgb_vae, RGBAFolder(tune_dir, resolution), background)
    baseline = threshold_matte(decoded["rgb"], background, tau)
    per_image = {
        "alpha_decoder/alpha_iou": alpha_iou(alpha_hat, truth),
        "alpha_decoder/boundary_f": boundary_f(alpha_hat, truth),
        "alpha_decoder/alpha_mae": (alpha_hat - truth).abs().flatten(1).mean(1),
        "alpha_decoder/psnr_composite": psnr(composite(colour_hat, alpha_hat, background), target),
        "rgb_decoder/psnr_composite": psnr(decoded["rgb"], target),
        "threshold_baseline/alpha_iou": alpha_iou(baseline, truth),
        "threshold_baseline/boundary_f": boundary_f(baseline, truth),
        "threshold_baseline/alpha_mae": (baseline - truth).abs().flatten(1).mean(1),
    }
    if control_vae is not None:
        per_image["rgb_finetuned/psnr_composite"] = psnr(decoded["control"], target)
    means = {name: float(values.mean()) for name, values in per_image.items()}
    means["psnr_drop_db"] = means["rgb_decoder/psnr_composite"] - means["alpha_decoder/psnr_composite"]
    if control_vae is not None:
        means["psnr_drop_vs_finetuned_db"] = (means["rgb_finetuned/psnr_composite"]
                                              - means["alpha_decoder/psnr_composite"])
    return {"n_test": len(test), "background": list(background), "threshold_baseline/tau": tau, **means,
            "per_image": {name: values.tolist() for name, values in per_image.items()}}


def measure_decoder(decoder, pipeline, test_dir, tune_dir, *, background: Optional[tuple[int, int, int]] = None,
                    control=None, allow_pickle: bool = False, out=None) -> dict:
    """`python -m style_tailoring.alpha action=measure`: `measure` of the alpha decoder folder `decoder` behind
    `pipeline`'s VAE (and the control VAE folder `control`, if given), at the decoder's resolution, on `background`
    (None: the one it was trained on); the result, also written to `out` (JSON) when given."""
    from diffusers import AutoencoderKL

    from style_tailoring.alpha.decoder import load_vae, read_alpha_info
    from style_tailoring.io import write_json
    from style_tailoring.models.safe_load import weights_kwargs

    info = read_alpha_info(decoder, "decoder")
    background = background or tuple(info["background"])
    rgb_vae = load_vae(pipeline, allow_pickle)
    alpha_vae = AutoencoderKL.from_pretrained(Path(decoder), **weights_kwargs(decoder, key="decoder",
                                                                              switch=None)).eval()
    control_vae = load_vae(control, allow_pickle, key="control") if control else None
    result = measure(alpha_vae, rgb_vae, Path(test_dir), Path(tune_dir), background, info.get("resolution") or
                     rgb_vae.config.sample_size, control_vae=control_vae)
    if out:
        from style_tailoring.provenance import portable

        write_json(Path(out), {"decoder": portable(decoder), **result})
    return result
