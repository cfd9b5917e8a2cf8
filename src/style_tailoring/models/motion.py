"""The animation model: the image UNet with diffusers' motion modules and the conditioning sticker's latent.

`build_animation_unet` wraps a `UNet2DConditionModel` into a `UNetMotionModel` (`from_unet2d` with a
`MotionAdapter` sized to it). Two changes make the result start as the image model, frame by frame, so finetuning
starts from what the image model draws instead of from noise the fresh layers add:
- every motion module's output projection is zeroed: a fresh AnimateDiff transformer is not an identity (its
  residual branch adds its projection's output), a zero projection makes it one;
- image conditioning widens `conv_in` by the latent channels, as InstructPix2Pix does, through the adapter's own
  `conv_in_channels` (how diffusers' PIA extends it); the new input weights are zero, so the conditioning latent
  changes nothing until training teaches it to. It is given on the middle frame (`conditioning="middle"`, zeros on
  the others: the paper's choice) or on every frame (`"all"`).
`UNetMotionModel.forward` wants one text embedding per frame (B · F, tokens, dim), frames of a clip adjacent:
`frame_embeddings` repeats a clip's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

CONDITIONING = ("middle", "all", "none")


def motion_adapter_for(unet, *, heads: int = 4, max_frames: int = 32, conditioning: str = "middle"):
    """A `MotionAdapter` whose blocks match `unet`'s, with a widened, zero-initialised conv_in when conditioned."""
    from diffusers import MotionAdapter

    if conditioning not in CONDITIONING:
        raise ValueError(f"conditioning must be one of {CONDITIONING}, got {conditioning!r}")
    config = unet.config
    channels = config.in_channels
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels), motion_layers_per_block=config.layers_per_block,
        motion_num_attention_heads=heads, motion_norm_num_groups=config.norm_num_groups,
        motion_max_seq_length=max_frames,
        conv_in_channels=2 * channels if conditioning != "none" else None)
    zero_motion_outputs(adapter)
    if adapter.conv_in is not None:
        with torch.no_grad():
            adapter.conv_in.weight[:, channels:].zero_()
    return adapter


def zero_motion_outputs(module: nn.Module) -> nn.Module:
    """Zero the output projection of every motion module in `module` (adapter or motion UNet): each becomes an
    identity over its input."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    with torch.no_grad():
        for block in module.modules():
            if isinstance(block, AnimateDiffTransformer3D):
                block.proj_out.weight.zero_()
                block.proj_out.bias.zero_()
    return module


def build_animation_unet(unet, *, heads: int = 4, conditioning: str = "middle"):
    """The image UNet as a `UNetMotionModel` that equals it frame by frame (see the module docstring)."""
    from diffusers import UNetMotionModel

    adapter = motion_adapter_for(unet, heads=heads, conditioning=conditioning)
    return UNetMotionModel.from_unet2d(unet, adapter)


def is_conditioned(motion_unet) -> bool:
    return motion_unet.config.in_channels > motion_unet.config.out_channels


def model_input(noisy: torch.Tensor, condition: torch.Tensor | None, conditioning: str) -> torch.Tensor:
    """The motion UNet's input: noisy latents (B, C, F, H, W) with the conditioning latent (B, C, H, W) on the
    middle frame (zeros elsewhere) or on every frame, concatenated on the channels."""
    if conditioning == "none":
        return noisy
    frames = noisy.shape[2]
    if conditioning == "all":
        extra = condition[:, :, None].expand(-1, -1, frames, -1, -1)
    else:
        extra = torch.zeros_like(noisy)
        extra[:, :, frames // 2] = condition
    return torch.cat([noisy, extra.to(noisy.dtype)], dim=1)


def frame_embeddings(embeddings: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, tokens, dim) text embeddings → (B · frames, tokens, dim), each clip's repeated over its frames (the
    layout `UNetMotionModel` folds its frames into)."""
    return embeddings.repeat_interleave(frames, dim=0)


def save_motion_adapter(motion_unet, directory, *, heads: int, conditioning: str, frames: int) -> None:
    """The trained motion modules and conv_in as a diffusers `MotionAdapter` (conv_in held as its
    `conv_in_channels` extension, as PIA's adapters are), with `animation.json` beside it (how the sticker is
    given, how many frames). With `model.motion.train=motion` the rest of the UNet is the image model's, so image
    pipeline + adapter is the trained model exactly (`load_animation_pipeline(..., motion_adapter=...)`)."""
    import json
    from pathlib import Path

    from diffusers import MotionAdapter

    config = motion_unet.config
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels), motion_layers_per_block=config.layers_per_block,
        motion_num_attention_heads=heads, motion_norm_num_groups=config.norm_num_groups,
        motion_max_seq_length=config.motion_max_seq_length,
        conv_in_channels=config.in_channels if config.in_channels != config.out_channels else None)
    state = {k: v for k, v in motion_unet.state_dict().items() if "motion_modules" in k}
    if adapter.conv_in is not None:
        state.update({f"conv_in.{k}": v for k, v in motion_unet.conv_in.state_dict().items()})
    adapter.load_state_dict(state)
    adapter.save_pretrained(directory, safe_serialization=True)
    (Path(directory) / "animation.json").write_text(json.dumps(
        {"conditioning": conditioning, "frames": frames, "heads": heads}, indent=2))
