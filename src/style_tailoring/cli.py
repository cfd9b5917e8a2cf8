"""What every Hydra command of the package shares before Hydra reads its arguments."""

from __future__ import annotations

import sys

from style_tailoring.config import CONF_DIR


def group_spelling(argv: list[str] | None = None) -> list[str]:
    """Let `eval.sampler=NAME` mean the config group option `eval/sampler=NAME`.

    Hydra spells a nested group's option with a slash; written with a dot, the option becomes a plain string value
    and every setting after it (`eval.sampler.t_switch=500`) is refused ("Could not override ..."). An argument
    `a.b=NAME` is rewritten to `a/b=NAME` when conf/a/b/ is a config group holding NAME.yaml, so both spellings
    work. `argv` defaults to (and is written back into) sys.argv."""
    args = sys.argv[1:] if argv is None else list(argv)
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and "." in key and not key.startswith(("+", "~", "hydra.")) and "/" not in key:
            group = CONF_DIR.joinpath(*key.split("."))
            if group.is_dir() and (group / f"{value}.yaml").is_file():
                arg = f"{key.replace('.', '/')}={value}"
        out.append(arg)
    if argv is None:
        sys.argv[1:] = out
    return out
