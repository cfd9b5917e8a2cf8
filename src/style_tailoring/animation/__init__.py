"""Animated stickers: a sticker image and a prompt become a short loop (the Animated Stickers seed).

model.py  the image UNet turned into diffusers' `UNetMotionModel` (motion modules from a `MotionAdapter`, the
          conditioning sticker's latent concatenated to the noisy latents), an exact no-op over the image model at
          the start; sample.py the sampling loop on it.
"""
