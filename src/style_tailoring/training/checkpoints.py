"""Checkpoints that are whole or absent, checked before a run resumes from one.

Lightning's own writer renames a temp file into place but never fsyncs it, and torch's zip reader does not verify the
CRC-32 that `torch.save` writes for every entry: a truncated file fails deep inside torch, a flipped bit loads as
wrong weights without a word. Here a checkpoint is written atomically and fsynced (`SafeCheckpointIO`; a full disk
leaves the previous checkpoints intact and says so), every entry's CRC is verified before it is loaded, and
`ckpt_path=last` — or a `last.ckpt` found damaged — resumes from the newest intact checkpoint of the run.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from style_tailoring.config import ConfigError
from style_tailoring.io import atomic_write

log = logging.getLogger("style_tailoring.train")
LAST = "last.ckpt"


class CheckpointWriteError(OSError):
    pass


def damage(path) -> Optional[str]:
    """Why the checkpoint at `path` cannot be trusted (missing, not a whole zip file, an entry whose CRC-32 does not
    match its bytes), or None. Reads the file once; no unpickling."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"not a whole checkpoint file (truncated?): {err}"
    except Exception as err:  # noqa: BLE001 - zlib/struct errors of a mangled archive: all mean "damaged"
        return f"damaged zip structure: {type(err).__name__}: {err}"
    return f"entry {bad!r} does not match its checksum (bit rot or a partial overwrite)" if bad else None


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an fsynced atomic write and a CRC check before every load."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by SafeCheckpointIO")
        try:  # streamed into the temp file: not held serialized in memory beside the state itself
            atomic_write(Path(path), lambda f: torch.save(checkpoint, f))
        except OSError as err:
            intact = sorted(p.name for p in Path(path).parent.glob("*.ckpt"))
            raise CheckpointWriteError(
                err.errno, f"could not write checkpoint {path} ({err.strerror or err}); nothing of it was kept and "
                f"the checkpoints already there are intact ({', '.join(intact) or 'none yet'})") from err

    def load_checkpoint(self, path, *args, **kwargs):
        why = damage(path)
        if why:
            raise ConfigError("ckpt_path", f"{path} is damaged: {why}")
        return super().load_checkpoint(path, *args, **kwargs)


def _step(path: Path) -> int:
    match = re.search(r"step-(\d+)", path.name)
    return int(match.group(1)) if match else -1


def resume_checkpoint(ckpt_path: Optional[str], run_dir: Path) -> Optional[str]:
    """The checkpoint a run resumes from. `last`: the newest intact one in RUN_DIR/checkpoints (last.ckpt, then
    step-*.ckpt newest first), or none (a fresh start: what a requeued job that never checkpointed wants). A named
    `last.ckpt` that is damaged falls back the same way, with a warning naming it; any other damaged file is an
    error naming it and the intact ones."""
    if not ckpt_path:
        return None
    folder = Path(run_dir) / "checkpoints" if ckpt_path == "last" else Path(ckpt_path).expanduser().parent
    if ckpt_path != "last":
        path = Path(ckpt_path).expanduser()
        why = damage(path)
        if why is None:
            return str(path)
        if path.name != LAST:
            intact = [p.name for p in _newest_first(folder) if damage(p) is None]
            raise ConfigError("ckpt_path", f"{path}: {why}. Resume from an intact checkpoint of "
                              f"{folder}: {', '.join(intact) or 'there is none'}")
        log.warning("%s: %s; resuming from the newest intact checkpoint in %s instead", path, why, folder)
    for candidate in _newest_first(folder):
        why = damage(candidate)
        if why is None:
            log.info("resuming from %s", candidate)
            return str(candidate)
        log.warning("skipping damaged checkpoint %s: %s", candidate, why)
    if ckpt_path == "last":
        log.info("no intact checkpoint in %s: starting from step 0", folder)
        return None
    raise ConfigError("ckpt_path", f"{ckpt_path} is damaged and {folder} holds no intact checkpoint to fall back to")


def _newest_first(folder: Path) -> list[Path]:
    steps = sorted(folder.glob("step-*.ckpt"), key=_step, reverse=True)
    return ([folder / LAST] if (folder / LAST).is_file() else []) + steps
