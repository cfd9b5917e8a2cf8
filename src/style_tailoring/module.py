"""The one LightningModule: a single denoising training step serves every strategy.

The batch already says which source each sample came from and which timestep it trains (the plan decided that in
the data stream), so the step is the diffusers text-to-image step: encode, noise at the given timesteps, predict,
MSE against the scheduler's target. Only the UNet trains; the VAE and text encoders are frozen and are left out
of checkpoints (they are rebuilt from the model config on resume).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from style_tailoring.models import Components, encode_prompts, freeze, training_scheduler
from style_tailoring.strategies import Plan

FROZEN_PREFIXES = ("vae.", "text_encoder.", "text_encoder_2.")


class DiffusionFinetune(L.LightningModule):
    def __init__(self, comps: Components, plan: Plan, optim_cfg, resolution: int, prediction_type=None, seed=0):
        super().__init__()
        self.seed, self.micro_batch = seed, 0
        self.comps = comps
        self.unet, self.vae, self.text_encoder = comps.unet, comps.vae, comps.text_encoder
        self.text_encoder_2 = comps.text_encoder_2
        freeze(self.vae, self.text_encoder, self.text_encoder_2)
        self.unet.train()
        self.noise_scheduler = training_scheduler(comps, prediction_type)
        self.plan, self.optim_cfg, self.resolution = plan, optim_cfg, resolution
        self.strict_loading = False  # checkpoints hold the UNet only

    # -- the step -------------------------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """Noise for (seed, step, rank, micro-batch) alone, so a resumed run draws exactly what it would have."""
        key = (self.seed, self.global_step, self.global_rank, self.micro_batch)
        return torch.Generator(device=self.device).manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, generator=None) -> torch.Tensor:
        latents = self.vae.encode(pixel_values.to(self.vae.dtype)).latent_dist.sample(generator)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def target(self, latents, noise, timesteps):
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def training_step(self, batch, batch_idx):
        self.micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        generator = self.step_generator()
        latents = self.encode_images(batch["pixel_values"], generator)
        cond = encode_prompts(self.comps, batch["text"], self.device, self.resolution)
        timesteps = batch["timesteps"]
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        pred = self.unet(noisy, timesteps, **cond).sample
        loss = F.mse_loss(pred.float(), self.target(latents, noise, timesteps).float())
        self.log("train/loss", loss, prog_bar=True)
        self.log_routing(batch)
        return loss

    def log_routing(self, batch) -> None:
        """Per source: how many samples this step had and the timestep range they used, to check the split."""
        timesteps, sources = batch["timesteps"], batch["source"]
        self.log("train/stage", batch["stage"].float())
        for i, name in enumerate(self.plan.sources):
            mask = sources == i
            self.log(f"train/{name}/n", mask.sum().float(), reduce_fx="sum")
            if mask.any():
                t = timesteps[mask].float()
                self.log(f"train/{name}/t_min", t.min(), reduce_fx="min")
                self.log(f"train/{name}/t_max", t.max(), reduce_fx="max")

    # -- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        params = [p for p in self.unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                      weight_decay=cfg.weight_decay)
        warmup = max(int(cfg.warmup_steps), 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(FROZEN_PREFIXES)]:
            del state[key]
        checkpoint["style_tailoring_plan"] = self.plan.describe()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("style_tailoring_plan")
        if saved is not None and saved != self.plan.describe():
            raise ValueError(
                "ckpt_path: the checkpoint was trained with a different plan (strategy, t_split, data.mixture or "
                f"stage steps).\n saved: {saved}\n now:   {self.plan.describe()}"
            )
