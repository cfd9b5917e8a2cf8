"""The rating app for people: `python -m style_tailoring.hitl.serve round_dir=ROUND_DIR [port=8765]
[host=127.0.0.1]` (`export_csv=PATH` / `export_label_studio=PATH` write the ratings without serving; settings:
conf/serve.yaml).

A small Flask app over one round's `candidates/`: it shows each candidate with its prompt, takes `aligned` (y / n)
and `style` (1-5) from the keyboard (← → move), saves every answer to `ROUND_DIR/ratings.sqlite` the moment it is
given, shows the rater's progress and exports `ratings.csv` and Label Studio tasks. Each person opens it with their
name (`/?rater=NAME`); several people can rate the same round. It binds to 127.0.0.1 unless told otherwise: it has
no login, so anyone who can reach it can rate. Prompts are shown as text, never as markup.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from style_tailoring.config import ConfigError, ServeConfig, merge_into_schema
from style_tailoring.hitl.candidates import read_candidates
from style_tailoring.hitl.ratings import label_studio_tasks, write_csv, write_label_studio
from style_tailoring.hitl.store import RatingStore, UnreadableRatings

log = logging.getLogger("style_tailoring.hitl.serve")
DB_NAME = "ratings.sqlite"
MAX_RATER_NAME = 64

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Rate candidates: {{ round_name }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 40em; }
 #image { width: 256px; height: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
 .answer { font-weight: bold; } kbd { border: 1px solid #999; border-radius: 3px; padding: 0 .3em; }
</style></head>
<body>
{% if not rater %}
 <h1>Who is rating?</h1>
 <form method="get"><input id="rater" name="rater" maxlength="{{ max_name }}" required autofocus>
 <button type="submit">Start</button></form>
{% else %}
 <h1>Rating as <span id="who">{{ rater }}</span></h1>
 <p id="progress"></p>
 <p>Prompt: <span id="prompt"></span></p>
 <img id="image" alt="candidate">
 <p>Aligned (<kbd>y</kbd> / <kbd>n</kbd>): <span id="aligned" class="answer"></span> &middot;
    Style (<kbd>1</kbd>-<kbd>5</kbd>): <span id="style" class="answer"></span></p>
 <p><kbd>&larr;</kbd> / <kbd>&rarr;</kbd> previous / next &middot; <span id="position"></span> &middot;
    <span id="saved"></span></p>
 <p>Export: <a href="export/ratings.csv">ratings.csv</a> &middot;
    <a href="export/label_studio.json">Label Studio tasks</a></p>
 <script id="state" type="application/json">{{ state|tojson }}</script>
 <script>
 const state = JSON.parse(document.getElementById("state").textContent);
 const mine = state.ratings;  // file_name -> {aligned, style}
 let index = state.candidates.findIndex(c => !complete(mine[c.file_name]));
 if (index < 0) index = 0;
 function complete(r) { return r && r.aligned !== null && r.style !== null; }
 function show() {
   const c = state.candidates[index], r = mine[c.file_name] || {};
   document.getElementById("image").src = "image/" + encodeURIComponent(c.file_name);
   document.getElementById("prompt").textContent = c.prompt;
   document.getElementById("aligned").textContent =
     r.aligned === 1 ? "yes" : r.aligned === 0 ? "no" : "-";
   document.getElementById("style").textContent = r.style ? String(r.style) : "-";
   document.getElementById("position").textContent = (index + 1) + " of " + state.candidates.length;
   const done = state.candidates.filter(c => complete(mine[c.file_name])).length;
   document.getElementById("progress").textContent = done + " / " + state.candidates.length + " rated";
 }
 async function answer(field, value) {
   const c = state.candidates[index];
   const body = {file_name: c.file_name, rater: state.rater, [field]: value};
   const response = await fetch("api/rate", {method: "POST", headers: {"Content-Type": "application/json"},
                                             body: JSON.stringify(body)});
   if (!response.ok) { document.getElementById("saved").textContent = "NOT saved: " + await response.text(); return; }
   const row = await response.json();
   mine[c.file_name] = {aligned: row.aligned, style: row.style};
   document.getElementById("saved").textContent = "saved";
   if (complete(mine[c.file_name]) && index < state.candidates.length - 1) index += 1;
   show();
 }
 document.addEventListener("keydown", e => {
   if (e.key === "y") answer("aligned", 1);
   else if (e.key === "n") answer("aligned", 0);
   else if ("12345".includes(e.key) && e.key.length === 1) answer("style", Number(e.key));
   else if (e.key === "ArrowRight" && index < state.candidates.length - 1) { index += 1; show(); }
   else if (e.key === "ArrowLeft" && index > 0) { index -= 1; show(); }
 });
 show();
 </script>
{% endif %}
</body></html>
"""


