"""A trained LoRA written twice beside each other: for diffusers and for the kohya/ComfyUI world.

`pytorch_lora_weights.safetensors` is diffusers' own format (`pipe.load_lora_weights(RUN/lora)`), with peft's
LoraConfig as the file's adapter metadata, so a LoRA trained with `model.lora.alpha` != rank loads at its own
scale. `pytorch_lora_weights_kohya.safetensors` holds the same adapters in the kohya-ss layout that AUTOMATIC1111,
ComfyUI, SD.Next and InvokeAI read (`lora_unet_..._to_q.lora_down.weight`, `.lora_up.weight`, `.alpha`), converted
from the peft state dict with diffusers' `convert_state_dict_to_kohya`, as diffusers' training scripts do
(`--output_kohya_format`); stock diffusers loads it too (`pipe.load_lora_weights(RUN/lora/KOHYA_FILE)`).
An SD3-family transformer's adapters are written in diffusers' format only (`StableDiffusion3Pipeline`'s
`load_lora_weights`): the kohya layout names a UNet's layers, and SD3's single-file layout fuses q/k/v.
"""

from __future__ import annotations

from pathlib import Path

import torch

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"


def save_lora(model, directory, adapter: str = "default", component: str = "unet") -> Path:
    """The peft adapter `adapter` of the pipeline's `component` (`unet`, or the SD3 family's `transformer`) as
    LORA_FILE (diffusers) in `directory`, and for a UNet KOHYA_FILE (kohya-ss) beside it."""
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    config = model.peft_config[adapter]
    peft_state = get_peft_model_state_dict(model, adapter_name=adapter)
    if component == "transformer":  # SD3's loader reads peft's own key names (its training script saves them so)
        StableDiffusion3Pipeline.save_lora_weights(directory, transformer_lora_layers=peft_state,
                                                   safe_serialization=True,
                                                   transformer_lora_adapter_metadata=config.to_dict())
        return directory
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=convert_state_dict_to_diffusers(peft_state), safe_serialization=True,
        unet_lora_adapter_metadata=config.to_dict())
    kohya = convert_state_dict_to_kohya({f"unet.{key}": value for key, value in peft_state.items()})
    # convert_state_dict_to_kohya writes alpha = rank (scale 1); the adapters were trained at lora_alpha / r
    alpha = float(config.lora_alpha)
    kohya.update({key: torch.tensor(alpha) for key in kohya if key.endswith(".alpha")})
    save_file({key: value.detach().contiguous() for key, value in kohya.items()}, directory / KOHYA_FILE,
              metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(config.r),
                        "ss_network_alpha": str(alpha)})
    return directory
