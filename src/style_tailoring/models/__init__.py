"""Build or load diffusers components (UNet, VAE, text encoders, scheduler), encode prompts, export pipelines."""
