"""The one job runner (style_tailoring.runtime.jobs): order, skips, resumes, failures, workers, and no orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from style_tailoring.runtime.jobs import (
    ALREADY_COMPLETE,
    COMPLETED,
    FAILED,
    NOT_RUN,
    Job,
    JobFailed,
    JobRunner,
    reap,
    run_jobs,
)

PY = sys.executable


def writes_metrics(status: str = "completed", extra: str = "") -> list[str]:
    """A job that appends its argv to calls.txt in its run directory and writes metrics.json."""
    return [PY, "-c", textwrap.dedent(f"""
        import json, os, sys
        with open("calls.txt", "a") as f:
            f.write(" ".join(sys.argv[1:]) + " " + os.environ.get("JOB_FLAG", "") + "\\n")
        {extra}
        json.dump({{"status": "{status}"}}, open("metrics.json", "w"))
        """)]


def job(tmp_path: Path, name: str, **kwargs) -> Job:
    run_dir = tmp_path / name
    run_dir.mkdir(parents=True, exist_ok=True)
    command = kwargs.pop("command", None) or writes_metrics()
    return Job(name, [*command[:2], f"import os; os.chdir({str(run_dir)!r}); " + command[2], *command[3:]],
               run_dir, **kwargs)


def test_jobs_run_after_what_they_need_and_complete_ones_are_skipped(tmp_path):
    lines = []
    jobs = [job(tmp_path, "b", needs=("a",)), job(tmp_path, "a"), job(tmp_path, "c", needs=("a", "b"))]
    results = JobRunner(jobs, workers=2, say=lines.append).run()
    assert {r.status for r in results.values()} == {COMPLETED}
    started = [line.split()[1].rstrip(":") for line in lines if line.startswith("started")]
    assert started == ["a", "b", "c"]
    assert all((tmp_path / n / "job.log").is_file() and not (tmp_path / n / "job.log.pid").exists() for n in "abc")
    again = JobRunner(jobs, workers=2, say=lines.append).run()
    assert {r.status for r in again.values()} == {ALREADY_COMPLETE}
    assert (tmp_path / "a" / "calls.txt").read_text().count("\n") == 1  # not run twice


def test_a_failure_is_passed_on_to_the_jobs_that_need_it(tmp_path):
    bad = job(tmp_path, "bad", command=[PY, "-c", "raise SystemExit(3)"])
    lying = job(tmp_path, "lying", command=[PY, "-c", "pass"])  # exits 0 but writes no completed metrics.json
    results = JobRunner([bad, job(tmp_path, "after", needs=("bad",)), job(tmp_path, "later", needs=("after",)),
                         lying, job(tmp_path, "free")], say=lambda line: None).run()
    assert results["bad"].status == FAILED and results["bad"].code == 3 and results["bad"].reason == "exit 3"
    assert results["after"].status == NOT_RUN and "needs bad" in results["after"].reason
    assert results["later"].status == NOT_RUN and results["free"].status == COMPLETED
    assert results["lying"].status == FAILED and results["lying"].reason == "exited 0 but is not done"
    with pytest.raises(JobFailed, match=r"bad failed \(exit 3\); its log: .*bad/job.log"):
        run_jobs([job(tmp_path, "bad", command=[PY, "-c", "raise SystemExit(3)"])], say=lambda line: None)
    with pytest.raises(ValueError, match="circle"):
        JobRunner([Job("x", [PY], needs=("y",)), Job("y", [PY], needs=("x",))])
    with pytest.raises(ValueError, match="unknown jobs"):
        JobRunner([Job("x", [PY], needs=("z",))])


def test_a_resumable_job_gets_ckpt_path_last_only_with_a_checkpoint_and_its_own_environment(tmp_path):
    fresh, resumed = job(tmp_path, "fresh", resumable=True), job(tmp_path, "resumed", resumable=True,
                                                                 env={"JOB_FLAG": "mine"})
    (resumed.run_dir / "checkpoints").mkdir()
    (resumed.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    JobRunner([fresh, resumed], env={"JOB_FLAG": "shared"}, say=lambda line: None).run()
    assert (fresh.run_dir / "calls.txt").read_text().split() == ["shared"]
    assert (resumed.run_dir / "calls.txt").read_text().split() == ["ckpt_path=last", "mine"]


def test_the_worker_count_can_change_while_it_runs_and_a_dry_run_only_prints(tmp_path):
    workers = tmp_path / "workers"
    workers.write_text("0")  # paused
    slow = 'import time; time.sleep(0.5); open("metrics.json", "w").write(\'{"status": "completed"}\')'
    jobs = [job(tmp_path, f"j{i}", command=[PY, "-c", slow]) for i in range(4)]
    printed = []
    JobRunner(jobs, workers=1, workers_file=workers, say=printed.append).run(dry_run=True)
    assert printed[0] == "# j0 (to run)" and len(printed) == 8 and not any(tmp_path.glob("j*/job.log"))
    lines = []
    import threading

    runner = threading.Thread(target=lambda: JobRunner(jobs, workers=1, workers_file=workers,
                                                       say=lines.append).run())
    started = time.time()
    runner.start()
    time.sleep(1.0)
    assert not lines  # nothing starts while paused
    workers.write_text("4")
    runner.join(30)
    assert len([line for line in lines if line.startswith("done")]) == 4
    assert time.time() - started - 1.0 < 4 * 0.5 + 1.5  # in parallel once four workers were allowed


RUNNER = """
import sys
from pathlib import Path
from style_tailoring.runtime.jobs import Job, JobRunner
out = Path(sys.argv[1])
pid_file = str(out / "child.pid")
child = [sys.executable, "-c", "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(600)" % pid_file]
JobRunner([Job("sleeper", child, log=out / "sleeper.log")]).run()
"""


def _wait_for(path: Path, seconds: float = 20) -> str:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared")


def _dead_within(pid: int, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_runner_killed_on_its_own_takes_its_jobs_with_it(tmp_path, how):
    runner = subprocess.Popen([PY, "-c", RUNNER, str(tmp_path)])
    child = int(_wait_for(tmp_path / "child.pid"))
    os.kill(runner.pid, how)
    runner.wait(30)
    assert _dead_within(child, 10), f"the job (pid {child}) outlived its runner ({how.name})"


def test_the_next_runner_reaps_what_a_dead_runner_left(tmp_path):
    """Where no parent-death signal fired (another OS, a runner that died before it could ask): the job's process
    group is recorded beside its log, and the next runner kills it before running the job again."""
    log = tmp_path / "left.log"
    argv = [PY, "-c", "import time; time.sleep(600)"]
    orphan = subprocess.Popen(argv, start_new_session=True)
    dead_runner = subprocess.Popen([PY, "-c", "pass"])
    dead_runner.wait()
    log.with_name("left.log.pid").write_text(json.dumps({"pgid": orphan.pid, "runner": dead_runner.pid,
                                                          "argv": argv}))
    assert reap(Job("left", argv, log=log))
    assert _dead_within(orphan.pid, 10) and not log.with_name("left.log.pid").exists()
    orphan.wait()
    # A recorded group that now runs something else (its pid reused) is left alone.
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(600)", "other"], start_new_session=True)
    log.with_name("left.log.pid").write_text(json.dumps({"pgid": other.pid, "runner": dead_runner.pid,
                                                          "argv": argv}))
    assert not reap(Job("left", argv, log=log)) and other.poll() is None
    other.kill()
    other.wait()


def test_a_study_goes_on_from_its_committed_records_and_a_rerun_must_reproduce_them(tmp_path):
    """experiments/records.py: a completed run leaves a record (metrics.json, gzipped scores); a recorded job is done
    in a fresh checkout without its run directory; a job whose weights others need runs again until they are
    recorded, and the run again must give the recorded numbers."""
    import gzip
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from records import Records

    def study(value: float) -> tuple[Records, list[Job]]:
        runs, records = tmp_path / "runs", Records("study", tmp_path / "runs", root=tmp_path / "records")
        body = ('os.makedirs("samples/final", exist_ok=True); open("samples/final/judge_scores.jsonl", "w")'
                '.write("{\\"prompt\\": \\"p\\"}\\n"); '
                f'json.dump({{"status": "completed", "eval/alignment": {value}, "provenance/commit": "x"}}, '
                'open("metrics.json", "w")); sys.exit(0)')
        command = writes_metrics(extra=body)
        base = job(runs, "base", command=command, done=lambda: records.done_unless_needed("base", ["ft"]))
        ft = job(runs, "ft", command=command, needs=("base",), done=lambda: records.done("ft"))
        return records, [base, ft]

    records, jobs = study(0.5)
    results = JobRunner(jobs, on_result=records.record, say=lambda line: None).run()
    assert {r.status for r in results.values()} == {COMPLETED}
    record = tmp_path / "records" / "study" / "ft"
    assert json.loads((record / "metrics.json").read_text())["eval/alignment"] == 0.5
    scores = record / "samples" / "final" / "judge_scores.jsonl.gz"
    assert gzip.decompress(scores.read_bytes()) == b'{"prompt": "p"}\n'
    shutil.rmtree(tmp_path / "runs")  # a fresh clone: only the records are left
    records, jobs = study(0.5)
    assert {r.status for r in JobRunner(jobs, say=lambda line: None).run().values()} == {ALREADY_COMPLETE}
    # ft's record is gone: base runs again for it, reproducing its record's numbers, then ft runs
    shutil.rmtree(record)
    results = JobRunner(jobs, on_result=records.record, say=lambda line: None).run()
    assert [results[n].status for n in ("base", "ft")] == [COMPLETED, COMPLETED]
    shutil.rmtree(tmp_path / "runs")
    shutil.rmtree(record)
    records, jobs = study(0.25)  # the run again no longer gives the recorded numbers: the study stops
    with pytest.raises(SystemExit, match="base: the run again does not reproduce its record .eval/alignment"):
        JobRunner(jobs, on_result=records.record, say=lambda line: None).run()


def test_a_run_complete_before_the_runner_started_is_recorded_too(tmp_path):
    """A study resumed by a new runner: a run that finished under an earlier runner (one without a recorder, or
    killed before it wrote the record) is passed to on_result as already complete, and recorded."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from records import Records

    records = Records("study", tmp_path / "runs", root=tmp_path / "records")
    finished = tmp_path / "runs" / "old"
    finished.mkdir(parents=True)
    (finished / "metrics.json").write_text(json.dumps({"status": "completed", "eval/alignment": 0.5}))
    seen = []
    results = JobRunner([job(tmp_path / "runs", "old", command=writes_metrics())],
                        on_result=lambda j, r: (seen.append(r.status), records.record(j, r)),
                        say=lambda line: None).run()
    assert results["old"].status == ALREADY_COMPLETE and seen == [ALREADY_COMPLETE]
    assert json.loads((tmp_path / "records" / "study" / "old" / "metrics.json").read_text())["eval/alignment"] == 0.5


