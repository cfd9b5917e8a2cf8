"""FID and KID through torch-fidelity, with its Inception from a local file or a CLIP image tower from a local dir.

Nothing is ever downloaded: `inception-v3-compat` needs `eval.fid.weights_path` (torch-fidelity's
weights-inception-2015-12-05-6726825d.pth), checked before torch-fidelity is called; `clip-local` is registered
here and reads any transformers CLIP directory (the Sticker World's judges/clip, or a real CLIP on disk).
Reference features are cached by name under `cache_root`, so a sweep computes them once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from style_tailoring.metrics import MetricUnavailable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class UInt8Images(Dataset):
    """uint8 3×H×W tensors, what torch-fidelity's extractors take."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def load_folder(path, size: int) -> torch.Tensor:
    """Every image under `path` (recursively), resized (shorter side) and center-cropped to size×size."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MetricUnavailable("eval.fid.reference", f"no images under {path}")
    arrays = []
    for file in files:
        with Image.open(file) as im:
            im = im.convert("RGB")
            scale = size / min(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), Image.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            arrays.append(np.asarray(im.crop((left, top, left + size, top + size))))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _register_clip_extractor() -> None:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if "clip-local" in FEATURE_EXTRACTORS_REGISTRY:
        return

    class LocalCLIPExtractor(FeatureExtractorBase):
        """Image-tower embeddings of a local CLIP, L2-normalised: the space CLIP score and diversity use too."""

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            from style_tailoring.metrics.clip import load_clip

            self.model, self.processor = load_clip(feature_extractor_weights_path, key="eval.fid.weights_path")

        def forward(self, x):
            pixels = self.processor(images=list(x.cpu()), return_tensors="pt").pixel_values.to(x.device)
            features = self.model.get_image_features(pixel_values=pixels)
            return (F.normalize(features.float(), dim=-1),)

        @staticmethod
        def get_provided_features_list():
            return ("clip",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "clip"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    register_feature_extractor("clip-local", LocalCLIPExtractor)


def fid_kid(samples: torch.Tensor, reference, *, feature_extractor: str = "inception-v3-compat",
            weights_path=None, cache_name=None, cache_root=None, kid_subset_size: int = 1000) -> dict[str, float]:
    """FID, KID (mean, std) of uint8 `samples` against `reference` (a folder, or a uint8 tensor)."""
    import torch_fidelity

    if feature_extractor == "inception-v3-compat" and not (weights_path and Path(weights_path).is_file()):
        raise MetricUnavailable("eval.fid.weights_path", "the Inception weights file for FID/KID is not on disk "
                                f"({weights_path!r}); torch-fidelity would download it")
    if feature_extractor == "clip-local":
        _register_clip_extractor()
    ref = reference if torch.is_tensor(reference) else load_folder(reference, samples.shape[-1])
    subset = max(2, min(kid_subset_size, len(samples), len(ref)))
    cache = cache_name is not None and not torch.is_tensor(reference)
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(samples), input2=UInt8Images(ref), fid=True, kid=True, kid_subset_size=subset,
        feature_extractor=feature_extractor, feature_extractor_weights_path=str(weights_path) if weights_path else None,
        cuda=torch.cuda.is_available(), cache=cache, input2_cache_name=cache_name if cache else None,
        cache_root=str(cache_root) if cache_root else None, verbose=False, batch_size=64,
    )
    return {"fid": out["frechet_inception_distance"], "kid": out["kernel_inception_distance_mean"],
            "kid_std": out["kernel_inception_distance_std"]}
