"""The rating app for people: `python -m style_tailoring.hitl.serve round_dir=ROUND_DIR [port=8765]
[host=127.0.0.1] [rubric=PATH]` (`export_csv=PATH` / `export_label_studio=PATH` / `export_pairwise=PATH` write the
ratings or pairwise tasks without serving, `import_pairwise=PATH` reads a pairwise Label Studio export back;
settings: conf/serve.yaml).

A small Flask app over one round's `candidates/` with two modes over the same ratings: one candidate at a time
(`/?rater=NAME`: `y` / `n` aligned, `1`-`5` style, ← → move) and a grid of all candidates of one prompt
(`/grid?rater=NAME`: click or `a` / space marks a tile aligned, `1`-`5` grades it, arrows move the focus, Enter /
Shift+Enter the next / previous prompt). Both show the rubric (what "aligned" and each grade mean: `rubric=PATH`,
default conf/rubrics/stickers.yaml) and the progress per prompt and per rater (also `/progress`, JSON). Every
answer is saved to `ROUND_DIR/ratings.sqlite` the moment it is given (one transaction per answer); each person rates
under their own name, several at once. Exports: `ratings.csv`, Label Studio tasks with their labeling config, and
pairwise tasks (two candidates of one prompt) with theirs. It binds to 127.0.0.1 unless told otherwise: it has no
login, so anyone who can reach it can rate. Prompts, rater names and the rubric are shown as text, never as markup.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, ServeConfig, merge_into_schema
from style_tailoring.hitl.candidates import read_candidates
from style_tailoring.hitl.ratings import (
    RatingsError,
    label_config,
    label_studio_tasks,
    pairwise_config,
    pairwise_tasks,
    read_pairwise,
    write_csv,
    write_label_studio,
    write_pairwise,
)
from style_tailoring.hitl.rubric import load_rubric
from style_tailoring.hitl.store import RatingStore, UnreadableRatings
from style_tailoring.io import write_jsonl

log = logging.getLogger("style_tailoring.hitl.serve")
DB_NAME = "ratings.sqlite"
PREFERENCES_NAME = "preferences.jsonl"
MAX_RATER_NAME = 64
WEB = Path(__file__).with_name("web")  # the pages' templates and their one script and style sheet


def prompt_groups(candidates: list[dict]) -> list[dict]:
    """The round's prompts in order of first appearance, each with the indices of its candidates (the grid's
    pages): [{text, items}]."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault(c["prompt"], []).append(i)
    return [{"text": text, "items": items} for text, items in groups.items()]


def progress_report(candidates: list[dict], groups: list[dict], rows: list[dict],
                    rater: Optional[str] = None) -> dict:
    """Who has rated what (complete ratings only: both answers given): the round, each rater, each prompt, and
    `you` (the rater asked about, if any)."""
    by_rater: dict[str, set] = defaultdict(set)
    for r in rows:
        by_rater[r["rater"]].add(r["file_name"])
    anyone = set().union(*by_rater.values()) if by_rater else set()
    names = [[candidates[i]["file_name"] for i in g["items"]] for g in groups]

    def summary(done: set) -> dict:
        return {"rated": len(done), "of": len(candidates),
                "prompts_done": sum(all(n in done for n in group) for group in names)}

    report = {
        "candidates": len(candidates), "prompts": len(groups), "ratings": len(rows), "rated": len(anyone),
        "raters": sorted(by_rater),
        "per_rater": {name: summary(done) for name, done in sorted(by_rater.items())},
        "per_prompt": [{"prompt": k, "text": g["text"], "candidates": len(group),
                        "rated": sum(n in anyone for n in group),
                        "ratings": sum(n in done for done in by_rater.values() for n in group),
                        **({"you": sum(n in by_rater.get(rater, ()) for n in group)} if rater else {})}
                       for k, (g, group) in enumerate(zip(groups, names), 1)],
    }
    if rater:
        report["you"] = {"rater": rater, **summary(by_rater.get(rater, set()))}
    return report


