"""Hostile input and load on the rating app and the people's-ratings files it exchanges: it listens on this machine
only, shows markup as text, refuses ratings that name files outside the round, reports a damaged database naming the
file, and keeps every rating under concurrent raters."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import test_rating_app
from faultlib import cli_env, record, wait_for
from style_tailoring.hitl.ratings import (
    RatingsError,
    label_config,
    pairwise_config,
    read_csv,
    read_label_studio,
    read_pairwise,
)
from style_tailoring.hitl.rubric import load_rubric
from style_tailoring.hitl.serve import create_app
from style_tailoring.hitl.steps import people_rows
from style_tailoring.hitl.store import RatingStore, UnreadableRatings

browser = test_rating_app.browser  # the headless Chromium fixture of the rating app's own tests
HOSTILE = """</script><script>document.title='pwned'</script><img src=x onerror="document.title='pwned'">"""


def make_round(root: Path, prompts: list[str], images: bool = True) -> Path:
    candidates = root / "candidates"
    candidates.mkdir(parents=True)
    rows = []
    for i, prompt in enumerate(prompts):
        name = f"{i:04d}.png"
        if images:
            Image.new("RGB", (16, 16), (10 * (i % 25), 100, 200)).save(candidates / name)
        rows.append({"file_name": name, "text": prompt, "prompt": prompt, "seed": i, "round": 1})
    (candidates / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def serve(round_dir: Path, rubric=None):
    """The app on a real threaded werkzeug server on 127.0.0.1 (as the rating-app tests run it)."""
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, create_app(round_dir, rubric), threaded=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_port}"


# ------------------------------------------------------------------------------------------------ the network
def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_the_app_listens_on_loopback_only_unless_told(tmp_path):
    round_dir = make_round(tmp_path / "round-1", ["one red star"])
    proc = subprocess.Popen([sys.executable, "-m", "style_tailoring.hitl.serve", f"round_dir={round_dir}", "port=0"],
                            cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        assert wait_for(lambda: any("Running on http://" in line for line in lines), timeout=60), "".join(lines)
        port = int(re.search(r"Running on http://[^:]+:(\d+)", "".join(lines)).group(1))
        assert _listening(port) == {"0100007F"}, "".join(lines)  # 127.0.0.1, not 0.0.0.0 or ::
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/?rater=ann").read().decode()
        assert "Rating as" in page
    finally:
        proc.kill()
        proc.wait()
    record("rating app exposure", "default bind address (127.0.0.1 only)", "refused")


def hostile_rubric(path: Path) -> Path:
    """A rubric whose every text is markup and script (the default rubric's shape, as JSON)."""
    rubric = {"title": HOSTILE, "aligned": {"question": HOSTILE, "hint": HOSTILE, "yes": HOSTILE, "no": HOSTILE},
              "style": {"question": HOSTILE, "hint": HOSTILE,
                        "grades": {str(g): f"{g} {HOSTILE}" for g in range(1, 6)}},
              "pairwise": {"question": HOSTILE, "hint": HOSTILE}}
    path.write_text(json.dumps(rubric))
    return path


@pytest.mark.slow  # a browser, as the rating app's own browser tests (CI runs them)
def test_markup_in_a_prompt_a_rater_name_or_the_rubric_shows_as_text_and_runs_nothing(tmp_path, browser):
    """Both modes: the one-at-a-time page and the grid (whose tiles, prompt list and grade titles are built by the
    page's script), before and after answers are given."""
    from selenium.webdriver.common.by import By

    prompts = [HOSTILE, HOSTILE, "plain"]  # the grid groups the first two: one prompt, two tiles
    rater = """<img src=x onerror="document.title='pwned'">"""
    httpd, url = serve(make_round(tmp_path / "round-1", prompts), hostile_rubric(tmp_path / "rubric.json"))

    def nothing_injected(images: list[str]) -> None:
        time.sleep(0.5)  # an injected <img onerror> would have fired by now
        assert browser.title == "Rate candidates: round-1"
        assert [e.get_attribute("id") or e.get_attribute("class") for e in browser.find_elements(By.TAG_NAME, "img")] \
            == images
        assert [(e.get_attribute("id"), e.get_attribute("src").rsplit("/", 1)[-1])
                for e in browser.find_elements(By.TAG_NAME, "script")] == [("state", ""), ("", "rating.js")]
        assert browser.find_element(By.ID, "who").text == rater
        assert browser.find_element(By.ID, "rubric-aligned").text == HOSTILE
        assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#rubric-grades li")] == [
            f"{g} {g} {HOSTILE}" for g in range(1, 6)]

    try:
        browser.get(f"{url}/?rater={urllib.parse.quote(rater)}")
        assert browser.find_element(By.ID, "prompt").text == HOSTILE
        nothing_injected(["image"])
        test_rating_app._press(browser, "y", "4")  # answered: the page is drawn again
        nothing_injected(["image"])
        record("hostile text in the rating app", "markup/script in a prompt and in a rater name", "survived",
               cases=2)

        browser.get(f"{url}/grid?rater={urllib.parse.quote(rater)}")
        assert browser.find_element(By.ID, "prompt").text == HOSTILE
        assert [o.text for o in browser.find_elements(By.CSS_SELECTOR, "#prompt-select option")] == [
            f"1. {HOSTILE} (1/2)", "2. plain (0/1)"]
        assert browser.find_element(By.CSS_SELECTOR, "#tile-1 .grade[data-grade='3']").get_attribute("title") == \
            f"3: 3 {HOSTILE}"
        nothing_injected(["tile-image", "tile-image"])
        browser.find_element(By.CSS_SELECTOR, "#tile-1 .tile-image").click()
        browser.find_element(By.CSS_SELECTOR, "#tile-1 .grade[data-grade='2']").click()
        test_rating_app._settled(browser)
        nothing_injected(["tile-image", "tile-image"])
        test_rating_app._keys(browser, "\ue007")  # Enter: the next prompt
        assert browser.find_element(By.ID, "prompt").text == "plain"
        nothing_injected(["tile-image"])
    finally:
        httpd.shutdown()
    record("hostile text in the rating app", "markup/script in the grid page (prompt, its list, rater name) and in "
           "the rubric (both modes)", "survived", cases=3)


