"""Atomic writes: a crash or a full disk leaves the old file (or nothing), never half a file."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp make their files 0600 and folders 0700, private to this user; what they become (a checkpoint, an
# exported pipeline, a shipped asset) should carry the permissions any other file this user writes gets, so that a
# lab's shared folder stays readable to its group. Read once, at import, before any thread could race os.umask.
_UMASK = _umask()
_FILE_MODE, _DIR_MODE = 0o666 & ~_UMASK, 0o777 & ~_UMASK


def _temp_prefix(path: Path) -> str:
    """Temp names carry host and pid, so a later writer can tell a dead writer's leftover from a live one's."""
    return f".{path.name}.{socket.gethostname()}-{os.getpid()}."


def _remove_dead_temps(path: Path) -> None:
    """Remove temp files/dirs beside `path` that a killed writer on this host left (a SIGKILL runs no cleanup; a
    checkpoint or pipeline left half-written is gigabytes). A live writer's, or another host's, are left alone."""
    host = socket.gethostname()
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.{glob.escape(host)}-*.tmp"):
        pid = tmp.name[len(f".{path.name}.{host}-"):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def temp_file_beside(path: Path) -> Path:
    """A new, empty temp file beside `path`, unique to this writer (process and thread), for the caller to write and
    rename over `path` (also a library that writes to a path, as safetensors does); a killed writer's leftovers go
    first."""
    path = Path(path)
    _remove_dead_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(tmp)


def atomic_write(path: Path, write) -> None:
    """What `write(file)` writes into a binary file at `path`, or the old file: written to a temp file beside it,
    fsynced (so a power cut after the rename cannot leave an empty file) and renamed over it. A failed write (a full
    disk) removes the temp file. Streamed, so a large file (a checkpoint) need not be held in memory first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`data` at `path`, or the old file (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_jsonl(path: Path, rows) -> None:
    """One JSON object per line, atomically."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file (blank lines skipped); a bad line is an error naming path and line."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno} is not JSON ({err.msg})") from None
    return rows


def drop_load_paths(folder: Path) -> None:
    """Remove `_name_or_path` from every config.json below `folder`: save_pretrained records there the absolute path
    the model was loaded from, a path of this machine that says nothing to whoever loads the folder elsewhere (and
    from_pretrained sets it again on load)."""
    for config in Path(folder).rglob("config.json"):
        data = json.loads(config.read_text())
        if isinstance(data, dict) and "_name_or_path" in data:
            del data["_name_or_path"]
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def update_json(path: Path, data: dict) -> dict:
    """Merge `data` into the JSON object at `path` (created if absent), atomically. A file that is not a JSON object
    (truncated by a crash of an older writer, or edited) is kept as `NAME.corrupt` and named in a warning; the
    merge starts afresh from `data` instead of failing the run that is writing its results."""
    path = Path(path)
    merged = {}
    if path.exists():
        try:
            merged = json.loads(path.read_text())
            if not isinstance(merged, dict):
                raise ValueError(f"a JSON {type(merged).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as err:
            kept = path.with_name(path.name + ".corrupt")
            os.replace(path, kept)
            logging.getLogger(__name__).warning("%s is not a JSON object (%s): kept as %s, written anew", path,
                                                err, kept)
            merged = {}
    merged.update(data)
    write_json(path, merged)
    return merged


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temp dir beside `path`; on success it replaces `path` (the old one is removed only then). A failure
    at any point keeps the old one; a writer killed between its two renames left the old one whole at `.NAME.old`,
    and the next writer puts it back first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.exists() and not path.exists():
        os.replace(old, path)
    _remove_dead_temps(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    os.chmod(tmp, _DIR_MODE)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
