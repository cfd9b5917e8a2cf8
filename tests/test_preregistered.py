"""The pre-registered studies' analysis (experiments/preregistered.py): the protocols' matching rule, the verdicts,
and the committed confirmatory results recomputed from the committed per-run table and per-sample scores."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
from preregistered import matched, verdict  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


def front(*points):
    return {f"c{i}": {"style_score": s, "alignment": a} for i, (s, a) in enumerate(points)}


def test_fronts_are_read_at_the_midpoint_of_their_shared_style_range():
    a = front((0.2, 0.5), (0.6, 0.3))  # alignment 0.5 - 0.5 * (style - 0.2)
    b = front((0.4, 0.2), (0.8, 0.0))
    difference, level, gap = matched(a, b, "alignment")
    assert level == pytest.approx(0.5) and gap == 0.0  # the overlap is [0.4, 0.6]
    assert difference == pytest.approx((0.5 - 0.5 * 0.3) - (0.2 - 0.5 * 0.1))


def test_a_one_point_front_is_matched_at_its_own_style_and_disjoint_fronts_at_their_nearest_points():
    a = front((0.2, 0.5), (0.6, 0.3))
    difference, level, gap = matched(a, front((0.3, 0.1)), "alignment")  # the flow protocol's rule
    assert (level, gap) == (pytest.approx(0.3), 0.0) and difference == pytest.approx(0.45 - 0.1)
    difference, level, gap = matched(a, front((0.9, 0.05), (0.7, 0.1)), "alignment")  # no shared range
    assert gap == pytest.approx(0.1) and level == pytest.approx(0.65) and difference == pytest.approx(0.3 - 0.1)


@pytest.mark.parametrize("p, estimate, sign, expected", [
    (0.01, 0.2, 1, "holds"), (0.01, -0.2, 1, "fails"), (0.01, -0.2, -1, "holds"), (0.2, 0.2, 1, "not resolved"),
    (float("nan"), 0.2, 1, "not resolved"), (0.01, float("nan"), 1, "not resolved")])
def test_verdicts_follow_the_adjusted_p_and_the_predicted_sign(p, estimate, sign, expected):
    assert verdict(p, estimate, sign) == expected


def test_the_committed_confirmatory_claims_recompute_from_the_committed_scores(tmp_path):
    """The summary run on the committed confirmatory_runs.csv and scores (no run directories) gives back every
    committed estimate and t interval exactly, and the same verdicts (the bootstrap, here 20 draws instead of
    2,000, only moves the relative claims' p, far from the threshold)."""
    import confirmatory_summary

    (tmp_path / "scores").mkdir()
    shutil.copy(RESULTS / "confirmatory_runs.csv", tmp_path)
    shutil.copy(RESULTS / "scores" / "confirmatory.jsonl.gz", tmp_path / "scores")
    confirmatory_summary.main(["--runs", str(tmp_path / "no_runs_here"), "--out", str(tmp_path),
                               "--bootstrap", "20"])
    again, committed = pd.read_csv(tmp_path / "confirmatory.csv"), pd.read_csv(RESULTS / "confirmatory.csv")
    assert list(again["claim"]) == list(committed["claim"]) == [f"H{i}" for i in range(1, 11)]
    for column in ("estimate", "ci95_low", "ci95_high", "simultaneous_low", "simultaneous_high"):
        assert np.allclose(again[column], committed[column], atol=2e-6, equal_nan=True), column
    assert list(again["verdict"]) == list(committed["verdict"])
    assert "| H1 |" in (tmp_path / "confirmatory.md").read_text()


def test_the_committed_hitl_rounds_tables_recompute_from_the_committed_records(tmp_path):
    """The HITL rounds summary run on the committed records (every run's metrics, every round's curation report and
    per-candidate ratings with the audit's answers; no run directories) gives back the committed tables: every
    model's numbers, every round's yields and agreement, every question's paired interval over the three seeds."""
    import hitl_rounds_summary

    hitl_rounds_summary.main(["--out", str(tmp_path)])
    for name in ("hitl_rounds_runs.csv", "hitl_rounds_rounds.csv", "hitl_rounds.csv"):
        again, committed = pd.read_csv(tmp_path / name), pd.read_csv(RESULTS / name)
        pd.testing.assert_frame_equal(again, committed, check_exact=False, atol=1e-9, obj=name)
    questions = pd.read_csv(RESULTS / "hitl_rounds.csv")
    assert set(questions["question"]) == {f"Q{i}" for i in range(1, 7)} and set(questions["n"]) == {3}