def test_markup_in_the_rubric_stays_text_in_the_label_studio_configs(tmp_path):
    """The rubric goes into label_config.xml and pairwise_config.xml as attribute values: still well-formed XML of
    the same elements, each text exactly as written."""
    hostile = load_rubric(hostile_rubric(tmp_path / "rubric.json"))
    for build in (label_config, pairwise_config):
        plain, attacked = ET.fromstring(build(load_rubric())), ET.fromstring(build(hostile))
        assert [e.tag for e in attacked.iter()] == [e.tag for e in plain.iter()]
        values = [e.get("value") for e in attacked.iter("Header")] + [e.get("hint") for e in attacked.iter("Choice")]
        assert HOSTILE in values
    record("hostile text in the rating app", "markup in the rubric, in the Label Studio configs", "survived", cases=2)


# ------------------------------------------------------------------------------------ rating files from outside
OUTSIDE = ["../x.png", "/etc/passwd", "candidates/../../x.png", "..\\x.png", "C:\\x.png", "0000.png/../../x"]


@pytest.mark.parametrize("name", OUTSIDE)
def test_a_ratings_csv_naming_a_file_outside_the_round_is_refused_with_file_and_line(tmp_path, name):
    path = tmp_path / "ratings.csv"
    path.write_text(f'file_name,rater,aligned,style\n0000.png,ann,1,4\n"{name}",ann,1,4\n')
    with pytest.raises(RatingsError) as refused:
        read_csv(path, {"0000.png"})
    assert str(refused.value).startswith(f"{path}:3: {name!r} names a file outside this round"), refused.value
    record("ratings import naming a file outside the round", "ratings.csv", "rejected with message")


@pytest.mark.parametrize("data", [{"file_name": "../x.png"}, {"image": "/data/local-files/?d=../../x/0000.png"},
                                  {"image": "/data/upload/../../../home/0000.png"}, {"file_name": "/abs/0000.png"}])
