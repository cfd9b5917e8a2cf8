"""Result files damaged on disk: a metrics.json that is not JSON any more is kept aside, named, and written anew by
the run that is writing its results."""

from __future__ import annotations

import json
import logging

import pytest

from faultlib import record
from style_tailoring.io import update_json


@pytest.mark.parametrize("content", [b'{"steps": 8, "train/lo', b"", b"[1, 2]", b"\xff\xfe{}"])
def test_a_damaged_metrics_json_is_kept_aside_and_written_anew(content, tmp_path, caplog):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        merged = update_json(path, {"status": "completed", "steps": 8})
    assert merged == json.loads(path.read_text()) == {"status": "completed", "steps": 8}
    assert (tmp_path / "metrics.json.corrupt").read_bytes() == content
    assert str(path) in caplog.text and "metrics.json.corrupt" in caplog.text
    record("corrupt result file", "metrics.json truncated, empty, not an object or not UTF-8", "survived")
