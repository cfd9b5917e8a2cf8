"""The rubric the rating app shows beside its questions (and writes as the Label Studio configs' hints): what
"aligned" means and what each style grade 1-5 looks like, so that raters answer the same question and a round's
answers do not drift.

A rubric is a file: YAML or JSON of one shape, or markdown (below). The default is the sticker rubric,
`conf/rubrics/stickers.yaml` (the serve command's `rubric` setting). Every text is plain text: the app shows it as
text, never as markup.

    title: Sticker rubric
    aligned: {question: Aligned?, hint: ..., yes: ..., no: ...}      # hint required; yes/no: one line each
    style: {question: Style (1-5), hint: ..., grades: {1: ..., 2: ..., 3: ..., 4: ..., 5: ...}}  # all five grades
    pairwise: {question: ..., hint: ...}                            # optional: the pairwise template's question

Markdown: `# Title`, then a `## Aligned...` section (its text is the hint, `- yes: ...` / `- no: ...` lines the
answers), a `## Style...` section (text, then one line per grade: `1. ...` or `- 1: ...`, continued by indented
lines) and optionally `## Pairwise...`; each heading's text is the question shown.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import yaml

from style_tailoring.config import CONF_DIR, ConfigError

DEFAULT_RUBRIC = CONF_DIR / "rubrics" / "stickers.yaml"
GRADES = (1, 2, 3, 4, 5)
SHAPE = {"title": None, "aligned": {"question", "hint", "yes", "no"}, "style": {"question", "hint", "grades"},
         "pairwise": {"question", "hint"}}
DEFAULTS = {"aligned": {"question": "Aligned?", "yes": "", "no": ""},
            "style": {"question": "Style (1-5)", "hint": ""},
            "pairwise": {"question": "Which is the better candidate for its prompt?", "hint": ""}}
BOOL_KEYS = {True: "yes", False: "no"}  # YAML 1.1 reads the keys `yes:` and `no:` as booleans
MAX_TEXT = 2000  # characters of one text: a rubric is read on screen, beside the images


def load_rubric(path=None, key: str = "rubric") -> dict:
    """The rubric at `path` (None: the default) as {title, aligned: {question, hint, yes, no}, style: {question,
    hint, grades: {1..5: text}}, pairwise: {question, hint}}; a ConfigError naming `key`, the file and the entry."""
    path = Path(path).expanduser() if path else DEFAULT_RUBRIC
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(key, f"no rubric file at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(key, f"{path}: cannot be read as UTF-8 text ({err})") from None
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown", ".txt"):
        raw = _from_markdown(text, path, key)
    elif suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(key, f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(key, f"{path}{line}: not YAML ({getattr(err, 'problem', None) or err})") from None
    else:
        raise ConfigError(key, f"{path}: a rubric is a .yaml, .json or .md file")
    return _checked(raw, path, key)


def _checked(raw, path: Path, key: str) -> dict:
    def fail(entry: str, message: str):
        raise ConfigError(key, f"{path}: {entry}: {message}")

    if not isinstance(raw, dict):
        raise ConfigError(key, f"{path}: a rubric is a mapping with aligned and style (see conf/rubrics/stickers.yaml)")
    unknown = sorted(set(map(str, raw)) - set(SHAPE))
    if unknown:
        fail(unknown[0], f"not a rubric entry (entries: {', '.join(SHAPE)})")
    out = {"title": _text(raw.get("title", "Rubric"), "title", fail)}
    for section, fields in ((s, f) for s, f in SHAPE.items() if f):
        node = raw.get(section, {} if section == "pairwise" else None)
        if not isinstance(node, dict):
            fail(section, "is required, a mapping of " + ", ".join(sorted(fields)))
        node = {BOOL_KEYS.get(k, k) if isinstance(k, bool) else k: v for k, v in node.items()}
        if section == "style":
            raw = {**raw, "style": node}
        unknown = sorted(set(map(str, node)) - fields)
        if unknown:
            fail(f"{section}.{unknown[0]}", f"not a setting of {section} (settings: {', '.join(sorted(fields))})")
        out[section] = {}
        for field in sorted(fields - {"grades"}):
            if field not in node and field not in DEFAULTS[section]:
                fail(f"{section}.{field}", "is required")
            out[section][field] = _text(node.get(field, DEFAULTS[section].get(field)), f"{section}.{field}", fail)
    grades = raw["style"].get("grades")
    if not isinstance(grades, dict):
        fail("style.grades", "is required: a text for each grade 1-5")
    by_grade = {}
    for grade, text in grades.items():
        try:
            number = int(str(grade))
        except ValueError:
            number = None
        if number not in GRADES:
            fail(f"style.grades.{grade}", "not a grade (grades are 1-5)")
        by_grade[number] = _text(text, f"style.grades.{grade}", fail, required=True)
    missing = [g for g in GRADES if g not in by_grade]
    if missing:
        fail(f"style.grades.{missing[0]}", "is required: a text for each grade 1-5")
    out["style"]["grades"] = {g: by_grade[g] for g in GRADES}
    if not out["aligned"]["hint"]:
        fail("aligned.hint", "is required: what makes a candidate aligned")
    return out


def _text(value, entry: str, fail, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        fail(entry, f"must be text, got {type(value).__name__}")
    text = " ".join(str(value).split()) if "\n" not in str(value).strip() else str(value).strip()
    if required and not text:
        fail(entry, "is empty")
    if len(text) > MAX_TEXT:
        fail(entry, f"is {len(text)} characters; at most {MAX_TEXT} (a rubric is read beside the images)")
    return text


GRADE_LINE = re.compile(r"^(?:[-*+]\s+)?\**([1-5])\**\s*[.:)]\s*(.*)$")
ANSWER_LINE = re.compile(r"^[-*+]\s+\**(yes|no)\**\s*:\s*(.*)$", re.IGNORECASE)


def _from_markdown(text: str, path: Path, key: str) -> dict:
    """A markdown rubric as the YAML shape (see the module's docstring)."""
    raw: dict = {}
    section: Optional[str] = None
    item: Optional[list] = None  # the list item an indented line continues: [dict, key]
    paragraphs: dict[str, list[list[str]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if re.match(r"^#\s", line):
            raw["title"] = stripped.lstrip("#").strip()
            continue
        heading = re.match(r"^##+\s+(.*)$", line)
        if heading:
            question = heading.group(1).strip()
            name = re.split(r"\W", question.lower(), maxsplit=1)[0]
            if name not in ("aligned", "style", "pairwise"):
                raise ConfigError(key, f"{path}:{number}: section {question!r} is not one of Aligned, Style, "
                                       "Pairwise (a heading's first word names its question)")
            section, item = name, None
            raw.setdefault(section, {})["question"] = question
            paragraphs[section] = [[]]
            continue
        if section is None:
            if stripped:
                raise ConfigError(key, f"{path}:{number}: text before the first ## section")
            continue
        node = raw[section]
        grade = GRADE_LINE.match(stripped) if section == "style" else None
        answer = ANSWER_LINE.match(stripped) if section == "aligned" else None
        if grade:
            grades = node.setdefault("grades", {})
            if int(grade.group(1)) in grades:
                raise ConfigError(key, f"{path}:{number}: grade {grade.group(1)} is given twice")
            grades[int(grade.group(1))] = grade.group(2).strip()
            item = [grades, int(grade.group(1))]
        elif answer:
            node[answer.group(1).lower()] = answer.group(2).strip()
            item = [node, answer.group(1).lower()]
        elif stripped and item is not None and line[:1].isspace():
            item[0][item[1]] = f"{item[0][item[1]]} {stripped}".strip()
        elif stripped:
            item = None
            paragraphs[section][-1].append(stripped)
        else:
            item = None
            paragraphs[section].append([])
    for section, parts in paragraphs.items():
        hint = "\n".join(" ".join(p) for p in parts if p)
        if hint:
            raw[section]["hint"] = hint
    return raw