def test_a_label_studio_export_naming_a_file_outside_the_round_is_refused_with_file_and_task(tmp_path, data):
    """Label Studio tasks name the image by URL; one that climbs out is refused even when its last part is a
    candidate's name."""
    rating = [{"from_name": "aligned", "value": {"choices": ["aligned"]}}, {"from_name": "style",
                                                                             "value": {"rating": 4}}]
    tasks = [{"data": {"file_name": "0000.png"}, "annotations": [{"completed_by": "ann", "result": rating}]},
             {"data": data, "annotations": [{"completed_by": "ann", "result": rating}]}]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    with pytest.raises(RatingsError, match=rf"^{re.escape(str(path))}: task 2: .* names a file outside this round"):
        read_label_studio(path, {"0000.png"})
    record("ratings import naming a file outside the round", "Label Studio JSON", "rejected with message")


@pytest.mark.parametrize("annotations", [[1], {"not": "a list"}, [{"result": ["aligned"]}]])
def test_a_label_studio_task_of_the_wrong_shape_is_named(tmp_path, annotations):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"data": {"file_name": "0000.png"}, "annotations": annotations}]))
    with pytest.raises(RatingsError, match=rf"^{re.escape(str(path))}: task 1: not a Label Studio task"):
        read_label_studio(path, {"0000.png"})
    record("malformed Label Studio export", "an annotation or result of the wrong type", "rejected with message")


def _pair(left="0000.png", right="0001.png", selected="left", **data) -> dict:
    answer = [{"from_name": "preferred", "type": "pairwise", "value": {"selected": selected}}]
    return {"id": 1, "data": {"prompt": "p", "left": left, "right": right, **data},
            "annotations": [{"completed_by": "ann", "result": answer}]}


BAD_PAIRS = [  # (the file's text, the task named (None: the file), what the message says)
    (json.dumps([_pair(), _pair(left="../x.png")]), 2, "names a file outside this round"),
    (json.dumps([_pair(), _pair(left=None, left_image="/data/local-files/?d=../../x/0000.png")]), 2,
     "names a file outside this round"),
    (json.dumps([_pair(right="/abs/0001.png")]), 1, "names a file outside this round"),
    (json.dumps([_pair(), _pair(right="nope.png")]), 2, "unknown right candidate 'nope.png'"),
    (json.dumps([_pair(right="0000.png")]), 1, "a pair of one candidate (0000.png) with itself"),
    (json.dumps([_pair(right="0002.png")]), 1, "are candidates of different prompts"),
    (json.dumps([_pair(prompt="q")]), 1, "the task's prompt 'q' is not its candidates' ('p')"),
    (json.dumps([_pair(), _pair(selected="middle")]), 2, "must select left or right, got 'middle'"),
    (json.dumps([{**_pair(), "annotations": [{"result": _pair()["annotations"][0]["result"] * 2}]}]), 1,
     "one annotation holds 2 pairwise answers"),
    (json.dumps([{**_pair(), "annotations": []}]), 1, "has no answer"),
    (json.dumps([_pair(), 7]), 2, "not a Label Studio pairwise task"),
    (json.dumps([{**_pair(), "annotations": [1]}]), 1, "not a Label Studio pairwise task"),
    (json.dumps([{**_pair(), "data": {"left": ["0000.png"], "right": "0001.png"}}]), 1, "left must be a candidate's"),
    ('[{"id": 1,\n "data": }]', None, ":2: not JSON"),
    (json.dumps({"tasks": []}), None, "expected a JSON list"),
]


@pytest.mark.parametrize("text, task, says", BAD_PAIRS, ids=[f"{i}-{says}" for i, (*_, says) in enumerate(BAD_PAIRS)])
def test_a_bad_row_in_a_pairwise_export_is_named_with_file_and_task(tmp_path, text, task, says):
    round_dir = make_round(tmp_path / "round-1", ["p", "p", "q"], images=False)
    candidates = [json.loads(line) for line in (round_dir / "candidates" / "metadata.jsonl").read_text().splitlines()]
    path = tmp_path / "pairs.json"
    path.write_text(text)
    with pytest.raises(RatingsError) as refused:
        read_pairwise(path, candidates)
    where = f"{path}: task {task}: " if task else str(path)
    assert str(refused.value).startswith(where) and says in str(refused.value), refused.value
    outside = "outside this round" in says
    record("ratings import naming a file outside the round" if outside else "malformed pairwise export",
           "pairwise Label Studio JSON" if outside else says, "rejected with message")


