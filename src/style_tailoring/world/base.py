"""The Sticker World's base model: a tiny photo-oriented LDM, the stand-in for Emu / Stable Diffusion.

Built in two steps:
1. the VAE learns to reconstruct 32 px images (MSE + a small KL term) of a broad mix — the `pretrain` photos and
   the sticker-like `domain` images, as a real LDM's VAE sees web images of every kind, so that it reconstructs
   stickers too (the `ceiling` step measures what survives a round trip) — and its latent scaling factor is
   measured;
2. the UNet is trained with the project's own training core (`strategy=base` on the `pretrain` set: photos and a
   few stereotyped stickers, the same code path every finetune uses), with 10% of the captions dropped, so the
   unconditional branch that classifier-free guidance uses is trained. The text encoder is a randomly
   initialised CLIP text model over the world's vocabulary, kept frozen, as a real LDM keeps its pretrained one:
   its token embeddings are distinct per word, which is all the UNet's cross-attention needs.
The result is an ordinary diffusers pipeline directory (`assets/sticker_world/base`). The student base
(`assets/sticker_world/student`) is the same with a UNet of half the width, for the ensemble's distillation.

The SD3-family base (`assets/sticker_world/base_sd3`, step `sd3`) is the same world in the other family: a
flow-matching `SD3Transformer2DModel` of about the UNet's size (1.18 M parameters against 1.66 M) on the base's
trained VAE (the same 16×16×4 latents) and tokenizer (16-token prompts), two randomly initialised CLIP text encoders
with projection, no T5 (and no zero padding in its place: max_sequence_length 0), a `FlowMatchEulerDiscreteScheduler`
without shift (the world's images are tiny; SD3's shift of 3 is for 1024 px). Its transformer is pretrained exactly
as the UNet was, by the same training core with the same recipe.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from style_tailoring.config import ModelConfig, TinyModelConfig
from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.models.components import build_sd3, build_tiny, export_pipeline, make_pipeline

log = logging.getLogger(__name__)

# The world's model: 32 px images, 16×16×4 latents, a three-level UNet, 16-token prompts.
WORLD_MODEL = ModelConfig(
    name="sticker_world_base",
    resolution=32,
    tiny=TinyModelConfig(unet_channels=[32, 64, 64], layers_per_block=1, vae_channels=[32, 64], latent_channels=4,
                         text_hidden_size=32, text_layers=2, norm_num_groups=8),
)
PROMPT_TOKENS = 16
CAPTION_DROPOUT = 0.1  # as Stable Diffusion was trained: the unconditional branch learns from 10% empty captions
VAE_SETS = ("pretrain", "domain")  # the VAE's broad mix


def train_vae(vae, images_dirs: list[Path], steps: int, batch_size: int = 32, lr: float = 1e-3,
              kl_weight: float = 1e-6, seed: int = 0):
    """Reconstruction training of the (tiny) AutoencoderKL, then its latent scaling factor = 1 / std(latents)."""
    from torch.utils.data import ConcatDataset

    data = ConcatDataset([ImageCaptionFolder(d, resolution=WORLD_MODEL.resolution) for d in images_dirs])
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    step, started = 0, time.time()
    while step < steps:
        for batch in loader:
            x = batch["pixel_values"]
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            step += 1
            if step % 200 == 0:
                log.info("vae step %d/%d loss %.4f (%.0f s)", step, steps, loss.item(), time.time() - started)
            if step == steps:
                break
    vae.eval()
    with torch.no_grad():
        picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:512].tolist()
        sample = torch.stack([data[i]["pixel_values"] for i in picks])
        latents = vae.encode(sample).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def initial_pipeline(out_dir: Path, vae_steps: int, data_dir: Path, seed: int = 0) -> Path:
    """Random UNet and text encoder over the world's vocabulary, with a trained VAE, saved as a pipeline."""
    from style_tailoring.world.grammar import vocabulary

    comps = build_tiny(WORLD_MODEL, seed=seed, words=vocabulary(), max_tokens=PROMPT_TOKENS)
    train_vae(comps.vae, [Path(data_dir) / name for name in VAE_SETS], steps=vae_steps, seed=seed)
    make_pipeline(comps).save_pretrained(out_dir)
    return out_dir


# The ensemble's student (issue: ensemble of teachers): the base's VAE and text encoder with a UNet of half the width.
STUDENT_UNET_CHANNELS = [16, 32, 32]


def build_base(data_dir: Path, out_dir: Path, *, vae_steps: int = 1200, unet_steps: int = 4000,
               batch_size: int = 32, lr: float = 5e-4, seed: int = 0) -> Path:
    """Train the whole base model; writes a diffusers pipeline to `out_dir` (atomically)."""
    work = Path(out_dir).parent / ".base_build"
    stage0 = work / "stage0"
    if not (stage0 / "model_index.json").is_file():  # the VAE step is kept if a later step fails
        initial_pipeline(stage0, vae_steps, Path(data_dir), seed)
    return pretrain_unet(stage0, data_dir, out_dir, work, unet_steps=unet_steps, batch_size=batch_size, lr=lr,
                         seed=seed)


