"""FID and KID through torch-fidelity, on torch-fidelity's Inception from a local file or a local CLIP's image tower.

Nothing is ever downloaded: every extractor's weights are checked on disk before torch-fidelity is called (it would
fetch a missing file from GitHub or openaipublic). `inception-v3-compat` takes torch-fidelity's state dict
(weights-inception-2015-12-05-6726825d.pth); `clip-local`, registered on import of this module, takes any
transformers CLIP directory (the Sticker World's judges/clip, or a real CLIP saved on disk).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from style_tailoring.evaluation.metrics import MetricUnavailable
from style_tailoring.evaluation.metrics.clip import clip_dir_or_raise, image_embeddings, load_clip
from style_tailoring.models.safe_load import check_tensors_only

WEIGHTS_KEY = "eval.fid.weights_path"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class TensorImages(Dataset):
    """uint8 3×H×W tensors, the item type torch-fidelity's Dataset inputs and extractors require."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


class FolderImages(Dataset):
    """Every image under `root`, recursively (captions, metadata.jsonl and the like are skipped), as uint8 tensors
    resized on the shorter side and centre-cropped to (height, width).

    Decoded lazily, one batch at a time: a reference whose features torch-fidelity serves from its cache is never
    read, and a large reference is never held in memory at once.
    """

    def __init__(self, root, size: tuple[int, int]):
        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise MetricUnavailable("eval.fid.reference", f"no images under {root}")
        self.height, self.width = size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as image:
            # fit = centre crop to the aspect ratio + bicubic resize; an image already at size is left untouched
            image = ImageOps.fit(image.convert("RGB"), (self.width, self.height), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()


class LocalCLIPFeatures(FeatureExtractorBase):
    """`clip-local`: L2-normalised image embeddings of the CLIP directory given as feature_extractor_weights_path.

    Normalised rather than raw: CLIP is trained on cosine similarity, so an embedding's norm carries no meaning and
    its scale differs between checkpoints. On the unit sphere FID/KID live in the same geometry as CLIP score and
    the diversity metrics, and KID's polynomial kernel (x·y/d + 1)³ stays in a fixed range. torch-fidelity's own
    clip-* extractors return raw embeddings, so their numbers are not comparable with these.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.model, self.processor = load_clip(feature_extractor_weights_path, key=WEIGHTS_KEY)

    def forward(self, x):
        # the CLIP processor (not torch-fidelity's TF1 resize) so features match CLIP score and diversity exactly
        return (image_embeddings(self.model, self.processor, x, batch_size=len(x)),)

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


if "clip-local" not in FEATURE_EXTRACTORS_REGISTRY:  # registering a name twice raises (module reloads, copies)
    register_feature_extractor("clip-local", LocalCLIPFeatures)


def _require_local_weights(feature_extractor: str, weights_path) -> None:
    if feature_extractor == "clip-local":
        clip_dir_or_raise(weights_path, WEIGHTS_KEY)
    elif not (weights_path and Path(weights_path).is_file()):
        raise MetricUnavailable(WEIGHTS_KEY, f"the {feature_extractor} weights file for FID/KID is not on disk "
                                             f"({str(weights_path)!r}); torch-fidelity would download it")
    else:  # torch-fidelity unpickles it with weights_only=False: it must hold tensors only
        check_tensors_only(weights_path, WEIGHTS_KEY)


def fid_kid(samples: torch.Tensor, reference, *, feature_extractor: str = "inception-v3-compat", weights_path=None,
            cache_name: str | None = None, cache_root=None, kid_subset_size: int = 1000) -> dict[str, float]:
    """FID and KID (mean, std) of uint8 N×3×H×W `samples` against `reference`.

    `reference` is a uint8 tensor or a folder of images (loaded at the samples' resolution). With `cache_name`, the
    reference features and FID statistics are cached under `cache_root` (default $TORCH_HOME/fidelity_cache).
    torch-fidelity keys that cache by the name and the extractor's name only, so `cache_name` must also identify
    the reference set, the weights and the resolution. `kid_subset_size` is clamped to the smaller set.
    """
    if samples.dtype != torch.uint8:
        raise TypeError(f"expected uint8 samples, got {samples.dtype}")
    _require_local_weights(feature_extractor, weights_path)
    size = tuple(samples.shape[-2:])
    ref = TensorImages(reference.cpu()) if torch.is_tensor(reference) else FolderImages(reference, size)
    if min(len(samples), len(ref)) < 2:
        raise ValueError("FID/KID need at least 2 samples and 2 reference images")
    out = torch_fidelity.calculate_metrics(
        input1=TensorImages(samples.cpu()), input2=ref, fid=True, kid=True,
        kid_subset_size=min(kid_subset_size, len(samples), len(ref)),  # torch-fidelity asserts it fits both sets
        feature_extractor=feature_extractor, feature_extractor_weights_path=str(weights_path),
        cache=cache_name is not None, input2_cache_name=cache_name,
        cache_root=str(cache_root) if cache_root else None, cuda=torch.cuda.is_available(), verbose=False,
        # num_workers=0: workers would only copy in-memory tensors; a folder is decoded once, then cached
        save_cpu_ram=True,
    )
    return {"fid": float(out["frechet_inception_distance"]), "kid": float(out["kernel_inception_distance_mean"]),
            "kid_std": float(out["kernel_inception_distance_std"])}
