"""CLIP from a local directory: torchmetrics CLIPScore, and image embeddings for diversity and `clip-local` FID.

Two library traps are handled here:
- transformers 5 returns `BaseModelOutputWithPooling` from `get_image_features`/`get_text_features` where
  torchmetrics 1.9's CLIPScore expects the embedding tensor; `TensorFeatureCLIP` unwraps it (`pooler_output` is the
  projected embedding).
- CLIPScore only accepts a string path if it contains "openai"; its callable form takes any local directory, a real
  CLIP saved on disk as well as the Sticker World's tiny one.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from style_tailoring.evaluation.metrics import MetricUnavailable
from style_tailoring.models.safe_load import weights_kwargs


def _embedding(output):
    return getattr(output, "pooler_output", output)  # a tensor already under transformers 4


class TensorFeatureCLIP(CLIPModel):
    """A CLIPModel whose feature calls return plain (N, D) tensors, as torchmetrics 1.9 expects."""

    def get_image_features(self, *args, **kwargs):
        return _embedding(super().get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return _embedding(super().get_text_features(*args, **kwargs))


def clip_dir_or_raise(path, key: str) -> Path:
    """`path` if it is a transformers model directory, else MetricUnavailable(key)."""
    if not path or not (Path(path) / "config.json").is_file():
        raise MetricUnavailable(key, f"no CLIP model directory (with config.json) at {str(path)!r}")
    return Path(path)


def load_clip(path, key: str = "eval.clip.model_path") -> tuple[TensorFeatureCLIP, CLIPProcessor]:
    """(model, processor) from a local CLIP directory, float32, in eval mode on the CPU.

    float32 because transformers 5 loads the stored dtype by default (often fp16), which shifts metric values.
    Every call loads a fresh model on purpose: CLIPScore and torch-fidelity move the model they hold to their own
    device, which a shared cached instance would impose on every other holder.
    """
    path = clip_dir_or_raise(path, key)
    weights = weights_kwargs(path, key=key, switch=None)  # safetensors only: a metric has no business unpickling
    model = TensorFeatureCLIP.from_pretrained(path, local_files_only=True, dtype=torch.float32, **weights).eval()
    return model, CLIPProcessor.from_pretrained(path, local_files_only=True)


def make_clip_score(path):
    """torchmetrics CLIPScore (100·cosine, averaged) with the CLIP at `path`; update with uint8 images + prompts."""
    from torchmetrics.multimodal import CLIPScore

    model, processor = load_clip(path)
    return CLIPScore(model_name_or_path=lambda: (model, processor))


@torch.no_grad()
def image_embeddings(model, processor, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised float32 image embeddings (N, D), on the CPU, of uint8 N×3×H×W images."""
    if images.dtype != torch.uint8:  # the processor rescales by 1/255: floats in [0, 1] would silently go dark
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    out = []
    for chunk in images.split(batch_size):
        pixels = processor(images=list(chunk.cpu()), return_tensors="pt").pixel_values.to(model.device)
        out.append(F.normalize(model.get_image_features(pixel_values=pixels).float(), dim=-1).cpu())
    return torch.cat(out)
