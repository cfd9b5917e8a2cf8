"""The rating app in a real headless Chromium (Selenium + the distribution's chromium and chromedriver), and the
people's-ratings files it exports read back through the import that the HITL loop uses."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from style_tailoring.config import ConfigError
from style_tailoring.hitl.ratings import (
    RatingsError,
    candidate_pairs,
    read_csv,
    read_label_studio,
    read_pairwise,
    write_label_studio,
    write_pairwise,
)
from style_tailoring.hitl.rubric import load_rubric
from style_tailoring.hitl.serve import create_app
from test_cli import assert_help_and_unknown_key, command

PROMPTS = ["one red star", "two blue hearts", "one <b>green</b> circle & 'co'"]


def make_round(root):
    """A round directory with three real candidate PNGs (one prompt holds markup, which must show as text)."""
    candidates = root / "candidates"
    candidates.mkdir(parents=True)
    rows = []
    for i, prompt in enumerate(PROMPTS):
        name = f"{i:04d}-{i}.png"
        Image.new("RGB", (32, 32), (40 * i, 100, 200)).save(candidates / name)
        rows.append({"file_name": name, "text": prompt, "prompt": prompt, "seed": i, "model": "m", "round": 1,
                     "teacher": "model"})
    (candidates / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_grid_round(root, prompts=PROMPTS, per_prompt: int = 4):
    """A round as the HITL loop generates it: `per_prompt` candidates (seeds) of each prompt, each a real PNG."""
    candidates = root / "candidates"
    candidates.mkdir(parents=True)
    rows = []
    for k, prompt in enumerate(prompts):
        for j in range(per_prompt):
            name = f"{k:04d}-{k * per_prompt + j}.png"
            Image.new("RGB", (32, 32), (60 * j % 256, 30 * k % 256, 200)).save(candidates / name)
            rows.append({"file_name": name, "text": prompt, "prompt": prompt, "seed": k * per_prompt + j,
                         "model": "m", "round": 1, "teacher": "model"})
    (candidates / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def serve_round(round_dir):
    """The app over `round_dir` on a real threaded werkzeug server on 127.0.0.1: (server, its URL)."""
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, create_app(round_dir), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}"


def browser_paths():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return chromium, driver


@pytest.fixture()
def server(tmp_path):
    from werkzeug.serving import make_server

    round_dir = make_round(tmp_path / "round-1")
    httpd = make_server("127.0.0.1", 0, create_app(round_dir), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", round_dir
    httpd.shutdown()


@pytest.fixture()
def browser():
    chromium, driver = browser_paths()
    if not (chromium and driver):
        if os.environ.get("REQUIRE_BROWSER"):  # CI installs it (.ci/run): there a missing browser is a failure
            pytest.fail("chromium and chromedriver are required (apt-get install chromium chromium-driver)")
        pytest.skip("no chromium/chromedriver on this machine (CI installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield drv
    drv.quit()


def _text(drv, element_id):
    from selenium.webdriver.common.by import By

    return drv.find_element(By.ID, element_id).text


def _settled(drv, timeout: float = 30) -> None:
    """Wait until every answer given in the page has been confirmed by the server (the page queues them in order),
    and check that none was refused."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(drv, timeout).until(lambda d: d.execute_script("return document.body.dataset.pending") == "0")
    assert drv.execute_script("return document.body.dataset.failures") == "0", _text(drv, "saved")


