"""People's ratings as files: `ratings.csv` (file_name, rater, aligned, style) and Label Studio's JSON task format,
with the labeling configs that go beside the tasks (`label_config.xml`: the two questions, the rubric as their
hints), and the pairwise template for preference data: tasks of two candidates of one prompt (`pairwise_tasks`,
`pairwise_config.xml`) and the reader of their annotations (`read_pairwise`: the pairs with the preferred one).

Every imported row is checked against the round's candidates before anything is used: an unknown file, a name that
leaves the round (an absolute path, `..`), a value out of range, a line that is not CSV, or a row left unrated is an
error naming the file and its row (CSV: the line; JSON: the task's position).
Unrated rows and unrated candidates are errors unless `hitl.on_unrated=skip`, which leaves them out of curation.
Several raters' rows of one candidate are merged (aligned by majority, style by mean or median) and their agreement
is reported, so a team sees how much its people disagree before it trains on their votes.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Iterable, Optional

from style_tailoring.curation.raters import Rating, merge_one
from style_tailoring.hitl.rubric import load_rubric
from style_tailoring.io import atomic_write_text

CSV_FIELDS = ("file_name", "rater", "aligned", "style")
IMAGE_URL = "/data/local-files/?d="  # Label Studio's local-files storage, with the round directory as its root
PAIRWISE_NAME = "preferred"  # the Pairwise control's name in pairwise_config.xml (from_name in its annotations)


class RatingsError(ValueError):
    pass


def _parse_aligned(value, where: str) -> Optional[int]:
    text = str(value).strip().lower() if value is not None else ""
    if text == "":
        return None
    if text in ("1", "true", "yes", "aligned"):
        return 1
    if text in ("0", "false", "no", "not aligned"):
        return 0
    raise RatingsError(f"{where}: aligned must be 0 or 1, got {value!r}")


def _parse_style(value, where: str) -> Optional[int]:
    text = str(value).strip() if value is not None else ""
    if text == "":
        return None
    try:
        grade = float(text)
    except ValueError:
        raise RatingsError(f"{where}: style must be an integer 1-5, got {value!r}") from None
    if grade != int(grade) or not 1 <= grade <= 5:
        raise RatingsError(f"{where}: style must be an integer 1-5, got {value!r}")
    return int(grade)


def _climbs(path: str) -> bool:
    """A `..` step anywhere in a path or URL (Label Studio's `?d=candidates/...` included)."""
    return ".." in re.split(r"[/\\?=&]", path)


def _leaves_round(name: str) -> bool:
    """A rating's file name that points outside the round: absolute (POSIX, Windows) or climbing with `..`."""
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or _climbs(name)


def _checked(rows: Iterable[tuple[str, dict]], known: set[str], on_unrated: str) -> list[dict]:
    """(where, {file_name, rater, aligned, style}) rows, validated; unrated ones raise or are skipped."""
    out = []
    for where, row in rows:
        name = row.get("file_name")
        if isinstance(name, str) and _leaves_round(name):
            raise RatingsError(f"{where}: {name!r} names a file outside this round's candidates/; a rating names "
                               "a candidate by its file name (as in candidates/metadata.jsonl), so it is refused")
        if not name or name not in known:
            raise RatingsError(f"{where}: unknown candidate {name!r} (not in this round's candidates/metadata.jsonl)")
        aligned, style = _parse_aligned(row.get("aligned"), where), _parse_style(row.get("style"), where)
        if aligned is None or style is None:
            if on_unrated == "skip":
                continue
            missing = " and ".join(k for k, v in (("aligned", aligned), ("style", style)) if v is None)
            raise RatingsError(f"{where}: {name} is unrated ({missing} missing); rate it, or set "
                               "hitl.on_unrated=skip to leave unrated candidates out")
        out.append({"file_name": name, "rater": str(row.get("rater") or "anonymous"), "aligned": aligned,
                    "style": style})
    return out


def read_csv(path, known: set[str], on_unrated: str = "error") -> list[dict]:
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise RatingsError(f"{path}:{line}: not UTF-8 text ({err.reason}); export the ratings as UTF-8 CSV") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)  # a stray quote is an error, not data
    try:
        missing = {"file_name", "aligned", "style"} - set(reader.fieldnames or ())
        if missing:
            raise RatingsError(f"{path}:1: the header lacks column(s) {sorted(missing)} (expected {list(CSV_FIELDS)})")
        default_rater = path.stem
        rows = ((f"{path}:{reader.line_num}", {**r, "rater": r.get("rater") or default_rater}) for r in reader)
        return _checked(rows, known, on_unrated)
    except csv.Error as err:  # a stray or unclosed quote: the line its record starts on, not a csv traceback
        raise RatingsError(f"{path}:{reader.line_num + 1}: not CSV ({err})") from None


