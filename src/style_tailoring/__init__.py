"""Style Tailoring: finetune latent diffusion models into a visual domain."""