def create_app(round_dir, rubric=None):
    """The app over `round_dir`'s candidates; `rubric`: the rubric file shown beside the questions (None: the
    default, conf/rubrics/stickers.yaml)."""
    from flask import Flask, Response, abort, jsonify, render_template, request, send_from_directory
    from werkzeug.exceptions import HTTPException

    round_dir = Path(round_dir).resolve()
    candidates_dir = round_dir / "candidates"
    if not (candidates_dir / "metadata.jsonl").is_file():
        raise FileNotFoundError(f"{round_dir} has no candidates/metadata.jsonl: generate the round first "
                                "(python -m style_tailoring.hitl ...)")
    candidates = read_candidates(candidates_dir)
    known = {c["file_name"] for c in candidates}
    position = {c["file_name"]: i for i, c in enumerate(candidates)}
    groups = prompt_groups(candidates)
    group_of = {i: k for k, g in enumerate(groups) for i in g["items"]}
    rubric_text = load_rubric(rubric)
    store = RatingStore(round_dir / DB_NAME)
    app = Flask(__name__, template_folder=str(WEB / "templates"), static_folder=str(WEB / "static"))

    def rater_name(value) -> str:
        name = str(value or "").strip()
        if not name or len(name) > MAX_RATER_NAME:
            abort(400, f"rater: a name of 1-{MAX_RATER_NAME} characters is required")
        return name

    @app.errorhandler(UnreadableRatings)
    def damaged(err):  # the database broke while serving: every request says so (the page shows "NOT saved: ...")
        log.error("%s", err)
        return Response(str(err), status=500, mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def refused(err):  # the reason as plain text (the page shows it as "NOT saved: ..."), not an HTML error page
        return Response(err.description or err.name, status=err.code, mimetype="text/plain")

    def page(mode: str):
        rater = request.args.get("rater", "").strip()
        if not rater:
            return render_template("who.html", round_name=round_dir.name, max_name=MAX_RATER_NAME, mode=mode)
        rater = rater_name(rater)
        mine = {r["file_name"]: {"aligned": r["aligned"], "style": r["style"]} for r in store.rows(rater)}
        at = request.args.get("at")
        if at is not None and at not in known:
            abort(400, f"at: unknown candidate {at!r}")
        unrated = [i for i, c in enumerate(candidates)
                   if mine.get(c["file_name"], {}).get("aligned") is None
                   or mine.get(c["file_name"], {}).get("style") is None]
        start = position[at] if at is not None else (unrated[0] if unrated else 0)
        if mode == "grid":
            wanted = request.args.get("prompt")
            if wanted is not None:
                if not (wanted.isdigit() and 1 <= int(wanted) <= len(groups)):
                    abort(400, f"prompt: a prompt's number, 1-{len(groups)}, got {wanted!r}")
                if at is None or group_of[start] != int(wanted) - 1:  # the first unrated tile of that prompt
                    items, open_ = groups[int(wanted) - 1]["items"], set(unrated)
                    start = next((i for i in items if i in open_), items[0])
        state = {"mode": mode, "rater": rater, "start": start,
                 "candidates": [{"file_name": c["file_name"], "prompt": group_of[i]}
                                for i, c in enumerate(candidates)],
                 "prompts": groups, "ratings": mine, "rubric": rubric_text}
        return render_template(f"{mode}.html", rater=rater, state=state, round_name=round_dir.name,
                               rubric=rubric_text, mode=mode)

    @app.get("/")
    def one_at_a_time():
        return page("one")

    @app.get("/grid")
    def grid():
        return page("grid")

    @app.get("/image/<path:file_name>")
    def image(file_name):
        if file_name not in known:
            abort(404)
        return send_from_directory(candidates_dir, file_name)

    @app.post("/api/rate")
    def rate():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            abort(400, "a JSON object is required")
        if body.get("file_name") not in known:
            abort(400, f"unknown candidate {body.get('file_name')!r}")
        try:
            row = store.set(body["file_name"], rater_name(body.get("rater")), aligned=body.get("aligned"),
                            style=body.get("style"), aligned_if_unset=body.get("aligned_if_unset"))
        except ValueError as err:
            abort(400, str(err))
        return jsonify(row)

    @app.get("/progress")
    @app.get("/api/progress")
    def progress():
        rater = request.args.get("rater", "").strip()
        return jsonify(progress_report(candidates, groups, store.complete_rows(),
                                       rater_name(rater) if rater else None))

    @app.get("/export/ratings.csv")
    def export_csv():
        path = write_csv(round_dir / "ratings_export.csv", store.complete_rows())
        return Response(path.read_text(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=ratings.csv"})

    @app.get("/export/label_studio.json")
    def export_label_studio():
        return jsonify(label_studio_tasks(candidates, store.complete_rows()))

    @app.get("/export/label_config.xml")
    def export_label_config():
        return Response(label_config(rubric_text), mimetype="application/xml")

    @app.get("/export/pairwise.json")
    def export_pairwise():
        def number(key: str, default):
            value = request.args.get(key)
            if value is None:
                return default
            if not value.isdigit():
                abort(400, f"{key}: a whole number, got {value!r}")
            return int(value)

        per_prompt = number("per_prompt", None)
        if per_prompt == 0:
            abort(400, "per_prompt: at least 1 pair per prompt (leave it out for every pair)")
        return jsonify(pairwise_tasks(candidates, per_prompt, number("seed", 0)))

    @app.get("/export/pairwise_config.xml")
    def export_pairwise_config():
        return Response(pairwise_config(rubric_text), mimetype="application/xml")

    return app


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    try:
        serve(merge_into_schema(ServeConfig, cfg))
    except (ConfigError, UnreadableRatings, RatingsError) as err:  # a wrong setting, a damaged database or a bad
        raise SystemExit(f"error: {err}") from None  # import: one line, no traceback


def serve(cfg) -> None:
    """The command on its validated settings (ServeConfig): export the round's ratings (export_csv,
    export_label_studio), write pairwise tasks (export_pairwise), read pairwise answers back (import_pairwise), or
    serve the round on host:port."""
    rubric = load_rubric(cfg.rubric)  # a wrong rubric fails before any work, naming the file and the entry
    if cfg.on_unrated not in ("error", "skip"):
        raise ConfigError("on_unrated", f"must be error or skip, got {cfg.on_unrated!r}")
    if cfg.pairwise_per_prompt is not None and cfg.pairwise_per_prompt < 1:
        raise ConfigError("pairwise_per_prompt", f"at least 1 pair per prompt (null: every pair), got "
                                                 f"{cfg.pairwise_per_prompt}")
    round_dir = Path(cfg.round_dir)
    if cfg.export_csv or cfg.export_label_studio or cfg.export_pairwise or cfg.import_pairwise:
        if not (round_dir / "candidates" / "metadata.jsonl").is_file():
            raise ConfigError("round_dir", f"{round_dir} has no candidates/metadata.jsonl")
        candidates = read_candidates(round_dir / "candidates")
        if cfg.export_csv or cfg.export_label_studio:
            rows = RatingStore(round_dir / DB_NAME).complete_rows()
            if cfg.export_csv:
                log.info("wrote %s", write_csv(cfg.export_csv, rows))
            if cfg.export_label_studio:
                log.info("wrote %s and label_config.xml beside it",
                         write_label_studio(cfg.export_label_studio, candidates, rows, rubric))
        if cfg.export_pairwise:
            log.info("wrote %s and pairwise_config.xml beside it",
                     write_pairwise(cfg.export_pairwise, candidates, cfg.pairwise_per_prompt, cfg.pairwise_seed,
                                    rubric))
        if cfg.import_pairwise:
            pairs = read_pairwise(Path(cfg.import_pairwise).expanduser(), candidates, cfg.on_unrated)
            write_jsonl(round_dir / PREFERENCES_NAME, pairs)
            log.info("read %d pairwise answers from %s into %s", len(pairs), cfg.import_pairwise,
                     round_dir / PREFERENCES_NAME)
        return
    app = create_app(cfg.round_dir, cfg.rubric)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: anyone who can reach it can rate (the app has no login)", cfg.host)
    log.info("rate at http://%s:%d/?rater=YOUR_NAME (one at a time) or http://%s:%d/grid?rater=YOUR_NAME (a prompt's "
             "candidates at once); ratings are saved in %s", cfg.host, cfg.port, cfg.host, cfg.port,
             Path(cfg.round_dir) / DB_NAME)
    app.run(host=cfg.host, port=cfg.port, debug=False)


if __name__ == "__main__":
    main()