def _label_studio_rows(path: Path, tasks) -> Iterable[tuple[str, dict]]:
    if not isinstance(tasks, list):
        raise RatingsError(f"{path}: expected a JSON list of Label Studio tasks")
    for i, task in enumerate(tasks, 1):
        where = f"{path}: task {i}"
        try:
            yield from _task_rows(where, task)
        except (AttributeError, TypeError, KeyError, IndexError) as err:  # a list where a task has an object...
            raise RatingsError(f"{where}: not a Label Studio task ({type(err).__name__}: {err})") from None


def _task_rows(where: str, task) -> Iterable[tuple[str, dict]]:
    data = task.get("data", {}) if isinstance(task, dict) else {}
    image = str(data.get("image", ""))
    # The image URL's last part is the candidate, unless the URL climbs out (then the whole URL is refused).
    name = data.get("file_name") or (image if _climbs(image) else Path(image).name.split("?")[0]) or None
    annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")] \
        if isinstance(task, dict) else []
    if not annotations:
        yield where, {"file_name": name, "rater": None, "aligned": None, "style": None}
    for a in annotations:
        values = {"aligned": None, "style": None}
        for result in a.get("result", []):
            value = result.get("value", {})
            if result.get("from_name") == "aligned" and value.get("choices"):
                values["aligned"] = value["choices"][0]
            elif result.get("from_name") == "style" and "rating" in value:
                values["style"] = value["rating"]
        who = a.get("completed_by")
        rater = who.get("email") if isinstance(who, dict) else who
        yield where, {"file_name": name, "rater": rater, **values}


def read_label_studio(path, known: set[str], on_unrated: str = "error") -> list[dict]:
    path = Path(path)
    try:
        tasks = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RatingsError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    return _checked(_label_studio_rows(path, tasks), known, on_unrated)


def read_ratings(path, known: set[str], on_unrated: str = "error") -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise RatingsError(f"hitl.rater.files: no ratings file at {path}")
    reader = read_label_studio if path.suffix == ".json" else read_csv
    return reader(path, known, on_unrated)


def write_csv(path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buffer.getvalue())
    return Path(path)


def label_studio_tasks(candidates: list[dict], ratings: list[dict], image_url: str = IMAGE_URL) -> list:
    """Label Studio tasks of the candidates (image URL, prompt, our file_name), with any ratings as annotations."""
    by_file = defaultdict(list)
    for r in ratings:
        by_file[r["file_name"]].append(r)
    tasks = []
    for i, c in enumerate(candidates, 1):
        annotations = [{"completed_by": r["rater"], "result": [
            {"from_name": "aligned", "to_name": "image", "type": "choices",
             "value": {"choices": ["aligned" if r["aligned"] else "not aligned"]}},
            {"from_name": "style", "to_name": "image", "type": "rating", "value": {"rating": r["style"]}},
        ]} for r in by_file.get(c["file_name"], [])]
        tasks.append({"id": i, "data": {"image": f"{image_url}candidates/{c['file_name']}",
                                        "prompt": c["prompt"], "file_name": c["file_name"]},
                      "annotations": annotations})
    return tasks