BAD_LINES = [  # (the file's bytes, the line named, what the message says)
    (b"file_name,rater,aligned,style\n0000.png,ann,1,4\n0001.png,ann,1,\x004\n", 3, "style must be an integer"),
    (b'file_name,rater,aligned,style\n0000.png,ann,1,4\n"0001.png,ann,1,4\n', 3, "not CSV"),
    (b'file_name,rater,aligned,style\n0000.png,ann,1,4\n"0001.png"x,ann,1,4\n', 3, "not CSV"),
    (b"file_name,rater,aligned,style\n0000.png,ann,1,4\n0001.png,\xff\xfe,1,4\n", 3, "not UTF-8"),
    (b"file_name,rater,aligned,style\n0000.png,ann,1,4\n0001.png,ann,maybe,4\n", 3, "aligned must be 0 or 1"),
    (b"file_name,rater,aligned,style\n0000.png,ann,1,4\n0001.png,ann,1,4.5\n", 3, "style must be an integer"),
    (b"file_name,rater,aligned,style\n0000.png,ann,1,4\n0001.png,ann\n", 3, "is unrated"),
    (b"file_name,rater,aligned\n0000.png,ann,1\n", 1, "the header lacks"),
]


@pytest.mark.parametrize("content, line, says", BAD_LINES, ids=[says for *_, says in BAD_LINES])
def test_a_bad_line_in_a_ratings_csv_is_named_with_file_and_line(tmp_path, content, line, says):
    path = tmp_path / "ratings.csv"
    path.write_bytes(content)
    with pytest.raises(RatingsError) as refused:
        read_csv(path, {"0000.png", "0001.png"})
    assert str(refused.value).startswith(f"{path}:{line}: ") and says in str(refused.value), refused.value
    record("malformed ratings.csv", says, "rejected with message")


