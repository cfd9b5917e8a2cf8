"""The one LightningModule: a single denoising training step serves every strategy.

The batch already says which source each sample came from, which timestep it trains and how much its loss counts
(the plan decided that in the data stream), so the step is the diffusers text-to-image step: latents (from the
cache's posterior, or the VAE), noise at the given timesteps, predict, per-sample MSE against the target times the
route's weight. The model's family decides the noise and the target in one place (`noised`): the UNet family's
DDPM schedule (epsilon or v-prediction, optionally min-SNR weighted), or the SD3 family's flow matching (the route's
timestep as a noise level σ, the velocity target, `loss.weighting_scheme`: models/flow.py). The denoiser (UNet or
transformer) trains (fully, or its LoRA adapters), and the text encoders too with `model.train_text_encoder`
(StyleForge); what does not train is frozen, left out of checkpoints, and not even moved to the device when the cache
makes it unnecessary. A LoRA run's checkpoints hold the adapters alone: the base denoiser is rebuilt from the model
config. Checkpoint keys start with the denoiser's pipeline name (`unet.`, `transformer.`).
"""

from __future__ import annotations

import contextlib

import lightning as L
import torch
import torch.nn.functional as F

from style_tailoring.config import encodes_text_live
from style_tailoring.models.components import (
    Components,
    encode_posterior,
    encode_prompts,
    freeze,
    sdxl_time_ids,
    training_scheduler,
)
from style_tailoring.models.flow import flow_inputs, flow_loss_weights, flow_sigmas
from style_tailoring.plan import Plan

FROZEN_PREFIXES = ("vae.", "text_encoder.", "text_encoder_2.", "text_encoder_3.")
TEXT_PREFIXES = ("text_encoder.", "text_encoder_2.", "text_encoder_3.")