def test_an_animation_evaluation_is_recorded_with_its_clip_scores_and_must_reproduce_all_but_its_time(tmp_path):
    """An animation evaluation's record: its metrics.json and its scores.jsonl (per clip), gzipped; a repeat must
    give the same clip and render scores, while its seconds per clip may differ (the machine's load)."""
    import gzip

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from records import Records, compared

    def evaluation(seconds: float, fidelity: float) -> tuple[Records, list[Job]]:
        records = Records("anim", tmp_path / "runs", root=tmp_path / "records", scores=Path("scores.jsonl"))
        body = ('open("scores.jsonl", "w").write("{\\"frame_fidelity\\": 12.0}\\n"); '
                f'json.dump({{"status": "completed", "animation/frame_fidelity": {fidelity}, '
                f'"animation/seconds_per_clip": {seconds}, "renders/frame_fidelity": 78.1}}, open("metrics.json", '
                '"w")); sys.exit(0)')
        return records, [job(tmp_path / "runs", "eval", command=writes_metrics(extra=body))]

    records, jobs = evaluation(0.9, 12.0)
    JobRunner(jobs, on_result=records.record, say=lambda line: None).run()
    record = tmp_path / "records" / "anim" / "eval"
    assert gzip.decompress((record / "scores.jsonl.gz").read_bytes()) == b'{"frame_fidelity": 12.0}\n'
    assert compared(json.loads((record / "metrics.json").read_text())) == {
        "animation/frame_fidelity": 12.0, "renders/frame_fidelity": 78.1}
    for name in ("metrics.json", "scores.jsonl"):
        (tmp_path / "runs" / "eval" / name).unlink()
    records, jobs = evaluation(1.7, 12.0)  # slower, the same clips: it reproduces its record
    assert JobRunner(jobs, on_result=records.record, say=lambda line: None).run()["eval"].status == COMPLETED
    (tmp_path / "runs" / "eval" / "metrics.json").unlink()
    records, jobs = evaluation(0.9, 11.0)
    with pytest.raises(SystemExit, match="eval: the run again does not reproduce its record .animation/frame"):
        JobRunner(jobs, on_result=records.record, say=lambda line: None).run()