# ----------------------------------------------------------------------------------------- a damaged database
@pytest.fixture(scope="module")
def rated_database(tmp_path_factory) -> bytes:
    """A ratings database of many pages (3000 ratings), its bytes as after a clean stop (WAL checkpointed)."""
    path = tmp_path_factory.mktemp("db") / "ratings.sqlite"
    RatingStore(path)
    with sqlite3.connect(path) as db:  # one transaction: the store's one-commit-per-click is slow for 3000
        db.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)",
                       [(f"{i:05d}.png", "a rater with a long name", i % 2, 1 + i % 5, 0.0) for i in range(3000)])
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def _copy(data: bytes, path: Path) -> Path:
    path.write_bytes(data)
    return path


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "garbage":
        return bytes(range(256)) * 40
    page = int.from_bytes(data[16:18], "big")  # a page in the middle overwritten: the header still looks fine
    middle = (len(data) // page // 2) * page
    return data[:middle] + b"\xa5" * page + data[middle + page:]


@pytest.mark.parametrize("kind", ["truncated", "garbage", "damaged page"])
def test_a_damaged_ratings_database_is_reported_naming_the_file_and_what_to_do(tmp_path, rated_database, kind):
    assert len(RatingStore(_copy(rated_database, tmp_path / "intact.sqlite")).rows()) == 3000  # before the damage
    round_dir = make_round(tmp_path / "round-1", ["one red star"])
    database = round_dir / "ratings.sqlite"
    database.write_bytes(_damage(kind, rated_database))
    damaged = database.read_bytes()
    with pytest.raises(UnreadableRatings) as reported:
        create_app(round_dir)
    message = str(reported.value)
    assert message.startswith(f"{database} is not a readable ratings database") and ".recover" in message, message
    command = subprocess.run([sys.executable, "-m", "style_tailoring.hitl.serve", f"round_dir={round_dir}",
                              f"export_csv={tmp_path / 'out.csv'}"], cwd=tmp_path, env=cli_env(), capture_output=True,
                             text=True, timeout=300)  # the command line: one line naming the file, no traceback
    assert command.returncode == 1 and command.stderr.endswith(f"error: {message}\n"), command.stderr
    assert "Traceback" not in command.stderr
    loop = SimpleNamespace(hitl=SimpleNamespace(on_unrated="error"))
    with pytest.raises(UnreadableRatings, match="is not a readable ratings database"):  # the HITL loop reading it
        people_rows(loop, round_dir, {"0000.png"}, files=[])
    assert database.read_bytes() == damaged  # reported, never "repaired" away: it may be the only copy
    record("damaged ratings.sqlite", kind, "reported")


def test_a_database_damaged_while_serving_answers_every_request_with_the_report(tmp_path):
    round_dir = make_round(tmp_path / "round-1", ["one red star"], images=False)
    client = create_app(round_dir).test_client()
    assert client.post("/api/rate", json={"file_name": "0000.png", "rater": "ann", "aligned": 1}).status_code == 200
    for suffix in ("", "-wal", "-shm"):
        Path(f"{round_dir / 'ratings.sqlite'}{suffix}").unlink(missing_ok=True)
    (round_dir / "ratings.sqlite").write_bytes(b"not a database at all " * 300)
    answer = client.post("/api/rate", json={"file_name": "0000.png", "rater": "ann", "style": 3})
    assert answer.status_code == 500 and "is not a readable ratings database" in answer.get_data(as_text=True)
    assert client.get("/api/progress").status_code == 500
    record("damaged ratings.sqlite", "damaged while the app serves", "reported")


# -------------------------------------------------------------------------------------- many raters at once
RATERS, PER_RATER, CHANGED = 16, 40, 10


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/api/rate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_concurrent_raters_lose_no_rating_and_each_raters_last_answer_wins(tmp_path):
    """16 raters at once on a real threaded server: each rates 40 candidates, then changes its mind on 10 (its last
    answer must win); meanwhile pairs of raters answer one shared row field by field (both answers must survive)."""
    names = [f"{i:04d}.png" for i in range(PER_RATER)]
    round_dir = make_round(tmp_path / "round-1", [f"prompt {i}" for i in range(PER_RATER)], images=False)
    httpd, url = serve(round_dir)
    start, failures = threading.Barrier(RATERS), []

    def rater(t: int) -> None:
        try:
            start.wait()
            for i, name in enumerate(names):
                _post(url, {"file_name": name, "rater": f"r{t:02d}", "aligned": (i + t) % 2, "style": 1 + i % 5})
                if i % (RATERS // 2) == t % (RATERS // 2):  # the shared row: half the threads answer each field
                    _post(url, {"file_name": name, "rater": "shared",
                                **({"aligned": 1} if t < RATERS // 2 else {"style": 5})})
            for name in names[:CHANGED]:
                _post(url, {"file_name": name, "rater": f"r{t:02d}", "style": 1 + (t % 5)})
        except Exception as err:  # noqa: BLE001 - reported below, with the thread
            failures.append(f"rater {t}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=rater, args=(t,)) for t in range(RATERS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    seconds = time.monotonic() - started
    httpd.shutdown()
    assert not failures and not any(t.is_alive() for t in threads), failures[:3]
    with sqlite3.connect(round_dir / "ratings.sqlite") as db:
        stored = {(f, r): (a, s) for f, r, a, s in db.execute("SELECT file_name, rater, aligned, style FROM ratings")}
    expected = {(name, f"r{t:02d}"): ((i + t) % 2, 1 + (t % 5) if i < CHANGED else 1 + i % 5)
                for t in range(RATERS) for i, name in enumerate(names)}
    expected.update({(name, "shared"): (1, 5) for name in names})
    assert stored == expected
    requests = RATERS * (PER_RATER + CHANGED) + 2 * PER_RATER
    print(f"{requests} ratings from {RATERS} threads in {seconds:.1f} s")
    record("concurrent raters", f"{RATERS} threads, {requests} answers, overlapping rows", "survived",
           cases=requests)