def _xml(view: ET.Element) -> str:
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


def _say(parent: ET.Element, text: str, size: str = "6") -> None:
    """Static text in a Label Studio view (a Header whose value is not a $variable), escaped by ElementTree."""
    if text:
        ET.SubElement(parent, "Header", value=text, size=size)


def _grades(parent: ET.Element, rubric: dict) -> None:
    for grade, text in rubric["style"]["grades"].items():
        _say(parent, f"{grade}: {text}")


def label_config(rubric: Optional[dict] = None) -> str:
    """The Label Studio labeling config of the two questions (`aligned`: a single choice, `style`: a 1-5 rating,
    the names the import reads), with the rubric beside each question and as the choices' hover hints."""
    rubric = rubric or load_rubric()
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$prompt")
    ET.SubElement(view, "Image", name="image", value="$image")
    aligned = ET.SubElement(view, "View")
    _say(aligned, rubric["aligned"]["question"], size="4")
    _say(aligned, rubric["aligned"]["hint"])
    choices = ET.SubElement(aligned, "Choices", name="aligned", toName="image", choice="single", required="true",
                            showInline="true")
    for value, hint in (("aligned", rubric["aligned"]["yes"]), ("not aligned", rubric["aligned"]["no"])):
        ET.SubElement(choices, "Choice", value=value, **({"hint": hint} if hint else {}))
    style = ET.SubElement(view, "View")
    _say(style, rubric["style"]["question"], size="4")
    _say(style, rubric["style"]["hint"])
    _grades(style, rubric)
    ET.SubElement(style, "Rating", name="style", toName="image", maxRating="5", required="true")
    return _xml(view)


def write_label_studio(path, candidates: list[dict], ratings: list[dict], rubric: Optional[dict] = None) -> Path:
    """The tasks at `path` and their labeling config, `label_config.xml`, beside them."""
    atomic_write_text(Path(path), json.dumps(label_studio_tasks(candidates, ratings), indent=1) + "\n")
    atomic_write_text(Path(path).with_name("label_config.xml"), label_config(rubric))
    return Path(path)


# ------------------------------------------------------------------------------------------------------ pairwise
def candidate_pairs(candidates: list[dict], per_prompt: Optional[int] = None, seed: int = 0) -> list[tuple]:
    """(prompt, left, right) pairs of candidates of the same prompt, prompts in the round's order: every pair, or
    `per_prompt` of them drawn at random (seeded); which one is left is drawn too, so no side is favoured."""
    by_prompt = defaultdict(list)
    for c in candidates:
        by_prompt[c["prompt"]].append(c["file_name"])
    rng = random.Random(seed)
    pairs = []
    for prompt, names in by_prompt.items():
        every = list(combinations(names, 2))
        chosen = every if per_prompt is None or per_prompt >= len(every) else \
            [every[i] for i in sorted(rng.sample(range(len(every)), per_prompt))]
        pairs.extend((prompt, *(pair if rng.random() < 0.5 else pair[::-1])) for pair in chosen)
    return pairs


def pairwise_tasks(candidates: list[dict], per_prompt: Optional[int] = None, seed: int = 0,
                   image_url: str = IMAGE_URL) -> list[dict]:
    """Label Studio tasks of candidate pairs (candidate_pairs): data {prompt, left, right (file names), left_image,
    right_image (URLs)}, for pairwise_config.xml."""
    return [{"id": i, "data": {"prompt": prompt, "left": left, "right": right,
                               "left_image": f"{image_url}candidates/{left}",
                               "right_image": f"{image_url}candidates/{right}"}}
            for i, (prompt, left, right) in enumerate(candidate_pairs(candidates, per_prompt, seed), 1)]