def _press(drv, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(drv).send_keys(key).perform()
        _settled(drv)


@pytest.mark.slow
def test_rate_with_the_keyboard_reload_export_and_import(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, round_dir = server
    browser.get(url + "/")
    browser.find_element(By.ID, "rater").send_keys("alice", Keys.ENTER)  # the name form
    assert _text(browser, "who") == "alice"
    assert _text(browser, "progress-you") == "you: 0/3 rated (0 of 3 prompts done)"
    assert _text(browser, "prompt") == PROMPTS[0]
    _press(browser, "y", "4")  # candidate 1: aligned, style 4 → moves on by itself
    assert _text(browser, "prompt") == PROMPTS[1]
    _press(browser, "n", "2")  # candidate 2
    assert _text(browser, "progress-you") == "you: 2/3 rated (2 of 3 prompts done)"
    # The third prompt holds markup: it is shown as text, not parsed into elements.
    assert _text(browser, "prompt") == PROMPTS[2]
    assert not browser.find_elements(By.CSS_SELECTOR, "#prompt b")
    _press(browser, "y")  # half-rated: aligned only, then the tab is reloaded
    browser.refresh()
    assert _text(browser, "progress-you").startswith("you: 2/3 rated")
    assert _text(browser, "prompt") == PROMPTS[2] and _text(browser, "aligned") == "yes"  # kept, resumed there
    _press(browser, "5")
    assert _text(browser, "progress-you").startswith("you: 3/3 rated")
    _press(browser, Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # go back and change an answer
    assert _text(browser, "prompt") == PROMPTS[0] and _text(browser, "style") == "4"
    _press(browser, "3")

    with sqlite3.connect(round_dir / "ratings.sqlite") as db:  # saved on every click, by rater
        rows = db.execute("SELECT file_name, rater, aligned, style FROM ratings ORDER BY file_name").fetchall()
    assert rows == [("0000-0.png", "alice", 1, 3), ("0001-1.png", "alice", 0, 2), ("0002-2.png", "alice", 1, 5)]

    csv_text = urllib.request.urlopen(url + "/export/ratings.csv").read().decode()
    exported = tmp_path / "ratings.csv"
    exported.write_text(csv_text)
    known = {f"{i:04d}-{i}.png" for i in range(3)}
    back = read_csv(exported, known)
    assert [(r["file_name"], r["rater"], r["aligned"], r["style"]) for r in back] == rows
    tasks = json.loads(urllib.request.urlopen(url + "/export/label_studio.json").read())
    studio = tmp_path / "label_studio.json"
    studio.write_text(json.dumps(tasks))
    assert sorted((r["file_name"], r["rater"], r["aligned"], r["style"]) for r in read_label_studio(studio, known)) \
        == rows
    with pytest.raises(RatingsError, match="unknown candidate"):
        read_csv(exported, known - {"0001-1.png"})


def test_app_rejects_bad_answers_and_serves_only_candidates(tmp_path):
    client = create_app(make_round(tmp_path / "round-1")).test_client()
    page = client.get("/?rater=bob").get_data(as_text=True)
    assert "<b>green</b>" not in page  # the prompt is JSON-escaped data, never markup
    assert client.post("/api/rate", json={"file_name": "0000-0.png", "rater": "bob", "style": 9}).status_code == 400
    assert client.post("/api/rate", json={"file_name": "../x.png", "rater": "bob", "aligned": 1}).status_code == 400
    assert client.post("/api/rate", json={"file_name": "0000-0.png", "rater": "", "aligned": 1}).status_code == 400
    assert client.get("/image/metadata.jsonl").status_code == 404
    assert client.get("/image/0000-0.png").status_code == 200
    ok = client.post("/api/rate", json={"file_name": "0000-0.png", "rater": "bob", "aligned": 1})
    assert ok.get_json()["aligned"] == 1 and ok.get_json()["style"] is None
    assert client.get("/api/progress").get_json()["rated"] == 0  # one answer of two is not a rating yet


@pytest.mark.slow
def test_animated_candidates_play_in_the_app_and_peoples_choice_keeps_them(browser, tmp_path):
    """The ensemble-of-teachers round: animated WebP candidates (as the teachers write them) play in the page, and the
    ratings people give there decide what the teachers' stage keeps."""
    from selenium.webdriver.common.by import By
    from werkzeug.serving import make_server

    from style_tailoring.animation.sample import save_clip
    from style_tailoring.hitl.teachers import _people
    from style_tailoring.world.grammar import Content
    from style_tailoring.world.motion import render_clip

    rng = np.random.default_rng(0)
    candidates = tmp_path / "teachers" / "candidates"
    candidates.mkdir(parents=True)
    rows = []
    clips = [(Content("one", "red", "star"), "spin", "one red star, spinning"),
             (Content("two", "blue", "heart"), "bounce", "two blue hearts, bouncing")]
    for i, (content, motion, prompt) in enumerate(clips):
        name = f"t0-{i:05d}-0.webp"
        save_clip(render_clip(content, motion, "sticker", rng), candidates / name)
        rows.append({"file_name": name, "text": prompt, "prompt": prompt, "sticker": i, "teacher": "t0", "seed": i})
    (candidates / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    httpd = make_server("127.0.0.1", 0, create_app(tmp_path / "teachers"), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        assert urllib.request.urlopen(f"{url}/image/{rows[0]['file_name']}").headers["Content-Type"] == "image/webp"
        browser.get(url + "/?rater=carol")
        image = browser.find_element(By.ID, "image")
        shots = set()
        for _ in range(12):  # 8 frames of 125 ms: a playing loop shows more than one picture within 1.5 s
            shots.add(image.screenshot_as_png)
            time.sleep(0.12)
        assert len(shots) > 1, "the animation does not play in the page"
        _press(browser, "y", "4", "n", "5")
        exported = tmp_path / "teachers" / "people.csv"
        exported.write_text(urllib.request.urlopen(url + "/export/ratings.csv").read().decode())
    finally:
        httpd.shutdown()
    assert _people(exported, {r["file_name"] for r in rows}) == {rows[0]["file_name"]: True,
                                                                  rows[1]["file_name"]: False}


def test_the_serve_command_lists_its_settings_refuses_an_unknown_one_and_exports(tmp_path):
    round_dir = make_round(tmp_path / "round-1")
    client = create_app(round_dir).test_client()
    assert client.post("/api/rate", json={"file_name": "0000-0.png", "rater": "ann", "aligned": 1,
                                          "style": 4}).status_code == 200
    assert_help_and_unknown_key("style_tailoring.hitl.serve", header="the rating app", setting="rubric",
                                args=[f"round_dir={round_dir}"], typo="export-csv=out.csv", cwd=tmp_path)
    assert not (tmp_path / "out.csv").exists()  # refused before any work
    exported = command("style_tailoring.hitl.serve", f"round_dir={round_dir}", "export_csv=out.csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = read_csv(tmp_path / "out.csv", known={"0000-0.png"})
    assert [(r["file_name"], r["aligned"], r["style"]) for r in rows] == [("0000-0.png", 1, 4)], rows


def test_the_serve_command_writes_label_studio_configs_and_pairs_and_reads_the_answers_back(tmp_path):
    round_dir = make_grid_round(tmp_path / "round-1")
    rubric = tmp_path / "rubric.md"
    rubric.write_text(MARKDOWN_RUBRIC)
    wrong = command("style_tailoring.hitl.serve", f"round_dir={round_dir}", "rubric=nowhere.yaml",
                    "export_pairwise=pairs.json", cwd=tmp_path)
    assert wrong.returncode == 1 and "error: rubric: no rubric file at nowhere.yaml" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "pairs.json").exists()  # refused before any work
    written = command("style_tailoring.hitl.serve", f"round_dir={round_dir}", f"rubric={rubric}",
                      "export_label_studio=ls/tasks.json", "export_pairwise=ls/pairs.json", "pairwise_per_prompt=2",
                      cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert "Halfway, with a broken border." in (tmp_path / "ls" / "label_config.xml").read_text()  # its rubric
    assert "A clean sticker." in (tmp_path / "ls" / "pairwise_config.xml").read_text()
    pairs = json.loads((tmp_path / "ls" / "pairs.json").read_text())
    assert len(pairs) == 3 * 2
    (tmp_path / "ls" / "annotated.json").write_text(json.dumps(_annotate_pairs(pairs, lambda data: "right")))
    back = command("style_tailoring.hitl.serve", f"round_dir={round_dir}", "import_pairwise=ls/annotated.json",
                   cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    preferences = [json.loads(line) for line in (round_dir / "preferences.jsonl").read_text().splitlines()]
    assert [(p["preferred"], p["rejected"]) for p in preferences] == [(t["data"]["right"], t["data"]["left"])
                                                                      for t in pairs]


# ------------------------------------------------------------------------------------------------------ grid mode
def _tiles(drv) -> list[tuple]:
    """The grid's tiles as shown: (file name, aligned, style), '' where unanswered."""
    return [tuple(t) for t in drv.execute_script(
        "return [...document.querySelectorAll('.tile')].map(t => [t.dataset.file, t.dataset.aligned, "
        "t.dataset.style])")]


def _focused(drv) -> int:
    return drv.execute_script("return [...document.querySelectorAll('.tile')].findIndex(t => "
                              "t.classList.contains('focused'))")


def _keys(drv, *keys) -> None:
    """Keys sent at once, as fast as the browser takes them (no waiting for the server in between)."""
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(drv).send_keys(*keys).perform()


def _db(round_dir, rater: str) -> list[tuple]:
    with sqlite3.connect(round_dir / "ratings.sqlite") as db:
        return db.execute("SELECT file_name, rater, aligned, style FROM ratings WHERE rater = ? ORDER BY file_name",
                          (rater,)).fetchall()


@pytest.mark.slow
def test_grid_mode_keyboard_and_mouse_reload_one_at_a_time_export_and_import(browser, tmp_path):
    """A whole prompt's tiles graded with the keyboard, the next with the mouse, the third half-rated, reloaded:
    every answer kept; the one-at-a-time mode shows the same answers and what it adds shows in the grid; the
    exports read back through the import equal the database."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    round_dir = make_grid_round(tmp_path / "round-1")
    names = [[f"{k:04d}-{4 * k + j}.png" for j in range(4)] for k in range(3)]
    httpd, url = serve_round(round_dir)
    try:
        browser.set_window_size(1400, 1000)
        browser.get(url + "/grid")
        browser.find_element(By.ID, "rater").send_keys("alice", Keys.ENTER)  # the name form, then the grid
        assert _text(browser, "who") == "alice" and "/grid?rater=alice" in browser.current_url
        assert _text(browser, "prompt") == PROMPTS[0] and _text(browser, "prompt-number") == "1/3"
        assert _text(browser, "progress-prompt") == "prompt 1/3: 0 of 4 rated"
        assert _text(browser, "progress-you") == "you: 0/12 rated (0 of 3 prompts done)"
        assert [f for f, _, _ in _tiles(browser)] == names[0] and _focused(browser) == 0
        # The rubric is on the page: what aligned means and each grade, also as the grade buttons' titles.
        assert "every attribute the prompt names is right" in _text(browser, "rubric-aligned")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#rubric-grades li")) == 5
        assert "die-cut border" in browser.find_element(By.CSS_SELECTOR, "#tile-0 .grade[data-grade='5']") \
            .get_attribute("title")

        # Prompt 1 with the keyboard: `a` marks aligned, a grade moves the focus on; an unmarked graded tile is
        # not aligned; arrows move back and `a` changes a tile's mind.
        _keys(browser, "a", "4", "2", " ", "5", "a", "3")
        _settled(browser)
        assert _tiles(browser) == [(names[0][0], "1", "4"), (names[0][1], "0", "2"), (names[0][2], "1", "5"),
                                   (names[0][3], "1", "3")]
        assert _focused(browser) == 3  # the last tile keeps the focus
        _keys(browser, Keys.ARROW_LEFT, Keys.ARROW_LEFT, "a", Keys.ARROW_RIGHT, "a")  # tile 1 on, tile 2 off
        _settled(browser)
        assert [t[1] for t in _tiles(browser)] == ["1", "1", "0", "1"] and _focused(browser) == 2
        columns = browser.execute_script(
            "return getComputedStyle(document.getElementById('grid')).gridTemplateColumns.split(' ').length")
        _keys(browser, Keys.ARROW_UP)
        assert _focused(browser) == max(0, 2 - columns)
        assert _text(browser, "progress-prompt") == "prompt 1/3: 4 of 4 rated"
        assert _text(browser, "grid-done").startswith("All 4 rated")

        # Prompt 2 with the mouse: click two pictures (aligned), click a grade under each tile.
        _keys(browser, Keys.ENTER)
        assert _text(browser, "prompt") == PROMPTS[1] and _focused(browser) == 0
        for k in (0, 2):
            browser.find_element(By.CSS_SELECTOR, f"#tile-{k} .tile-image").click()
        for k, grade in enumerate((5, 1, 4, 2)):
            browser.find_element(By.CSS_SELECTOR, f"#tile-{k} .grade[data-grade='{grade}']").click()
        _settled(browser)
        assert _tiles(browser) == [(names[1][0], "1", "5"), (names[1][1], "0", "1"), (names[1][2], "1", "4"),
                                   (names[1][3], "0", "2")]
        assert browser.find_element(By.CSS_SELECTOR, "#tile-2 .grade[data-grade='4']") \
            .get_attribute("aria-pressed") == "true"

        # Prompt 3 (its prompt holds markup: text, not elements): one tile half-rated, then the tab is reloaded.
        browser.find_element(By.ID, "next-prompt").click()
        assert _text(browser, "prompt") == PROMPTS[2] and not browser.find_elements(By.CSS_SELECTOR, "#prompt b")
        _keys(browser, "a")
        _settled(browser)
        assert "prompt=3" in browser.current_url
        browser.refresh()
        assert _text(browser, "prompt") == PROMPTS[2] and _focused(browser) == 0  # the first unrated tile
        assert _tiles(browser)[0] == (names[2][0], "1", "")
        assert _text(browser, "progress-you") == "you: 8/12 rated (2 of 3 prompts done)"
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()  # previous
        # prompt: the mouse's answers kept
        assert _text(browser, "prompt") == PROMPTS[1] and [t[1:] for t in _tiles(browser)] == [
            ("1", "5"), ("0", "1"), ("1", "4"), ("0", "2")]
        _keys(browser, Keys.PAGE_UP)
        assert [t[1:] for t in _tiles(browser)] == [("1", "4"), ("1", "2"), ("0", "5"), ("1", "3")]

        # The one-at-a-time mode (`m` on a tile) shows the same answers and goes on where the grid left off.
        _keys(browser, Keys.PAGE_DOWN, Keys.PAGE_DOWN, "m")
        assert _text(browser, "prompt") == PROMPTS[2] and _text(browser, "aligned") == "yes"
        assert _text(browser, "style") == "-" and _text(browser, "position") == "9 of 12"
        _press(browser, Keys.ARROW_LEFT)
        assert _text(browser, "prompt") == PROMPTS[1] and (_text(browser, "aligned"), _text(browser, "style")) \
            == ("no", "2")
        _press(browser, Keys.ARROW_RIGHT, "3", "n", "1", "y", "5", "n", "2")  # the rest of prompt 3
        assert _text(browser, "progress-you") == "you: 12/12 rated (3 of 3 prompts done)"
        _keys(browser, "m")  # back to the grid, at the same prompt: the one-at-a-time answers are there
        assert _text(browser, "prompt") == PROMPTS[2]
        assert [t[1:] for t in _tiles(browser)] == [("1", "3"), ("0", "1"), ("1", "5"), ("0", "2")]

        expected = [(names[0][0], "alice", 1, 4), (names[0][1], "alice", 1, 2), (names[0][2], "alice", 0, 5),
                    (names[0][3], "alice", 1, 3), (names[1][0], "alice", 1, 5), (names[1][1], "alice", 0, 1),
                    (names[1][2], "alice", 1, 4), (names[1][3], "alice", 0, 2), (names[2][0], "alice", 1, 3),
                    (names[2][1], "alice", 0, 1), (names[2][2], "alice", 1, 5), (names[2][3], "alice", 0, 2)]
        assert _db(round_dir, "alice") == sorted(expected)  # every answer in the store, one row per candidate

        # Another rater under their own name: nothing of alice's is theirs; the progress counts both.
        browser.get(url + "/grid?rater=bob")
        assert _tiles(browser)[0] == (names[0][0], "", "") and _text(browser, "progress-you").startswith("you: 0/12")
        _keys(browser, "2")
        _settled(browser)
        progress = json.loads(urllib.request.urlopen(url + "/progress?rater=bob").read())
        assert progress["you"] == {"rater": "bob", "rated": 1, "of": 12, "prompts_done": 0}
        assert progress["per_rater"]["alice"] == {"rated": 12, "of": 12, "prompts_done": 3}
        assert progress["per_prompt"][0] == {"prompt": 1, "text": PROMPTS[0], "candidates": 4, "rated": 4,
                                             "ratings": 5, "you": 1}
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 10).until(lambda d: "2 rater(s)" in _text(d, "progress-all"))
        assert _text(browser, "progress-all").startswith("all raters: 12/12 rated by someone, 13 ratings")

        # Export, and read the exports back through the import the HITL loop uses.
        known = {n for group in names for n in group}
        exported = tmp_path / "ratings.csv"
        exported.write_text(urllib.request.urlopen(url + "/export/ratings.csv").read().decode())
        rows = expected + [(names[0][0], "bob", 0, 2)]
        assert sorted((r["file_name"], r["rater"], r["aligned"], r["style"]) for r in read_csv(exported, known)) \
            == sorted(rows)
        studio = tmp_path / "label_studio.json"
        studio.write_bytes(urllib.request.urlopen(url + "/export/label_studio.json").read())
        assert sorted((r["file_name"], r["rater"], r["aligned"], r["style"])
                      for r in read_label_studio(studio, known)) == sorted(rows)
    finally:
        httpd.shutdown()


SPEED_PROMPTS = ["one red star", "two blue hearts", "one green circle", "two yellow squares"]


@pytest.mark.slow
def test_scripted_ratings_per_minute_in_each_mode(browser, tmp_path):
    """The same 32 ratings (4 prompts x 8 candidates, half aligned) typed by a script in each mode, each rating's
    keys sent at once without waiting for the server, timed from the first key to the last answer confirmed:
    ratings per minute as the SCRIPTED keystrokes achieve them (a measure of the app and its keys per rating, not
    of people). Fast typing must lose nothing: the store holds exactly the scripted answers."""
    round_dir = make_grid_round(tmp_path / "round-1", SPEED_PROMPTS, per_prompt=8)
    plan = [((k, j), j % 2 == 0, 1 + (k + j) % 5) for k in range(4) for j in range(8)]
    expected = lambda rater: sorted((f"{k:04d}-{8 * k + j}.png", rater, int(aligned), grade)  # noqa: E731
                                    for (k, j), aligned, grade in plan)
    grid_keys, one_keys = [], []
    for (k, j), aligned, grade in plan:
        grid_keys.append(((["a"] if aligned else []) + [str(grade)] + (["\ue007"] if j == 7 and k < 3 else [])))
        one_keys.append(["y" if aligned else "n", str(grade)])  # "\ue007": Enter, the next prompt
    httpd, url = serve_round(round_dir)
    measured = {}
    try:
        browser.set_window_size(1400, 1000)
        for mode, path, keys in (("grid", "/grid", grid_keys), ("one at a time", "/", one_keys)):
            rater = "scripted-" + mode.split()[0]
            browser.get(f"{url}{path}?rater={rater}")
            _settled(browser)
            started = time.perf_counter()
            for rating in keys:
                _keys(browser, *rating)
            _settled(browser, timeout=120)
            seconds = time.perf_counter() - started
            assert _db(round_dir, rater) == expected(rater), mode
            measured[mode] = (len(plan) / seconds * 60, sum(map(len, keys)) / len(plan), seconds)
    finally:
        httpd.shutdown()
    for mode, (per_minute, keys_per_rating, seconds) in measured.items():
        print(f"scripted keystrokes, not people: {mode}: {len(plan)} ratings in {seconds:.2f} s = "
              f"{per_minute:.0f} ratings/min, {keys_per_rating:.2f} keys per rating")
    assert measured["grid"][1] < measured["one at a time"][1]  # fewer keys: unmarked tiles are not aligned


# ------------------------------------------------------------------------------- rubric, progress, Label Studio
MARKDOWN_RUBRIC = """# Sticker rubric

## Aligned?
Every attribute the prompt names is right:
count, colour, shape and the scene when named.

- yes: all named attributes right
- no: one is wrong

## Style (1-5)
How sticker-like it is.

1. A photo.
2. Mostly a photo.
- 3: Halfway,
  with a broken border.
4) A sticker with a flaw.
**5**. A clean sticker.
"""


def test_the_rubric_loads_from_yaml_json_or_markdown_and_a_wrong_one_is_named(tmp_path):
    default = load_rubric()
    assert list(default["style"]["grades"]) == [1, 2, 3, 4, 5] and "count" in default["aligned"]["hint"]
    assert "white die-cut border" in default["style"]["grades"][5] and default["pairwise"]["question"]
    as_json = tmp_path / "rubric.json"
    as_json.write_text(json.dumps(default))
    assert load_rubric(as_json) == default  # JSON of the same shape (grades keyed "1".."5") reads the same
    markdown = tmp_path / "rubric.md"
    markdown.write_text(MARKDOWN_RUBRIC)
    rubric = load_rubric(markdown)
    assert rubric["title"] == "Sticker rubric" and rubric["aligned"]["question"] == "Aligned?"
    assert rubric["aligned"]["hint"] == ("Every attribute the prompt names is right: count, colour, shape and the "
                                         "scene when named.")
    assert (rubric["aligned"]["yes"], rubric["aligned"]["no"]) == ("all named attributes right", "one is wrong")
    assert rubric["style"]["grades"] == {1: "A photo.", 2: "Mostly a photo.", 3: "Halfway, with a broken border.",
                                         4: "A sticker with a flaw.", 5: "A clean sticker."}
    assert rubric["style"]["hint"] == "How sticker-like it is."
    bad = {"missing.yaml": None, "r.txt.bak": "x",
           "no_grade.yaml": "aligned: {hint: h}\nstyle: {grades: {1: a, 2: b, 4: d, 5: e}}\n",
           "typo.yaml": "aligend: {hint: h}\n", "grade.yaml": "aligned: {hint: h}\nstyle: {grades: {6: x}}\n",
           "broken.yaml": "aligned: {hint: h\nstyle: [\n", "section.md": "## Colour\ntext\n",
           "nohint.json": json.dumps({"aligned": {"question": "q"}, "style": {"grades": {str(g): "x" for g in
                                                                                            range(1, 6)}}})}
    says = {"missing.yaml": "no rubric file", "r.txt.bak": "a .yaml, .json or .md file",
            "no_grade.yaml": "style.grades.3: is required", "typo.yaml": "aligend: not a rubric entry",
            "grade.yaml": "style.grades.6: not a grade", "broken.yaml": "broken.yaml:2: not YAML",
            "section.md": "section.md:1: section 'Colour' is not one of", "nohint.json": "aligned.hint: is required"}
    for name, text in bad.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=r"^rubric: ") as refused:
            load_rubric(tmp_path / name)
        assert says[name] in str(refused.value) and str(tmp_path / name) in str(refused.value), refused.value


def test_the_grid_page_its_answers_and_the_progress_endpoint(tmp_path):
    client = create_app(make_grid_round(tmp_path / "round-1")).test_client()
    page = client.get("/grid?rater=bob&prompt=2").get_data(as_text=True)
    assert "<b>green</b>" not in page  # prompts are data, never markup
    assert "grade its style" in page and "A tile graded without being marked is saved as not aligned" in page  # keys
    assert "every attribute the prompt names is right" in page  # the rubric, as text
    for bad in ("0", "4", "x"):
        refused = client.get(f"/grid?rater=bob&prompt={bad}")
        assert refused.status_code == 400 and "prompt: a prompt's number, 1-3" in refused.get_data(as_text=True)
    assert client.get("/?rater=bob&at=../x.png").status_code == 400
    rate = lambda **body: client.post("/api/rate", json={"rater": "bob", **body}).get_json()  # noqa: E731
    # The grid's grade: aligned=0 when nothing was said about aligned, never over an answer given.
    assert (rate(file_name="0000-0.png", style=3, aligned_if_unset=0)["aligned"]) == 0
    assert rate(file_name="0000-1.png", aligned=1)["aligned"] == 1
    assert rate(file_name="0000-1.png", style=4, aligned_if_unset=0) | {"updated": 0} == {
        "file_name": "0000-1.png", "rater": "bob", "aligned": 1, "style": 4, "updated": 0}
    assert client.post("/api/rate", json={"rater": "bob", "file_name": "0000-2.png", "style": 2,
                                          "aligned_if_unset": 7}).status_code == 400
    refused = client.post("/api/rate", json={"rater": "bob", "file_name": "0000-2.png", "style": True})
    assert refused.status_code == 400 and refused.get_data(as_text=True) == "style must be an integer 1-5, got True"
    rate(file_name="0000-2.png", style=5, aligned=1)
    rate(file_name="0000-3.png", style=1, aligned=0)
    client.post("/api/rate", json={"rater": "ann", "file_name": "0001-4.png", "aligned": 1})  # half: not rated
    client.post("/api/rate", json={"rater": "ann", "file_name": "0000-0.png", "aligned": 1, "style": 2})
    report = client.get("/progress?rater=bob").get_json()
    assert report["you"] == {"rater": "bob", "rated": 4, "of": 12, "prompts_done": 1}
    assert (report["candidates"], report["prompts"], report["ratings"], report["rated"], report["raters"]) == (
        12, 3, 5, 4, ["ann", "bob"])
    assert report["per_rater"] == {"ann": {"rated": 1, "of": 12, "prompts_done": 0},
                                   "bob": {"rated": 4, "of": 12, "prompts_done": 1}}
    assert [(p["prompt"], p["text"], p["candidates"], p["rated"], p["ratings"], p["you"])
            for p in report["per_prompt"]] == [(1, PROMPTS[0], 4, 4, 5, 4), (2, PROMPTS[1], 4, 0, 0, 0),
                                                (3, PROMPTS[2], 4, 0, 0, 0)]
    assert "you" not in client.get("/progress").get_json() and client.get("/api/progress").get_json()["rated"] == 4


def _annotate_pairs(tasks: list[dict], choose) -> list[dict]:
    """What Label Studio's JSON export of annotated pairwise tasks looks like: each task with its data and an
    annotation (who, and the Pairwise result `selected`: left or right), plus a cancelled one that does not count."""
    out = []
    for task in tasks:
        result = [{"id": "r1", "from_name": "preferred", "to_name": "left", "type": "pairwise",
                   "origin": "manual", "value": {"selected": choose(task["data"])}}]
        out.append({**task, "created_at": "2026-01-01T00:00:00Z", "annotations": [
            {"id": task["id"] * 10, "completed_by": {"id": 1, "email": "ann@example.org"}, "result": result,
             "was_cancelled": False, "lead_time": 2.5},
            {"id": task["id"] * 10 + 1, "completed_by": 2, "result": [], "was_cancelled": True}],
            "predictions": []})
    return out


def test_label_studio_configs_hold_the_rubric_and_pairwise_tasks_round_trip(tmp_path):
    round_dir = make_grid_round(tmp_path / "round-1")
    candidates = [json.loads(line) for line in (round_dir / "candidates" / "metadata.jsonl").read_text().splitlines()]
    rubric = load_rubric()
    tasks = write_label_studio(tmp_path / "ls" / "tasks.json", candidates, [])
    config = ET.parse(tasks.with_name("label_config.xml")).getroot()  # well-formed XML, the two questions
    assert [c.get("value") for c in config.find(".//Choices[@name='aligned']")] == ["aligned", "not aligned"]
    assert config.find(".//Choices[@name='aligned']/Choice").get("hint") == rubric["aligned"]["yes"]
    assert config.find(".//Rating[@name='style']").get("maxRating") == "5"
    headers = [h.get("value") for h in config.iter("Header")]
    assert rubric["aligned"]["hint"] in headers and f"5: {rubric['style']['grades'][5]}" in headers

    pairs = write_pairwise(tmp_path / "ls" / "pairs.json", candidates)
    exported = json.loads(pairs.read_text())
    assert len(exported) == 3 * 6  # every pair of 4 candidates, per prompt
    prompt_of = {c["file_name"]: c["prompt"] for c in candidates}
    for task in exported:
        data = task["data"]
        assert prompt_of[data["left"]] == prompt_of[data["right"]] == data["prompt"] and data["left"] != data["right"]
        assert data["left_image"] == f"/data/local-files/?d=candidates/{data['left']}"
    assert {frozenset((t["data"]["left"], t["data"]["right"])) for t in exported} == {
        frozenset(p[1:]) for p in candidate_pairs(candidates)}
    sides = [t["data"]["left"] < t["data"]["right"] for t in exported]
    assert any(sides) and not all(sides)  # which one is left is drawn, so no side is favoured
    pairwise = ET.parse(pairs.with_name("pairwise_config.xml")).getroot()
    assert pairwise.find(".//Pairwise").attrib == {"name": "preferred", "toName": "left,right"}
    assert [(i.get("name"), i.get("value")) for i in pairwise.iter("Image")] == [("left", "$left_image"),
                                                                                 ("right", "$right_image")]
    assert rubric["pairwise"]["hint"] in [h.get("value") for h in pairwise.iter("Header")]
    sample = candidate_pairs(candidates, per_prompt=2, seed=3)
    assert len(sample) == 6 and sample == candidate_pairs(candidates, per_prompt=2, seed=3)

    # Label Studio's export of the annotated tasks, read back: one row per (not cancelled) annotation.
    prefer = lambda data: "left" if data["left"] < data["right"] else "right"  # noqa: E731 - the lower seed wins
    annotated = tmp_path / "ls" / "pairs_annotated.json"
    annotated.write_text(json.dumps(_annotate_pairs(exported, prefer)))
    rows = read_pairwise(annotated, candidates)
    assert len(rows) == len(exported)
    for row, task in zip(rows, exported):
        low, high = sorted((task["data"]["left"], task["data"]["right"]))
        assert (row["task"], row["prompt"], row["preferred"], row["rejected"], row["rater"]) == (
            task["id"], task["data"]["prompt"], low, high, "ann@example.org")
        assert (row["left"], row["right"]) == (task["data"]["left"], task["data"]["right"])
    assert read_pairwise(annotated, set(prompt_of)) == rows  # names only: the same, without the prompt check
    unanswered = json.loads(annotated.read_text())
    unanswered[4]["annotations"] = []
    annotated.write_text(json.dumps(unanswered))
    with pytest.raises(RatingsError, match=rf"^{annotated}: task 5: the pair .* has no answer"):
        read_pairwise(annotated, candidates)
    assert len(read_pairwise(annotated, candidates, on_unrated="skip")) == len(exported) - 1