def build_student(data_dir: Path, base_dir: Path, out_dir: Path, *, unet_steps: int = 4000, batch_size: int = 32,
                  lr: float = 5e-4, seed: int = 0) -> Path:
    """The student base: the shipped base's VAE, text encoder and tokenizer with a narrower, randomly initialised
    UNet, pretrained on the same photo data with the same recipe as the base's UNet."""
    from dataclasses import replace

    from diffusers import DiffusionPipeline

    work = Path(out_dir).parent / ".student_build"
    stage0 = work / "stage0"
    if not (stage0 / "model_index.json").is_file():
        pipe = DiffusionPipeline.from_pretrained(base_dir, use_safetensors=True)
        narrow = replace(WORLD_MODEL, tiny=replace(WORLD_MODEL.tiny, unet_channels=list(STUDENT_UNET_CHANNELS)))
        pipe.unet = build_tiny(narrow, seed=seed + 1).unet
        pipe.save_pretrained(stage0, safe_serialization=True)
    return pretrain_unet(stage0, data_dir, out_dir, work, unet_steps=unet_steps, batch_size=batch_size, lr=lr,
                         seed=seed)


# The SD3-family base's transformer and text encoders (the VAE and tokenizer are the base's).
WORLD_SD3 = {"layers": 8, "heads": 4, "head_dim": 16, "text_hidden_size": 32, "text_layers": 2, "shift": 1.0}
# No T5, and no zero tokens in its place: the prompt is the two CLIP encoders' 16 tokens (the pipeline pads
# max_sequence_length zeros; they would carry nothing and cost a fifth more tokens per step).
WORLD_SD3_SEQUENCE_LENGTH = 0


def build_sd3_base(data_dir: Path, base_dir: Path, out_dir: Path, *, unet_steps: int = 4000, batch_size: int = 32,
                   lr: float = 5e-4, seed: int = 0) -> Path:
    """The SD3-family base: WORLD_SD3 over `base_dir`'s VAE and tokenizer, its transformer pretrained on the
    pretrain set with the UNet base's recipe; writes a StableDiffusion3Pipeline directory to `out_dir` (atomically)."""
    from diffusers import AutoencoderKL
    from transformers import AutoTokenizer

    work = Path(out_dir).parent / ".sd3_build"
    stage0 = work / "stage0"
    if not (stage0 / "model_index.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(base_dir, subfolder="tokenizer")
        vae = AutoencoderKL.from_pretrained(base_dir, subfolder="vae", use_safetensors=True)
        comps = build_sd3(tokenizer, vae, resolution=WORLD_MODEL.resolution, seed=seed,
                          max_sequence_length=WORLD_SD3_SEQUENCE_LENGTH, **WORLD_SD3)
        export_pipeline(comps, stage0)  # records the sequence length the pretraining reads
    return pretrain_unet(stage0, data_dir, out_dir, work, unet_steps=unet_steps, batch_size=batch_size, lr=lr,
                         seed=seed)


def pretrain_unet(stage0: Path, data_dir: Path, out_dir: Path, work: Path, *, unet_steps: int, batch_size: int,
                  lr: float, seed: int) -> Path:
    """Train `stage0`'s UNet (an SD3 pipeline's transformer) on the pretrain set with the project's own training
    core (`strategy=base`)."""
    from style_tailoring.config import compose, to_run_config
    from style_tailoring.io import atomic_dir
    from style_tailoring.training.run import run

    shutil.rmtree(work / "run", ignore_errors=True)
    cfg = compose("train", overrides=[
        "data=folder", "strategy=base", "model=pretrained", f"model.pretrained={stage0}",
        f"model.resolution={WORLD_MODEL.resolution}", f"data.domain_dir={Path(data_dir) / 'pretrain'}",
        f"data.batch_size={batch_size}", f"trainer.max_steps={unet_steps}", f"optim.lr={lr}",
        "optim.warmup_steps=200", "eval.enabled=false", "logger=csv", f"run_dir={work / 'run'}",
        f"paths.root_dir={work}", f"checkpoint.every_n_steps={unet_steps}", f"seed={seed}",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=100",
        f"data.caption_dropout={CAPTION_DROPOUT}",
    ])
    run(to_run_config(cfg))
    with atomic_dir(Path(out_dir)) as tmp:  # not the model card: it describes the build's temporary run
        shutil.copytree(work / "run" / "pipeline", tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    shutil.rmtree(work, ignore_errors=True)
    return Path(out_dir)
