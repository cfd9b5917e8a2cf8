"""What made a result: the repository commit and digests of the files that scored it, and paths that travel.

Every `metrics.json` carries a `provenance` entry — the commit of this checkout (and whether its tracked files were
changed), and a SHA-256 digest of each file or folder the number depends on (the evaluated weights, the judges, the
FID references, the eval prompts) — so two arms of a comparison can be shown to be scored by the same judges on the
same prompts, and a table can be traced to the code that made it. Paths inside the repository are recorded relative
to it (`portable`), so a committed result never holds a path of the machine that made it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

from style_tailoring.config import REPO_ROOT

# Files a digest leaves out: the library's own caches and notes beside weights, and this repository's temp files.
IGNORED_PARTS = (".cache", "__pycache__", ".ipynb_checkpoints")
# Files at the top of a folder that describe it rather than make it: an exported pipeline's model card (README.md,
# rewritten with the metrics after the evaluation) changes no digest of the weights.
IGNORED_FILES = ("README.md",)
# Keys of a JSON config that say where it was loaded from, not what it is: diffusers' and transformers'
# save_pretrained write the source folder's absolute path as `_name_or_path`, so the same weights exported from two
# checkouts would otherwise differ in digest.
LOCATION_KEYS = ("_name_or_path",)


@functools.lru_cache(maxsize=1)
def repository_state() -> dict:
    """{"commit": the checkout's HEAD (None outside a git checkout), "dirty": whether tracked files differ from it}."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def process_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of the children it has reaped: what a run cost."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def portable(path) -> Optional[str]:
    """`path` relative to the repository (POSIX separators) where it lies inside it; otherwise as given, absolute."""
    if path is None:
        return None
    # As written first, then with links resolved: a run folder reached through a link inside the repository
    # (experiments/runs -> a scratch disk, as clusters do) is recorded by its repository path, not the machine's.
    for candidate in (Path(os.path.abspath(Path(path).expanduser())), Path(path).expanduser().resolve()):
        if candidate.is_relative_to(REPO_ROOT):
            return candidate.relative_to(REPO_ROOT).as_posix()
    return str(Path(path).expanduser().resolve())


def checkout_of(path) -> Optional[Path]:
    """The git checkout (or worktree) holding `path`: the nearest parent with a `.git` entry; None outside one."""
    for parent in [Path(path).expanduser().resolve(), *Path(path).expanduser().resolve().parents]:
        if (parent / ".git").exists():
            return parent
    return None


def resolve(path) -> Path:
    """The inverse of `portable`: a recorded path, relative ones read from the repository."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part in IGNORED_PARTS or part.startswith(".") for part in p.relative_to(path).parts)
                  and not (p.parent == path and p.name in IGNORED_FILES))


def _signature(path: Path) -> tuple:
    return tuple((p.as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in _files(path))


@functools.lru_cache(maxsize=256)
def _digest(path: Path, signature: tuple) -> str:
    total = hashlib.sha256()
    for file in _files(path):
        total.update((file.relative_to(path).as_posix() if path.is_dir() else file.name).encode() + b"\0")
        located = _without_location(file)
        if located is not None:
            total.update(located)
        else:
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    total.update(block)
        total.update(b"\0")
    return "sha256:" + total.hexdigest()


def _without_location(file: Path) -> Optional[bytes]:
    """A JSON config's canonical bytes without its LOCATION_KEYS, when it has one; None for any other file."""
    if file.suffix != ".json" or file.stat().st_size > (1 << 20):
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not any(key in data for key in LOCATION_KEYS):
        return None
    return json.dumps({k: v for k, v in data.items() if k not in LOCATION_KEYS}, sort_keys=True).encode()


def digest(path) -> Optional[str]:
    """SHA-256 over a file, or over every file of a folder (relative names and contents, hidden files left out, a
    JSON config read without the path it was loaded from);
    None when nothing is there. Cached per process while the files keep their sizes and modification times."""
    if path is None:
        return None
    path = Path(path).expanduser().resolve()
    if not path.exists():
        return None
    return _digest(path, _signature(path))


def paths_in(spec) -> list[str]:
    """Every string in a config node (a `_target_` node's arguments, nested) that names an existing file or folder:
    what a plugged-in judge or sampler reads from disk."""
    if isinstance(spec, str):
        return [spec] if spec and Path(spec).expanduser().exists() else []
    if isinstance(spec, Mapping):
        return [path for key, value in spec.items() if key != "_target_" for path in paths_in(value)]
    if isinstance(spec, Sequence):
        return [path for value in spec for path in paths_in(value)]
    return []


def portable_paths(spec):
    """A config node (nested dicts and lists) with every string that names an existing file or folder made
    `portable`: settings recorded beside a result hold no path of the machine that made it where it lies in the
    repository."""
    if isinstance(spec, str):  # a path, existing or not yet (a cache folder made later)
        return portable(spec) if paths_in(spec) or Path(spec).is_absolute() else spec
    if isinstance(spec, Mapping):
        return {key: portable_paths(value) for key, value in spec.items()}
    if isinstance(spec, Sequence):
        return [portable_paths(value) for value in spec]
    return spec


def digests(named: dict) -> dict:
    """{name: digest} of {name: a path, or a list of paths}; a list's digest covers every path in it (their
    digests in order), so one value tells whether two runs read the same files. Names without a path are left
    out."""
    out = {}
    for name, value in named.items():
        if isinstance(value, Sequence) and not isinstance(value, str):
            parts = [digest(path) or "missing" for path in value]
            out[name] = "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest() if parts else None
        else:
            out[name] = digest(value)
    return {name: value for name, value in out.items() if value is not None}