def create_app(round_dir):
    from flask import Flask, Response, abort, jsonify, render_template_string, request, send_from_directory

    round_dir = Path(round_dir).resolve()
    candidates_dir = round_dir / "candidates"
    if not (candidates_dir / "metadata.jsonl").is_file():
        raise FileNotFoundError(f"{round_dir} has no candidates/metadata.jsonl: generate the round first "
                                "(python -m style_tailoring.hitl ...)")
    candidates = read_candidates(candidates_dir)
    known = {c["file_name"] for c in candidates}
    store = RatingStore(round_dir / DB_NAME)
    app = Flask(__name__)

    def rater_name(value) -> str:
        name = str(value or "").strip()
        if not name or len(name) > MAX_RATER_NAME:
            abort(400, f"rater: a name of 1-{MAX_RATER_NAME} characters is required")
        return name

    @app.errorhandler(UnreadableRatings)
    def damaged(err):  # the database broke while serving: every request says so (the page shows "NOT saved: ...")
        log.error("%s", err)
        return Response(str(err), status=500, mimetype="text/plain")

    @app.get("/")
    def page():
        rater = request.args.get("rater", "").strip()
        if rater:
            rater = rater_name(rater)
        shown = [{"file_name": c["file_name"], "prompt": c["prompt"]} for c in candidates]
        state = {"rater": rater, "candidates": shown,
                 "ratings": {r["file_name"]: {"aligned": r["aligned"], "style": r["style"]}
                             for r in store.rows(rater)} if rater else {}}
        return render_template_string(PAGE, rater=rater, state=state, round_name=round_dir.name,
                                      max_name=MAX_RATER_NAME)

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
                            style=body.get("style"))
        except ValueError as err:
            abort(400, str(err))
        return jsonify(row)

    @app.get("/api/progress")
    def progress():
        rows = store.complete_rows()
        return jsonify({"candidates": len(candidates), "ratings": len(rows),
                        "rated": len({r["file_name"] for r in rows}),
                        "raters": sorted({r["rater"] for r in rows})})

    @app.get("/export/ratings.csv")
    def export_csv():
        path = write_csv(round_dir / "ratings_export.csv", store.complete_rows())
        return Response(path.read_text(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=ratings.csv"})

    @app.get("/export/label_studio.json")
    def export_label_studio():
        return jsonify(label_studio_tasks(candidates, store.complete_rows()))

    return app


@hydra.main(version_base="1.3", config_path="../../../conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    try:
        serve(merge_into_schema(ServeConfig, cfg))
    except (ConfigError, UnreadableRatings) as err:  # a wrong setting or a damaged database: one line, no traceback
        raise SystemExit(f"error: {err}") from None


def serve(cfg) -> None:
    """The command on its validated settings (ServeConfig): export the round's ratings (export_csv,
    export_label_studio) or serve the round on host:port."""
    if cfg.export_csv or cfg.export_label_studio:
        round_dir = Path(cfg.round_dir)
        rows = RatingStore(round_dir / DB_NAME).complete_rows()
        if cfg.export_csv:
            log.info("wrote %s", write_csv(cfg.export_csv, rows))
        if cfg.export_label_studio:
            log.info("wrote %s", write_label_studio(cfg.export_label_studio, read_candidates(round_dir / "candidates"),
                                                    rows))
        return
    app = create_app(cfg.round_dir)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: anyone who can reach it can rate (the app has no login)", cfg.host)
    log.info("rate at http://%s:%d/?rater=YOUR_NAME ; ratings are saved in %s", cfg.host, cfg.port,
             Path(cfg.round_dir) / DB_NAME)
    app.run(host=cfg.host, port=cfg.port, debug=False)


if __name__ == "__main__":
    main()