def pairwise_config(rubric: Optional[dict] = None) -> str:
    """The Label Studio labeling config of the pairwise question: two candidates of one prompt side by side and a
    Pairwise control named `preferred` (its annotation: value.selected = left | right), the rubric beside it."""
    rubric = rubric or load_rubric()
    view = ET.Element("View")
    ET.SubElement(view, "Header", value="$prompt")
    _say(view, rubric["pairwise"]["question"], size="4")
    _say(view, rubric["pairwise"]["hint"])
    ET.SubElement(view, "Pairwise", name=PAIRWISE_NAME, toName="left,right")
    images = ET.SubElement(view, "View", style="display: flex; gap: 1em;")
    for side in ("left", "right"):
        ET.SubElement(ET.SubElement(images, "View", style="flex: 1;"), "Image", name=side, value=f"${side}_image")
    rubric_view = ET.SubElement(view, "View")
    _say(rubric_view, f"{rubric['aligned']['question']} {rubric['aligned']['hint']}")
    _say(rubric_view, f"{rubric['style']['question']} {rubric['style']['hint']}")
    _grades(rubric_view, rubric)
    return _xml(view)


def write_pairwise(path, candidates: list[dict], per_prompt: Optional[int] = None, seed: int = 0,
                   rubric: Optional[dict] = None) -> Path:
    """Pairwise tasks at `path` and their labeling config, `pairwise_config.xml`, beside them."""
    tasks = pairwise_tasks(candidates, per_prompt, seed)
    atomic_write_text(Path(path), json.dumps(tasks, indent=1) + "\n")
    atomic_write_text(Path(path).with_name("pairwise_config.xml"), pairwise_config(rubric))
    return Path(path)


def _pair_name(where: str, data: dict, side: str) -> str:
    """The file name of one side of a pair: data[side], else the last part of data[side_image] (a URL that climbs
    out is refused whole), checked like every imported name."""
    image = str(data.get(f"{side}_image", ""))
    name = data.get(side) or (image if _climbs(image) else Path(image).name.split("?")[0]) or None
    if name is not None and not isinstance(name, str):
        raise RatingsError(f"{where}: {side} must be a candidate's file name, got {name!r}")
    return name


