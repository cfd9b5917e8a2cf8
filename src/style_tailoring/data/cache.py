"""The latent/text cache: VAE posteriors and text embeddings of a source, computed once and reused.

The VAE posterior is kept as (mean, std), not as one sample, so every step still draws a fresh latent as uncached
training does. Pixel augmentations are explicit: a flipped copy is its own item of the source (see
`ImageCaptionFolder`), so it is cached too; random crops cannot be cached and the config refuses them.
The key hashes the frozen weights, the resolution and crop, the background transparency is composited onto, and
the source's files (a `datasets` source's data files and rows) with the captions they train with (a source's
caption template included), so a changed model, data set or caption never reads a stale cache. Under DDP every
rank encodes its share of the items, then all ranks read all parts. `complete.json` holds each part's SHA-256
(safetensors has no checksum): a part truncated, flipped or missing is found before it is read, logged with its
path, and the cache is encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from style_tailoring.data.folder import ImageCaptionFolder
from style_tailoring.io import temp_file_beside, write_json
from style_tailoring.models.components import Components, encode_posterior, encode_prompts

log = logging.getLogger(__name__)
# 3: part checksums in complete.json; images decoded upright per their EXIF orientation, 16-bit greyscale scaled
# instead of clipped.
FORMAT_VERSION = 3


def _weights_digest(*modules) -> str:
    digest = hashlib.sha1()
    for module in modules:
        if module is None:
            continue
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _source_digest(source: ImageCaptionFolder) -> str:
    digest = hashlib.sha1()
    for index, sample in enumerate(source.samples):
        stat = sample.path.stat()
        # surrogateescape: a file name that is not UTF-8 (a Linux name is bytes) is a str with lone surrogates
        digest.update(f"{sample.path}|{stat.st_size}|{stat.st_mtime_ns}|{source.caption(index)}".encode(
            "utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_key(source: ImageCaptionFolder, comps: Components, with_text: bool) -> str:
    text_modules = (comps.text_encoder, comps.text_encoder_2, comps.text_encoder_3) if with_text else ()
    spec = {
        "version": FORMAT_VERSION,
        "vae": _weights_digest(comps.vae),
        "text": _weights_digest(*text_modules) if with_text else None,
        "tokenizer": len(comps.tokenizer) if with_text else None,
        "resolution": source.resolution,
        "center_crop": source.center_crop,
        "flip_variants": source.flip_variants,
        "background": list(source.background),
        "data": source.content_digest() if hasattr(source, "content_digest") else _source_digest(source),
        **({"frames": source.frames} if getattr(source, "frames", 0) else {}),  # clips: an animation model's data
        # an SD3 model's prompt embeddings end in its T5 length's tokens, a setting beside the weights
        **({"max_sequence_length": comps.max_sequence_length} if with_text and comps.is_flow else {}),
    }
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class CachedSource(Dataset):
    """Items of a source as {latent_mean, latent_std, text[, encoder_hidden_states, text_embeds (SDXL) or
    pooled_projections (SD3)]}."""

    def __init__(self, source: ImageCaptionFolder, tensors: dict[str, torch.Tensor]):
        self.source, self.name = source, source.name
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        item = {key: value[index] for key, value in self.tensors.items()}
        item["text"] = self.source.caption(index)
        return item


@torch.no_grad()
def _encode_part(source: ImageCaptionFolder, indices: list[int], comps: Components, device, batch_size: int,
                 with_text: bool) -> dict[str, torch.Tensor]:
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        items = [source[i] for i in chunk]
        pixels = torch.stack([item["pixel_values"] for item in items]).to(device, comps.vae.dtype)
        posterior = encode_posterior(comps.vae, pixels)
        out = {"latent_mean": posterior.mean, "latent_std": posterior.std}
        if with_text:
            cond = encode_prompts(comps, [item["text"] for item in items], device, source.resolution)
            out["encoder_hidden_states"] = cond["encoder_hidden_states"]
            if "added_cond_kwargs" in cond:
                out["text_embeds"] = cond["added_cond_kwargs"]["text_embeds"]
            if "pooled_projections" in cond:
                out["pooled_projections"] = cond["pooled_projections"]
        for key, value in out.items():
            parts.setdefault(key, []).append(value.to("cpu", torch.float16).contiguous())
    result = {key: torch.cat(values).contiguous() for key, values in parts.items()}
    result["index"] = torch.tensor(indices, dtype=torch.long)
    return result


def build_cache(source: ImageCaptionFolder, comps: Components, cache_root: Path, *, device, with_text: bool,
                batch_size: int = 64, rank: int = 0, world: int = 1,
                barrier: Callable[[], None] = lambda: None) -> CachedSource:
    directory = Path(cache_root) / f"{source.name}-{cache_key(source, comps, with_text)}"
    done = directory / "complete.json"
    if done.is_file():
        problem = damage(directory)  # every rank reads the same files, so every rank comes to the same answer
        if problem:
            log.warning("latent cache %s: %s; encoding it again", directory, problem)
            barrier()
            if rank == 0:
                shutil.rmtree(directory, ignore_errors=True)
            barrier()
    if not done.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        mine = list(range(rank, len(source), world))
        log.info("caching %d items of %r on rank %d into %s", len(mine), source.name, rank, directory)
        moved = [m for m in (comps.vae, comps.text_encoder, comps.text_encoder_2, comps.text_encoder_3)
                 if m is not None]
        homes = [next(m.parameters()).device for m in moved]
        for module in moved:
            module.to(device)
        part = _encode_part(source, mine, comps, device, batch_size, with_text)
        for module, home in zip(moved, homes):
            module.to(home)
        # Writer-unique: two runs (or threads) sharing a cache directory may encode the same part at once; each
        # writes its own file and renames it into place (the content is the same), never the other's half-written one
        final = directory / f"part-{rank:04d}-of-{world:04d}.safetensors"
        tmp = temp_file_beside(final)
        save_file(part, tmp)
        tmp.replace(final)
        barrier()
        if rank == 0:
            parts = sorted(directory.glob(f"part-*-of-{world:04d}.safetensors"))
            write_json(done, {"items": len(source), "parts": world, "source": str(source.root),
                              "sha256": {p.name: _sha256(p) for p in parts}})
        barrier()
    return CachedSource(source, _load_parts(directory, len(source)))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def damage(directory: Path):
    """Why a completed cache directory cannot be read as it is (a part missing, truncated or changed since it was
    written; an unreadable manifest), or None."""
    try:
        digests = json.loads((directory / "complete.json").read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its manifest complete.json is unreadable or from an older format ({type(err).__name__})"
    for name, digest in digests.items():
        part = directory / name
        if not part.is_file():
            return f"{part} is missing"
        if _sha256(part) != digest:
            return f"{part} does not match its checksum (truncated or changed)"
    return None


def _load_parts(directory: Path, n: int) -> dict[str, torch.Tensor]:
    world = json.loads((directory / "complete.json").read_text())["parts"]
    parts = [load_file(p) for p in sorted(directory.glob(f"part-*-of-{world:04d}.safetensors"))]
    index = torch.cat([p.pop("index") for p in parts])
    if sorted(index.tolist()) != list(range(n)):
        raise RuntimeError(f"latent cache {directory} is incomplete or mixed; delete it to rebuild")
    order = torch.argsort(index)
    return {key: torch.cat([p[key] for p in parts])[order] for key in parts[0]}
