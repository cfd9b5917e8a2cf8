"""Selection rules: rated candidates in, the Alignment and Style sets out, with their yield statistics.

Alignment = aligned candidates, at most `per_prompt_cap` per prompt (so easy prompts do not crowd out hard ones);
Style = aligned candidates whose style grade is at least `style_min`. Both accumulate over rounds (earlier rounds'
picks stay). A rule that selects nothing is an error naming the rule, never an empty set trained on in silence.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass


class EmptySelection(ValueError):
    pass


@dataclass(frozen=True)
class Rules:
    per_prompt_cap: int = 4
    style_min: int = 4


def select(rows: list[dict], rules: Rules) -> tuple[list[dict], list[dict]]:
    """(alignment rows, style rows) of rated candidate rows (file_name, prompt, seed, aligned, style)."""
    kept, per_prompt = [], Counter()
    for row in sorted(rows, key=lambda r: (r["prompt"], -(r.get("style") or 0), r["seed"])):
        if row["aligned"] and per_prompt[row["prompt"]] < rules.per_prompt_cap:
            kept.append(row)
            per_prompt[row["prompt"]] += 1
    style = [r for r in rows if r["aligned"] and (r.get("style") or 0) >= rules.style_min]
    if not kept:
        raise EmptySelection("the alignment rule (aligned, at most hitl.curation.per_prompt_cap per prompt) selected "
                             f"nothing from {len(rows)} candidates: no candidate was rated aligned")
    if not style:
        best = max((r.get("style") or 0) for r in rows)
        raise EmptySelection(f"the style rule (aligned and style >= hitl.curation.style_min={rules.style_min}) "
                             f"selected nothing from {len(rows)} candidates (best style grade: {best})")
    return kept, style


def statistics(rows: list[dict], alignment: list[dict], style: list[dict], attributes=None) -> dict:
    """Yields overall and per prompt (and per attribute value, when `attributes(prompt) -> {name: value}` is given),
    and the histogram of style grades: what curation.json reports."""
    by_prompt = defaultdict(lambda: {"candidates": 0, "aligned": 0, "alignment": 0, "style": 0})
    for name, subset in (("candidates", rows), ("aligned", [r for r in rows if r["aligned"]]),
                         ("alignment", alignment), ("style", style)):
        for r in subset:
            by_prompt[r["prompt"]][name] += 1
    stats = {"candidates": len(rows), "aligned": sum(r["aligned"] for r in rows), "alignment": len(alignment),
             "style": len(style), "yield": {"alignment": len(alignment) / len(rows), "style": len(style) / len(rows)},
             "style_histogram": {str(g): sum((r.get("style") or 0) == g for r in rows) for g in range(1, 6)},
             "per_prompt": dict(by_prompt)}
    if attributes is not None:
        per_attribute = defaultdict(lambda: defaultdict(lambda: {"candidates": 0, "aligned": 0}))
        for r in rows:
            for name, value in (attributes(r["prompt"]) or {}).items():
                cell = per_attribute[name][value]
                cell["candidates"] += 1
                cell["aligned"] += r["aligned"]
        stats["per_attribute"] = {k: dict(v) for k, v in per_attribute.items()}
    return stats