def read_pairwise(path, candidates, on_unrated: str = "error") -> list[dict]:
    """A Label Studio export of pairwise tasks (pairwise_tasks, annotated with pairwise_config.xml) as
    [{task, prompt, left, right, preferred, rejected, rater}], one row per annotation. `candidates` is the round's
    candidates (rows with file_name and prompt; a mapping file_name -> prompt; or a set of file names, which skips
    the same-prompt check). Every bad row is an error naming the file and the task: a name that leaves the round or
    is no candidate, a pair of one candidate or of two prompts, a choice that is neither left nor right; a task
    without an answer too, unless on_unrated=skip."""
    path = Path(path)
    if isinstance(candidates, (set, frozenset)):
        prompts = {name: None for name in candidates}
    elif isinstance(candidates, dict):
        prompts = dict(candidates)
    else:
        prompts = {c["file_name"]: c["prompt"] for c in candidates}
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RatingsError(f"{path}: not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise RatingsError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    if not isinstance(tasks, list):
        raise RatingsError(f"{path}: expected a JSON list of Label Studio pairwise tasks")
    out = []
    for i, task in enumerate(tasks, 1):
        where = f"{path}: task {i}"
        try:
            out.extend(_pairwise_rows(where, task, prompts, on_unrated))
        except (AttributeError, TypeError, KeyError, IndexError) as err:
            raise RatingsError(f"{where}: not a Label Studio pairwise task ({type(err).__name__}: {err})") from None
    return out


def _pairwise_rows(where: str, task, prompts: dict, on_unrated: str) -> list[dict]:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise RatingsError(f"{where}: not a Label Studio pairwise task (no data object)")
    data = task["data"]
    names = {}
    for side in ("left", "right"):
        name = _pair_name(where, data, side)
        if isinstance(name, str) and _leaves_round(name):
            raise RatingsError(f"{where}: {name!r} names a file outside this round's candidates/; a pair names "
                               "candidates by their file names (as in candidates/metadata.jsonl), so it is refused")
        if not name or name not in prompts:
            raise RatingsError(f"{where}: unknown {side} candidate {name!r} (not in this round's "
                               "candidates/metadata.jsonl)")
        names[side] = name
    left, right = names["left"], names["right"]
    if left == right:
        raise RatingsError(f"{where}: a pair of one candidate ({left}) with itself")
    prompt = prompts[left]
    if prompt is not None and prompts[right] != prompt:
        raise RatingsError(f"{where}: {left} and {right} are candidates of different prompts ({prompt!r}, "
                           f"{prompts[right]!r}); a pair compares candidates of one prompt")
    if prompt is not None and "prompt" in data and data["prompt"] != prompt:
        raise RatingsError(f"{where}: the task's prompt {data['prompt']!r} is not its candidates' ({prompt!r})")
    rows = []
    for a in task.get("annotations", []):
        if a.get("was_cancelled"):
            continue
        answers = [r for r in a.get("result", [])
                   if r.get("type") == "pairwise" or r.get("from_name") == PAIRWISE_NAME]
        if len(answers) > 1:
            raise RatingsError(f"{where}: one annotation holds {len(answers)} pairwise answers")
        if not answers:
            continue
        selected = answers[0].get("value", {}).get("selected")
        if selected not in ("left", "right"):
            raise RatingsError(f"{where}: the pairwise answer must select left or right, got {selected!r}")
        who = a.get("completed_by")
        rater = who.get("email") if isinstance(who, dict) else who
        preferred, rejected = (left, right) if selected == "left" else (right, left)
        rows.append({"task": task.get("id", where.rsplit(" ", 1)[-1]), "prompt": prompt or data.get("prompt"),
                     "left": left, "right": right, "preferred": preferred, "rejected": rejected,
                     "rater": str(rater if rater is not None else "anonymous")})
    if not rows and on_unrated != "skip":
        raise RatingsError(f"{where}: the pair {left} / {right} has no answer; answer it, or set "
                           "on_unrated=skip to leave unanswered pairs out")
    return rows


def merge_people(rows: list[dict], style: str = "mean") -> dict[str, Rating]:
    """file_name → the merged rating of every rater's row for it (a rater's later row replaces their earlier one)."""
    latest = {}
    for r in rows:
        latest[(r["file_name"], r["rater"])] = Rating(r["aligned"], r["style"])
    per_file = defaultdict(list)
    for (name, _), rating in latest.items():
        per_file[name].append(rating)
    return {name: merge_one(ratings, style) for name, ratings in per_file.items()}


def agreement_report(rows: list[dict]) -> dict:
    """How much raters agree where several rated the same candidate: the share of such candidates on whose
    `aligned` all agree, Cohen-free pairwise agreement, and the mean absolute style difference between pairs."""
    per_file = defaultdict(dict)
    for r in rows:
        per_file[r["file_name"]][r["rater"]] = (r["aligned"], r["style"])
    shared = [v for v in per_file.values() if len(v) > 1]
    pairs = [(a, b) for v in shared for a, b in combinations(v.values(), 2)]
    return {
        "raters": sorted({r["rater"] for r in rows}),
        "rows": len(rows),
        "candidates_rated_by_several": len(shared),
        "aligned_unanimous": (sum(len({a for a, _ in v.values()}) == 1 for v in shared) / len(shared))
        if shared else None,
        "aligned_pairwise_agreement": (sum(a[0] == b[0] for a, b in pairs) / len(pairs)) if pairs else None,
        "style_mean_abs_difference": (sum(abs(a[1] - b[1]) for a, b in pairs) / len(pairs)) if pairs else None,
    }
