"""Loading weights without unpickling them: safetensors only, unless pickle is allowed.

A pickled checkpoint (`pytorch_model.bin`, `diffusion_pytorch_model.bin`, `.pt`, `.ckpt`) can run code hidden in
the file when it is unpickled; safetensors holds tensors and nothing else. Every `from_pretrained` of model weights
the package makes on a user-supplied path passes `weights_kwargs(...)`: safetensors only, and a directory that has
pickled weights only is refused naming it and the switch that allows it. With the switch on (`model.allow_pickle`,
or a command's `allow_pickle`), diffusers' and transformers' own rule applies (safetensors when present, else the
pickled file) and a warning names the pickled files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from style_tailoring.config import ConfigError, config_path

log = logging.getLogger("style_tailoring.models")
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl"}


def pickled_only(path) -> list[Path]:
    """The pickled weight files in `path` and its direct subfolders (a pipeline's components) that have no
    safetensors file beside them; [] for a hub id or a missing path."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return []
    found = []
    for folder in (root, *sorted(d for d in root.iterdir() if d.is_dir())):
        files = [f for f in folder.iterdir() if f.is_file()]
        if not any(f.suffix == ".safetensors" for f in files):
            found += sorted(f for f in files if f.suffix in PICKLE_SUFFIXES)
    return found


def weights_kwargs(path, allow_pickle: bool = False, key: str = "model.pretrained",
                   switch: Optional[str] = "model.allow_pickle=true") -> dict:
    """`from_pretrained` keywords for the weights at `path`: `use_safetensors=True`, or with `allow_pickle` the
    libraries' default (a warning names the pickled files). Pickled-only weights without it: ConfigError(key)
    naming the directory and `switch` (None: the caller has no switch, convert the weights)."""
    pickled = pickled_only(config_path(key, path))  # a name the file system refuses: ConfigError(key)
    if allow_pickle:
        if pickled:
            log.warning("%s: loading pickled weights (%s) from %s; unpickling runs any code the file holds, load "
                        "only files you trust", key, ", ".join(str(p.relative_to(Path(path).expanduser()))
                                                            for p in pickled), path)
        return {}
    if pickled:
        names = ", ".join(str(p.relative_to(Path(path).expanduser())) for p in pickled)
        remedy = f", or set {switch} if you trust where they came from" if switch else ""
        raise ConfigError(key, f"{path} holds pickled weights only ({names}): unpickling can run code hidden in "
                          "the file, so they are not loaded. Convert them to safetensors (save_pretrained(..., "
                          f"safe_serialization=True)){remedy}")
    return {"use_safetensors": True}


def check_tensors_only(path, key: str) -> None:
    """A `torch.save` file that a library unpickles in full (torch-fidelity reads its Inception weights with
    weights_only=False): refused (ConfigError(key)) unless torch can read it with weights_only=True, i.e. it holds
    tensors and plain containers only, nothing that runs code when unpickled."""
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(key, f"{path} holds pickled objects beyond tensors ({why}): unpickling it could run code "
                          "hidden in the file, so it is not loaded; use a plain state dict of tensors") from None
