"""Build or load diffusers components (UNet, VAE, text encoders, scheduler), encode prompts, export pipelines.

components.py  build tiny / load pretrained / init_unet / export; motion.py the animation model (the image UNet as
diffusers' `UNetMotionModel`, an exact no-op over the image model at the start, and its motion-adapter export);
tokenizer.py the world-vocabulary tokenizer; safe_load.py safetensors-only loading.
"""
