"""CLIP from a local directory: torchmetrics CLIPScore, and image embeddings for diversity.

torchmetrics 1.9's CLIPScore expects `get_image_features`/`get_text_features` to return tensors, but transformers 5
returns model outputs; `TensorFeatureCLIP` unwraps them. The callable form of `model_name_or_path` lets any local
directory (a real CLIP on disk or the Sticker World's tiny one) be used — a plain path would only be accepted if it
contained "openai".
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from style_tailoring.metrics import MetricUnavailable


def _tensor(output):
    return getattr(output, "pooler_output", output)


@lru_cache(maxsize=4)
def _load(path: str):
    from transformers import CLIPModel, CLIPProcessor

    class TensorFeatureCLIP(CLIPModel):
        def get_image_features(self, *args, **kwargs):
            return _tensor(super().get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return _tensor(super().get_text_features(*args, **kwargs))

    return TensorFeatureCLIP.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)


def load_clip(path, key: str = "eval.clip.model_path"):
    """(model, processor) from a local transformers CLIP directory; a missing one is MetricUnavailable(key)."""
    if not path or not (Path(path) / "config.json").is_file():
        raise MetricUnavailable(key, f"no CLIP model directory at {path!r}")
    return _load(str(Path(path).resolve()))


def make_clip_score(path):
    from torchmetrics.multimodal import CLIPScore

    model, processor = load_clip(path)
    return CLIPScore(model_name_or_path=lambda: (model, processor))


@torch.no_grad()
def image_embeddings(model, processor, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings of uint8 N×3×H×W images."""
    out = []
    for chunk in images.split(batch_size):
        pixels = processor(images=list(chunk), return_tensors="pt").pixel_values.to(model.device)
        out.append(F.normalize(model.get_image_features(pixel_values=pixels).float(), dim=-1).cpu())
    return torch.cat(out)
