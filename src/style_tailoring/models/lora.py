"""A trained LoRA written twice beside each other: for diffusers and for the kohya/ComfyUI world.

`pytorch_lora_weights.safetensors` is diffusers' own format (`pipe.load_lora_weights(RUN/lora)`), with peft's
LoraConfig as the file's adapter metadata, so a LoRA trained with `model.lora.alpha` != rank loads at its own
scale. `pytorch_lora_weights_kohya.safetensors` holds the same adapters in the kohya-ss layout that AUTOMATIC1111,
ComfyUI, SD.Next and InvokeAI read (`lora_unet_..._to_q.lora_down.weight`, `.lora_up.weight`, `.alpha`), converted
from the peft state dict with diffusers' `convert_state_dict_to_kohya`, as diffusers' training scripts do
(`--output_kohya_format`); stock diffusers loads it too (`pipe.load_lora_weights(RUN/lora/KOHYA_FILE)`).
"""

from __future__ import annotations

from pathlib import Path

import torch

LORA_FILE = "pytorch_lora_weights.safetensors"
KOHYA_FILE = "pytorch_lora_weights_kohya.safetensors"


def save_lora(unet, directory, adapter: str = "default") -> Path:
    """The UNet's peft adapter `adapter` as LORA_FILE (diffusers) and KOHYA_FILE (kohya-ss) in `directory`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    directory = Path(directory)
    config = unet.peft_config[adapter]
    peft_state = get_peft_model_state_dict(unet, adapter_name=adapter)
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