class DiffusionFinetune(L.LightningModule):
    def __init__(self, comps: Components, plan: Plan, cfg, *, cached_latents: bool = False,
                 cached_text: bool = False, ico_sizes: dict[str, int] | None = None):
        super().__init__()
        self.comps, self.plan, self.cfg = comps, plan, cfg
        self.seed, self.micro_batch, self.resolution = cfg.seed, 0, cfg.model.resolution
        # Registered under its pipeline name, which prefixes its checkpoint keys: `unet.`, or `transformer.`.
        setattr(self, comps.denoiser_name, comps.denoiser)
        freeze(comps.vae, comps.text_encoder, comps.text_encoder_2, comps.text_encoder_3)
        # Registered (so moved to the device) only when the step needs them.
        if not cached_latents:
            self.vae = comps.vae
        if encodes_text_live(cfg) and cached_text:
            raise ValueError("a trained text encoder or ICO's contexts cannot read cached text embeddings")
        if not cached_text:
            self.text_encoder, self.text_encoder_2 = comps.text_encoder, comps.text_encoder_2
            if comps.text_encoder_3 is not None:
                self.text_encoder_3 = comps.text_encoder_3
        for encoder in self.text_encoders() if self.trains_text_encoder else ():
            encoder.requires_grad_(True)
            encoder.train()
        self.noise_scheduler = training_scheduler(comps, cfg.model.prediction_type)
        self.contexts = None
        if ico_sizes:
            from style_tailoring.training.contexts import ImageContexts, template_embeddings

            if comps.is_sdxl:
                raise ValueError("strategy.ico: per-image contexts are implemented for one text encoder (SD), "
                                 "not SDXL's two")
            ico = cfg.strategy.ico
            self.contexts = ImageContexts(ico_sizes, ico.n_ctx, template_embeddings(comps, ico.init))
        self._setup_denoiser(cfg.model)
        self.ema = None
        if cfg.ema.enabled:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable_parameters(), decay=cfg.ema.decay,
                                update_after_step=cfg.ema.update_after_step)
        self.strict_loading = False  # checkpoints hold what trains: the UNet (or its LoRA adapters) alone
        # trainer=fsdp: the denoiser's structure without its weights, made before it is sharded, into which its
        # gathered weights go when a whole model is needed (export, sampling); None while it is not sharded
        self._skeleton: torch.nn.Module | None = None
        self._empty = None  # the empty prompt's conditioning, encoded on first use (caption dropout)
        self.restored_train_metrics: dict[str, float] = {}  # the resumed checkpoint's (on_load_checkpoint)
        # (timesteps, source) of every batch since the last logging step: wandb's per-source histograms
        self.histograms = cfg.logger.name == "wandb"
        self._drawn: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def denoiser(self) -> torch.nn.Module:
        """What trains: the UNet, or the SD3 family's transformer."""
        return self.comps.denoiser

    def _setup_denoiser(self, model_cfg) -> None:
        if model_cfg.lora.rank > 0:
            from peft import LoraConfig

            lora = model_cfg.lora
            self.denoiser.requires_grad_(False)
            self.denoiser.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha or lora.rank,
                                                 lora_dropout=lora.dropout, init_lora_weights="gaussian",
                                                 target_modules=list(lora.target_modules)))
        elif self.contexts is not None and self.cfg.strategy.ico.unet == "kv":  # ICO's own recipe
            for name, param in self.denoiser.named_parameters():
                param.requires_grad_(".attn2.to_k." in name or ".attn2.to_v." in name)
        elif self.comps.is_animation and model_cfg.motion.train == "motion":
            # The motion modules, and conv_in, whose new input channels learn to read the conditioning sticker.
            for name, param in self.denoiser.named_parameters():
                param.requires_grad_("motion_modules." in name or name.startswith("conv_in."))
        if model_cfg.gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        self.denoiser.train()
        if model_cfg.compile:
            self.denoiser.compile()  # in place: parameter names (and checkpoints) stay the same

    # -- sharding (trainer=fsdp) ------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under trainer=fsdp (Lightning's ModelParallelStrategy), shard the denoiser across the ranks, block by block
        (runtime/fsdp.py); the frozen VAE and text encoders stay whole. Lightning calls this on every rank once the
        process group is up, before the optimizer is made from the (now sharded) parameters."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self._skeleton is not None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        from style_tailoring.runtime.fsdp import shard_denoiser, weightless_copy

        # Not a submodule (object.__setattr__): Lightning would materialize its meta tensors and checkpoint it.
        object.__setattr__(self, "_skeleton", weightless_copy(self.denoiser))
        shard_denoiser(self.denoiser, self.device_mesh["data_parallel"])

    def _install_denoiser(self, denoiser: torch.nn.Module) -> None:
        setattr(self.comps, self.comps.denoiser_name, denoiser)
        setattr(self, self.comps.denoiser_name, denoiser)

    @contextlib.contextmanager
    def whole_denoiser(self, everywhere: bool = True):
        """While the block runs, a whole (unsharded) copy of a sharded denoiser is the denoiser, for saving it or
        sampling from it; the sharded one is back afterwards. Under FSDP every rank must enter (the weights are
        gathered from all), and with `everywhere=False` only rank 0 gets the copy (the block may use the denoiser on
        rank 0 alone). An unsharded run is left as it is."""
        whole = self._gather_whole(everywhere)
        if whole is None:
            yield
            return
        sharded = self.denoiser
        self._install_denoiser(whole)
        try:
            yield
        finally:
            self._install_denoiser(sharded)

    def _gather_whole(self, everywhere: bool):
        if self._skeleton is None:
            return None
        from style_tailoring.runtime.fsdp import whole_copy

        return whole_copy(self._skeleton, self.denoiser, everywhere)

    def unshard(self, everywhere: bool = True) -> None:
        """After training: the whole denoiser in place of the sharded one for good (every rank calls this: a
        collective). `everywhere=False`: on rank 0 alone, the one that exports; the other ranks, which then must not
        sample, keep the sharded one and no whole copy (on a cluster, the host memory of a whole model per rank)."""
        whole = self._gather_whole(everywhere)
        if whole is not None:
            self._install_denoiser(whole)
        object.__setattr__(self, "_skeleton", None)

    @property
    def is_lora(self) -> bool:
        return self.cfg.model.lora.rank > 0

    @property
    def trains_text_encoder(self) -> bool:
        return bool(self.cfg.model.get("train_text_encoder"))

    def text_encoders(self) -> list:
        comps = self.comps
        return [e for e in (comps.text_encoder, comps.text_encoder_2, comps.text_encoder_3) if e is not None]

    def text_parameters(self) -> list:
        if not self.trains_text_encoder:
            return []
        return [p for encoder in self.text_encoders() for p in encoder.parameters() if p.requires_grad]

    def trainable_parameters(self):
        """What the optimizer and EMA see: the denoiser's trained weights, then the text encoders' when they train."""
        return [p for p in self.denoiser.parameters() if p.requires_grad] + self.text_parameters()

    # -- the step -------------------------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """Noise for (seed, step, rank, micro-batch) alone, so a resumed run draws exactly what it would have."""
        key = (self.seed, self.global_step, self.global_rank, self.micro_batch)
        return torch.Generator(device=self.device).manual_seed(hash(key) & 0x7FFF_FFFF_FFFF_FFFF)

    def latents(self, batch, generator) -> torch.Tensor:
        vae = self.comps.vae
        if "latent_mean" in batch:  # cached posterior: a fresh sample every step, as uncached training draws
            mean, std = batch["latent_mean"].float(), batch["latent_std"].float()
            latents = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
        else:
            with torch.no_grad():
                latents = encode_posterior(vae, batch["pixel_values"].to(vae.dtype)).sample(generator).float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * vae.config.scaling_factor

    def conditioning(self, batch) -> dict:
        if self.contexts is not None:
            return self.conditioning_with_contexts(batch)
        if "encoder_hidden_states" not in batch:  # dropped captions are "" in the batch's text already
            return encode_prompts(self.comps, batch["text"], self.device, self.resolution,
                                  grad=self.trains_text_encoder)
        cond = {"encoder_hidden_states": batch["encoder_hidden_states"].float()}
        if "text_embeds" in batch:
            n = len(batch["text"])
            cond["added_cond_kwargs"] = {"text_embeds": batch["text_embeds"].float(),
                                         "time_ids": sdxl_time_ids(self.resolution, n, self.device)}
        if "pooled_projections" in batch:  # the SD3 family's pooled text embedding
            cond["pooled_projections"] = batch["pooled_projections"].float()
        dropped = batch.get("caption_dropped")
        if dropped is not None and bool(dropped.any()):  # the cache holds the real caption's embedding
            empty = self.empty_prompt()
            mask = dropped.to(self.device)
            cond["encoder_hidden_states"][mask] = empty["encoder_hidden_states"][0].float()
            if "added_cond_kwargs" in cond:
                cond["added_cond_kwargs"]["text_embeds"][mask] = empty["added_cond_kwargs"]["text_embeds"][0].float()
            if "pooled_projections" in cond:
                cond["pooled_projections"][mask] = empty["pooled_projections"][0].float()
        return cond

    def conditioning_with_contexts(self, batch) -> dict:
        """ICO: the prompts of the context sources' images (captions not dropped) get their images' vectors."""
        from style_tailoring.training.contexts import encode_with_contexts

        names = [self.plan.sources[i] for i in batch["source"].tolist()]
        dropped = batch.get("caption_dropped", torch.zeros(len(names), dtype=torch.bool)).cpu()
        is_ico = torch.tensor([n in self.contexts.vectors for n in names]) & ~dropped
        rows = torch.nonzero(is_ico).flatten().tolist()
        vectors = self.contexts.lookup([names[r] for r in rows], batch["item"][rows])
        return {"encoder_hidden_states": encode_with_contexts(self.comps, batch["text"], is_ico, vectors, self.device)}

    def animation_input(self, noisy, latents, cond) -> tuple:
        """A clip's step: the conditioning sticker is the clip's own clean middle frame (what the user's sticker
        is at inference), its latent joined to the noisy ones; the text embedding repeated for every frame."""
        from style_tailoring.models.motion import frame_embeddings, model_input

        frames = latents.shape[2]
        noisy = model_input(noisy, latents[:, :, frames // 2], self.cfg.model.motion.conditioning)
        return noisy, {**cond, "encoder_hidden_states": frame_embeddings(cond["encoder_hidden_states"], frames)}

    def empty_prompt(self) -> dict:
        """The empty prompt's conditioning (what classifier-free guidance samples against), encoded once where the
        frozen text encoders live (the CPU when the text cache kept them off the device)."""
        if self._empty is None:
            home = next(self.comps.text_encoder.parameters()).device
            cond = encode_prompts(self.comps, [""], home, self.resolution)
            self._empty = {"encoder_hidden_states": cond["encoder_hidden_states"].to(self.device)}
            if "added_cond_kwargs" in cond:
                self._empty["added_cond_kwargs"] = {"text_embeds": cond["added_cond_kwargs"]["text_embeds"]
                                                    .to(self.device)}
            if "pooled_projections" in cond:
                self._empty["pooled_projections"] = cond["pooled_projections"].to(self.device)
        return self._empty

    def noised(self, latents, noise, timesteps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the denoiser's timestep input, the regression target) at the batch's route timesteps: the
        one place the step differs by family. The UNet family: the DDPM schedule's `add_noise` at t, the prediction
        type's target, t itself as the UNet's timestep. The SD3 family: flow matching at the scheduler's σ(t), the
        velocity target, σ(t)·T as the transformer's timestep (models/flow.py)."""
        if self.comps.is_flow:
            return flow_inputs(self.noise_scheduler, latents, noise, timesteps)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        return noisy, timesteps, self.target(latents, noise, timesteps)

    def target(self, latents, noise, timesteps):
        kind = self.noise_scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, timesteps)
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def snr_weights(self, timesteps) -> torch.Tensor:
        """Min-SNR-gamma (Hang et al. 2023): each timestep's loss weight, capping the low-noise ones."""
        from diffusers.training_utils import compute_snr

        gamma = self.cfg.loss.snr_gamma
        snr = compute_snr(self.noise_scheduler, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            return torch.clamp(snr, max=gamma) / (snr + 1)
        return torch.clamp(snr, max=gamma) / snr

    def loss_weights(self, timesteps):
        """Each sample's loss weight by its timestep, or None (all 1): min-SNR-γ for the UNet family
        (loss.snr_gamma), diffusers' SD3 weighting of σ for the SD3 family (loss.weighting_scheme)."""
        if self.comps.is_flow:
            return flow_loss_weights(self.noise_scheduler, timesteps, self.cfg.loss.weighting_scheme)
        return self.snr_weights(timesteps) if self.cfg.loss.snr_gamma else None

    def per_sample_loss(self, pred, target, timesteps) -> torch.Tensor:
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
        weights = self.loss_weights(timesteps)
        if weights is not None:
            per_sample = per_sample * weights
        return per_sample

    def sample_noise(self, latents, generator) -> torch.Tensor:
        """Gaussian noise, plus offset noise (one constant per sample and channel) when loss.noise_offset > 0."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device)
        if self.cfg.loss.noise_offset:
            offset = torch.randn(latents.shape[:2] + (1,) * (latents.ndim - 2), generator=generator,
                                 device=latents.device)
            noise = noise + self.cfg.loss.noise_offset * offset
        return noise

    def training_step(self, batch, batch_idx):
        self.micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        generator = self.step_generator()
        latents = self.latents(batch, generator)
        cond = self.conditioning(batch)
        timesteps = batch["timesteps"]
        noise = self.sample_noise(latents, generator)
        noisy, model_timesteps, target = self.noised(latents, noise, timesteps)
        if self.comps.is_animation:
            noisy, cond = self.animation_input(noisy, latents, cond)
        # (a UNet's and a transformer's forward both take the noisy latents first and `timestep` by name)
        pred = self.denoiser(noisy, timestep=model_timesteps, **cond).sample
        per_sample = self.per_sample_loss(pred, target, timesteps)
        loss = (per_sample * batch["weight"].to(per_sample)).mean()  # each route's loss weight, per sample
        self.log("train/loss", loss, prog_bar=True)
        if self.histograms:
            self._drawn.append((timesteps.detach(), batch["source"].detach()))
        self.log_routing(batch, per_sample.detach())
        return loss

    def log_routing(self, batch, per_sample_loss) -> None:
        """Per source: how many samples this step had, the timestep range they used (to check the split; for the
        SD3 family also as noise levels σ) and their mean loss (before the route's weight).

        Only on the steps the trainer writes logs (and the last one, for metrics.json): each `self.log` costs
        ~0.7 ms of Python, and a per-source branch syncs a GPU, so logging every step made routed strategies slower
        than `base` (measured: 5 ms of a 130 ms CPU step for two sources).
        """
        step, trainer = self.global_step + 1, self.trainer
        last = trainer.max_steps is not None and step >= trainer.max_steps > 0
        if step % max(trainer.log_every_n_steps, 1) and not last:
            return
        timesteps, sources = batch["timesteps"], batch["source"]
        self.log("train/stage", batch["stage"].float())
        for i, name in enumerate(self.plan.sources):
            mask = sources == i
            self.log(f"train/{name}/n", mask.sum().float(), reduce_fx="sum")
            if mask.any():
                t = timesteps[mask].float()
                self.log(f"train/{name}/t_min", t.min(), reduce_fx="min")
                self.log(f"train/{name}/t_max", t.max(), reduce_fx="max")
                if self.comps.is_flow:  # the same window as noise levels, the scheduler's own scale
                    sigmas = flow_sigmas(self.noise_scheduler, timesteps[mask])
                    self.log(f"train/{name}/sigma_min", sigmas.min(), reduce_fx="min")
                    self.log(f"train/{name}/sigma_max", sigmas.max(), reduce_fx="max")
                self.log(f"train/{name}/loss", per_sample_loss[mask].mean())
        if self.histograms and self.micro_batch == trainer.accumulate_grad_batches - 1:
            self.log_timestep_histograms(step)

    def log_timestep_histograms(self, step: int) -> None:
        """`train/<source>/timesteps`: a `wandb.Histogram` per source of the timesteps every rank's batches drew
        since the last logging step (gathered from all ranks: every rank gets here on the same steps)."""
        timesteps = torch.cat([t for t, _ in self._drawn])
        sources = torch.cat([s for _, s in self._drawn]).to(timesteps.device)
        self._drawn.clear()
        if self.trainer.world_size > 1:
            timesteps, sources = self.all_gather(timesteps).flatten(), self.all_gather(sources).flatten()
        logger = self.logger
        if not self.trainer.is_global_zero or logger is None or not hasattr(logger, "log_table"):
            return
        import wandb

        timesteps, sources = timesteps.cpu().numpy(), sources.cpu().numpy()
        logger.log_metrics({f"train/{name}/timesteps": wandb.Histogram(timesteps[sources == i])
                            for i, name in enumerate(self.plan.sources) if (sources == i).any()}, step=step)

    # -- EMA ------------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        """`strategy.fresh_optimizer`: a stage after the first starts from cleared AdamW moments, as a separate
        finetune would. Keyed to the step, so a run resumed at any step keeps or clears exactly what an uninterrupted
        one did (a checkpoint taken after a stage's first step already holds the fresh moments)."""
        if not self.cfg.strategy.get("fresh_optimizer") or batch_idx % self.trainer.accumulate_grad_batches:
            return
        if self.global_step in self.plan.stage_starts()[1:]:
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:  # right after the update, before any callback checkpoints this step
            self.ema.step(self.trainable_parameters())

    @contextlib.contextmanager
    def averaged_weights(self):
        """The weights to sample and export with: the EMA ones when EMA is on (restored afterwards)."""
        if self.ema is None:
            yield
            return
        params = self.trainable_parameters()
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    # -- optimisation ---------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.cfg.optim
        kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        groups = [{"params": [p for p in self.denoiser.parameters() if p.requires_grad]}]
        if self.trains_text_encoder:  # its own learning rate (StyleForge trains it far slower than the UNet)
            text_lr = cfg.get("text_encoder_lr")
            groups.append({"params": self.text_parameters(), "lr": cfg.lr if text_lr is None else text_lr})
        if self.contexts is not None:  # ICO's vectors: not decayed towards 0, which is no word at all
            ico_lr = self.cfg.strategy.ico.lr
            groups.append({"params": list(self.contexts.parameters()), "lr": cfg.lr if ico_lr is None else ico_lr,
                           "weight_decay": 0.0})
        if cfg.name == "adamw8bit":
            import bitsandbytes as bnb

            optimizer = bnb.optim.AdamW8bit(groups, **kwargs)
        else:  # the fused kernel: one launch for all parameters (~2x faster steps than foreach on CPU and GPU)
            optimizer = torch.optim.AdamW(groups, fused=True, **kwargs)
        warmup = max(int(cfg.warmup_steps), 0)
        starts = self.plan.stage_starts() if self.cfg.strategy.get("fresh_optimizer") else [0]

        def warmup_factor(step: int) -> float:  # warmup from the start of the run, or of each stage
            since = step - max(s for s in starts if s <= step)
            return min(1.0, (since + 1) / (warmup + 1))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state, prefix = checkpoint["state_dict"], f"{self.comps.denoiser_name}."
        trained = {prefix + name for name, p in self.denoiser.named_parameters() if p.requires_grad}
        frozen = tuple(p for p in FROZEN_PREFIXES if not (self.trains_text_encoder and p in TEXT_PREFIXES))
        for key in [k for k in state if k.startswith(frozen)
                    or (self.is_lora and k.startswith(prefix) and k not in trained)]:
            del state[key]  # frozen parts (and a LoRA run's base denoiser) are rebuilt from the model config
        checkpoint["style_tailoring_plan"] = self.plan.describe()
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        # A run killed after its last step (in the export or the evaluation) resumes with no step left to log
        # them, so metrics.json takes the training metrics from here
        checkpoint["train_metrics"] = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                                       if k.startswith("train/")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("style_tailoring_plan")
        if saved is not None and saved != self.plan.describe():
            raise ValueError(
                "ckpt_path: the checkpoint was trained with a different plan (strategy, t_split, data.mixture, "
                f"timestep densities or stage steps).\n saved: {saved}\n now:   {self.plan.describe()}"
            )
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        self.restored_train_metrics = checkpoint.get("train_metrics", {})

    # -- export ---------------------------------------------------------------------------------------------------
    def save_trained_weights(self, directory) -> None:
        """The trained weights: LoRA adapters (diffusers' `load_lora_weights` format, and for a UNet the kohya-ss
        file beside it: models/lora.py) or the full UNet (transformer)."""
        with self.averaged_weights():
            if self.is_lora:
                from style_tailoring.models.lora import save_lora

                save_lora(self.denoiser, directory, component=self.comps.denoiser_name)
            else:
                self.denoiser.save_pretrained(directory, safe_serialization=True)

    def finalize_weights(self, everywhere: bool = True) -> None:
        """Leave plain denoiser weights in place for export and sampling: a sharded denoiser gathered whole (every
        rank calls this; `everywhere=False`: rank 0 alone gets it, `unshard`), EMA copied in, LoRA fused and
        unloaded."""
        self.unshard(everywhere)
        if self.ema is not None:
            self.ema.copy_to(self.trainable_parameters())
        if self.is_lora:
            self.denoiser.fuse_lora()
            self.denoiser.unload_lora()
        self.denoiser.eval()
        freeze(*self.text_encoders())
