"""Run a module with faultpoints armed: `FAULT=SPEC python -m inject MODULE ARGS...` (test-only; never imported by
the package). SPEC is one or more `;`-separated points, each ending the process with SIGKILL — no handler, no
cleanup, as a preempted node or an OOM kill does:

  call:PACKAGE.MODULE.NAME[.METHOD]:K   at the K-th call of that function or method (before it runs)
  enospc-call:PACKAGE.MODULE.NAME:K     that call raises OSError(ENOSPC) instead: a disk that fills while a library
                                        (safetensors, torch) writes
  replace:GLOB:K                        at the K-th os.replace onto a path whose name matches GLOB, before it (the
                                        temp file is written, the rename not done: "killed while writing")
  replaced:GLOB:K                       the same, just after the rename
  enospc:GLOB:K                         the K-th os.replace onto GLOB raises OSError(ENOSPC) instead (a full disk)
  hang-call:PACKAGE.MODULE.NAME[.METHOD]:K  at the K-th call the process hangs instead (alive, never returning: a
                                        deadlock, a stuck file system)

FAULT_RANK=N arms the points only in DDP rank N (the process whose RANK is N; rank 0 before it sets RANK). The DDP
workers a command starts itself (style_tailoring.runtime.launch) run through this module too, so their faultpoints
are armed as well.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import importlib
import os
import runpy
import signal
import subprocess
import sys
import time
import types


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def counter(k: int):
    seen = [0]

    def hit() -> bool:
        seen[0] += 1
        return seen[0] == k

    return hit


def hang() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    while True:
        time.sleep(3600)


def no_space(where: str):
    def fail():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where)

    return fail


def arm_call(target: str, k: int, action=die) -> None:
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        break
    else:
        raise SystemExit(f"inject: cannot import any module of {target}")
    for name in parts[split:-1]:
        owner = getattr(owner, name)
    original, hit = getattr(owner, parts[-1]), counter(k)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if hit():
            action()
        return original(*args, **kwargs)

    setattr(owner, parts[-1], wrapper)
    if isinstance(owner, type(sys)):  # a module function: also where other modules imported it by name
        for module in list(sys.modules.values()):
            for attr, value in list(getattr(module, "__dict__", {}).items()):
                if value is original:
                    setattr(module, attr, wrapper)


def arm_replace(kind: str, pattern: str, k: int) -> None:
    original, hit = os.replace, counter(k)

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.path.basename(os.fspath(dst)), pattern) and hit():
            if kind == "replace":
                die()
            if kind == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
            result = original(src, dst, *args, **kwargs)
            die()
            return result
        return original(src, dst, *args, **kwargs)

    os.replace = replace


def arm(spec: str) -> None:
    for point in filter(None, (p.strip() for p in spec.split(";"))):
        kind, _, rest = point.partition(":")
        where, _, k = rest.rpartition(":")
        if kind == "call":
            arm_call(where, int(k))
        elif kind == "enospc-call":
            arm_call(where, int(k), no_space(where))
        elif kind == "hang-call":
            arm_call(where, int(k), hang)
        elif kind in ("replace", "replaced", "enospc"):
            arm_replace(kind, where, int(k))
        else:
            raise SystemExit(f"inject: unknown faultpoint {point!r}")


def workers_through_inject() -> None:
    """The DDP workers style_tailoring.runtime.launch starts run `python -m inject style_tailoring.runtime.launch
    ...`, so that FAULT (and FAULT_RANK) reach them."""
    from style_tailoring.runtime import launch

    class Popen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            if isinstance(args, list) and args[1:3] == ["-m", "style_tailoring.runtime.launch"]:
                args = [args[0], "-m", "inject", *args[2:]]
            super().__init__(args, *rest, **kwargs)

    proxy = types.ModuleType("subprocess")
    proxy.__dict__.update(subprocess.__dict__)
    proxy.Popen = Popen
    launch.subprocess = proxy


if __name__ == "__main__":
    module, args = sys.argv[1], sys.argv[2:]
    importlib.import_module(module)  # its imports first, so that `call:` finds what it names
    workers_through_inject()
    if os.environ.get("FAULT_RANK", os.environ.get("RANK", "0")) == os.environ.get("RANK", "0"):
        arm(os.environ.get("FAULT", ""))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
