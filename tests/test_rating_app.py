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

import numpy as np
import pytest
from PIL import Image

from style_tailoring.hitl.ratings import RatingsError, read_csv, read_label_studio
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


def _press(drv, *keys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    for key in keys:
        before = _text(drv, "saved") if key in "yn12345" else None
        drv.execute_script("document.getElementById('saved').textContent = ''")
        ActionChains(drv).send_keys(key).perform()
        if before is not None:  # wait for the server to confirm the answer was saved
            WebDriverWait(drv, 10).until(lambda d: _text(d, "saved") != "")


@pytest.mark.slow
def test_rate_with_the_keyboard_reload_export_and_import(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, round_dir = server
    browser.get(url + "/")
    browser.find_element(By.ID, "rater").send_keys("alice", Keys.ENTER)  # the name form
    assert _text(browser, "who") == "alice"
    assert _text(browser, "progress") == "0 / 3 rated" and _text(browser, "prompt") == PROMPTS[0]
    _press(browser, "y", "4")  # candidate 1: aligned, style 4 → moves on by itself
    assert _text(browser, "prompt") == PROMPTS[1]
    _press(browser, "n", "2")  # candidate 2
    assert _text(browser, "progress") == "2 / 3 rated"
    # The third prompt holds markup: it is shown as text, not parsed into elements.
    assert _text(browser, "prompt") == PROMPTS[2]
    assert not browser.find_elements(By.CSS_SELECTOR, "#prompt b")
    _press(browser, "y")  # half-rated: aligned only, then the tab is reloaded
    browser.refresh()
    assert _text(browser, "progress") == "2 / 3 rated"
    assert _text(browser, "prompt") == PROMPTS[2] and _text(browser, "aligned") == "yes"  # kept, resumed there
    _press(browser, "5")
    assert _text(browser, "progress") == "3 / 3 rated"
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
    assert_help_and_unknown_key("style_tailoring.hitl.serve", header="the rating app", setting="export_csv",
                                args=[f"round_dir={round_dir}"], typo="export-csv=out.csv", cwd=tmp_path)
    assert not (tmp_path / "out.csv").exists()  # refused before any work
    exported = command("style_tailoring.hitl.serve", f"round_dir={round_dir}", "export_csv=out.csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = read_csv(tmp_path / "out.csv", known={"0000-0.png"})
    assert [(r["file_name"], r["aligned"], r["style"]) for r in rows] == [("0000-0.png", 1, 4)], rows
