"""The one job runner: the HITL loop, the recipe and every study driver start their processes through it.

A job is a command run as a process of its own (the same command a cluster job would run), its run directory, the
jobs it needs and what marks it done. The runner

- skips a job that is already done (by default: its run directory's metrics.json says `completed`), so a study, a
  loop or a recipe run again resumes where it stopped;
- passes `ckpt_path=last` to a resumable (training) job only when its run directory holds a checkpoint;
- gives each job its log file and its environment;
- runs up to `workers` jobs at once whose needs are done — a count that can change while it runs (`workers_file`:
  a file holding the number, re-read between jobs; 0 pauses) — and passes a failure on to every job that needs it
  (those are not run and say which job failed);
- prints the plan instead of running it (`dry_run`);
- never leaves a job running without it: each job is its own process group, killed with the runner's SIGTERM or
  Ctrl-C; a runner killed outright (SIGKILL) takes its jobs with it where Linux can (the kernel's parent-death
  signal), and in any case the next runner over the same jobs reaps what a dead runner left (each live job's
  process group is recorded beside its log).
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

COMPLETED, ALREADY_COMPLETE, FAILED, NOT_RUN = "completed", "already complete", "failed", "not run"
POLL_SECONDS = 0.2
# The `status` a run writes in its metrics.json, in one place for the writers (training, evaluation) and the readers
# (run_done, collect). A training run is completed only once its evaluation (when enabled) is written: one killed
# while evaluating says RUN_EVALUATING, so a job runner, a HITL loop or the recipe runs it again (it resumes from its
# last checkpoint, trains nothing more and evaluates) instead of taking a run without numbers as done.
RUN_COMPLETED, RUN_EVALUATING, RUN_EVALUATION_FAILED = COMPLETED, "trained, evaluating", "trained, evaluation failed"
RUN_TRAINED = (RUN_COMPLETED, RUN_EVALUATION_FAILED, RUN_EVALUATING)  # its model exists


def run_done(run_dir) -> bool:
    """A run directory's metrics.json says the run completed: the usual mark of a finished training or
    evaluation run."""
    metrics = Path(run_dir) / "metrics.json"
    try:
        return json.loads(metrics.read_text()).get("status") == RUN_COMPLETED
    except (OSError, ValueError, AttributeError):
        return False


def resume_args(run_dir) -> list[str]:
    """A training run killed mid-way goes on from its newest intact checkpoint (`ckpt_path=last` skips a damaged
    one: style_tailoring.training.checkpoints); a run with none starts afresh."""
    return ["ckpt_path=last"] if any((Path(run_dir) / "checkpoints").glob("*.ckpt")) else []


def python_module(module: str, *args: str) -> list[str]:
    """The command of `python -m module args...` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass
class Job:
    name: str
    command: list[str]
    run_dir: Optional[Path] = None
    needs: tuple[str, ...] = ()
    # What marks the job done; default: run_done(run_dir). A job with neither always runs, and succeeds by its exit
    # status alone.
    done: Optional[Callable[[], bool]] = None
    # A training run: `ckpt_path=last` is appended when its run directory holds a checkpoint.
    resumable: bool = False
    env: dict = field(default_factory=dict)
    log: Optional[Path] = None  # default: run_dir/job.log

    def is_done(self) -> bool:
        if self.done is not None:
            return bool(self.done())
        return self.run_dir is not None and run_done(self.run_dir)

    def argv(self) -> list[str]:
        return [*self.command, *(resume_args(self.run_dir) if self.resumable and self.run_dir else [])]

    @property
    def log_path(self) -> Optional[Path]:
        return self.log or (Path(self.run_dir) / "job.log" if self.run_dir else None)


@dataclass
class Result:
    name: str
    status: str  # COMPLETED, ALREADY_COMPLETE, FAILED or NOT_RUN
    seconds: float = 0.0
    code: Optional[int] = None
    log: Optional[str] = None
    reason: str = ""


class JobFailed(RuntimeError):
    """A job the caller needed failed; its log says why."""


def _set_parent_death_signal() -> None:  # runs in the child, before exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class JobRunner:
    def __init__(self, jobs: list[Job], workers: int = 1, *, workers_file: Optional[Path] = None,
                 env: Optional[dict] = None, on_result: Optional[Callable[[Job, Result], None]] = None,
                 say: Callable[[str], None] = lambda line: print(line, flush=True)):
        names = [job.name for job in jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"job names must be unique: {duplicates}")
        unknown = sorted({need for job in jobs for need in job.needs if need not in names})
        if unknown:
            raise ValueError(f"jobs need unknown jobs {unknown}")
        _check_acyclic(jobs)
        self.jobs, self.workers, self.workers_file = list(jobs), workers, workers_file
        self.env, self.on_result, self.say = dict(env or {}), on_result, say

    # ------------------------------------------------------------------------------------------------- the plan
    def plan(self) -> list[str]:
        """The jobs in the order they may start, each with what it needs and whether it is done."""
        lines = []
        for job in self.jobs:
            state = "done" if job.is_done() else "to run"
            needs = f", after {', '.join(job.needs)}" if job.needs else ""
            lines.append(f"# {job.name} ({state}{needs})")
            lines.append(" ".join(shlex.quote(str(c)) for c in job.argv()))
        return lines

    def current_workers(self) -> int:
        if self.workers_file is not None:
            try:
                return max(int(Path(self.workers_file).read_text().strip()), 0)
            except (OSError, ValueError):
                pass
        return self.workers

    # ------------------------------------------------------------------------------------------------ running
    def run(self, dry_run: bool = False) -> dict[str, Result]:
        if dry_run:
            for line in self.plan():
                self.say(line)
            return {}
        results: dict[str, Result] = {}
        queue = []
        for job in self.jobs:
            reap(job)
            if job.is_done():
                results[job.name] = Result(job.name, ALREADY_COMPLETE)
                if self.on_result is not None:  # e.g. a study's record of a run finished under an earlier runner
                    self.on_result(job, results[job.name])
            else:
                queue.append(job)
        running: dict[str, tuple[Job, subprocess.Popen, float, object]] = {}
        previous = self._install_signal_handlers(running)
        try:
            while queue or running:
                for job in list(queue):  # a failure upstream: not run
                    failed = [n for n in job.needs if n in results and results[n].status in (FAILED, NOT_RUN)]
                    if failed:
                        queue.remove(job)
                        results[job.name] = self._finish(job, Result(
                            job.name, NOT_RUN, reason=f"needs {', '.join(failed)}, which failed"))
                ready = [j for j in queue if all(n in results and results[n].status in (COMPLETED, ALREADY_COMPLETE)
                                                 for n in j.needs)]
                for job in ready[: max(self.current_workers() - len(running), 0)]:
                    queue.remove(job)
                    running[job.name] = (job, *self._start(job))
                for name, (job, proc, started, log) in list(running.items()):
                    if proc.poll() is None:
                        continue
                    del running[name]
                    log.close()
                    _forget(job)
                    results[name] = self._finish(job, self._result(job, proc.returncode, started))
                if running or queue:  # waiting on a job, or paused (0 workers)
                    time.sleep(POLL_SECONDS)
        finally:
            self._restore_signal_handlers(previous)
            for job, proc, _, log in running.values():  # an exception here (or Ctrl-C): take the jobs with us
                _kill_group(proc.pid)
                proc.wait()
                log.close()
                _forget(job)
        return results

    @staticmethod
    def _result(job: Job, code: int, started: float) -> Result:
        """Success: exit status 0, and the job's done mark where it has one."""
        marked = job.done is not None or job.run_dir is not None
        reason = f"exit {code}" if code else ("exited 0 but is not done" if marked and not job.is_done() else "")
        return Result(job.name, FAILED if reason else COMPLETED, round(time.time() - started, 1), code,
                      _shown(job.log_path), reason)

    def _start(self, job: Job):
        path = job.log_path
        if job.run_dir is not None:
            Path(job.run_dir).mkdir(parents=True, exist_ok=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        log = open(path, "a") if path is not None else open(os.devnull, "w")
        argv = job.argv()
        env = {**os.environ, **self.env, **job.env}
        # The child starts its own session before exec (a new process group the runner can kill whole) and, on
        # Linux, asks for SIGKILL when the runner dies. That signal follows the thread that started the child, so
        # jobs are only ever started from the runner's own loop.
        proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_set_parent_death_signal)
        _remember(job, proc, argv)
        self.say(f"started {job.name}: {' '.join(shlex.quote(str(a)) for a in argv[1:])}")
        return proc, time.time(), log

    def _finish(self, job: Job, result: Result) -> Result:
        if result.status == COMPLETED:
            self.say(f"done {job.name} in {result.seconds:.0f} s")
        elif result.status == FAILED:
            self.say(f"FAILED {job.name} ({result.reason}); its log: {result.log}")
        else:
            self.say(f"not run: {job.name}: {result.reason}")
        if self.on_result is not None:
            self.on_result(job, result)
        return result

    def _install_signal_handlers(self, running: dict):
        if threading.current_thread() is not threading.main_thread():
            return None

        def stop(signum, frame):
            for job, proc, _, _ in list(running.values()):
                _kill_group(proc.pid)
            raise SystemExit(128 + signum)

        return {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for sig, handler in (previous or {}).items():
            signal.signal(sig, handler)


def with_needs(chosen: list[Job], every: list[Job]) -> list[Job]:
    """`chosen` and, transitively, every job of `every` they need (in `every`'s order): a study run for one of its
    phases also runs what that phase starts from, if that is not complete yet."""
    by_name = {job.name: job for job in every}
    wanted, stack = set(), [job.name for job in chosen]
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(by_name[name].needs)
    return [job for job in every if job.name in wanted]


def run_jobs(jobs: list[Job], workers: int = 1, **kwargs) -> dict[str, Result]:
    """Run `jobs` (see JobRunner); raise JobFailed naming the first job that failed and its log."""
    results = JobRunner(jobs, workers, **kwargs).run()
    for result in results.values():
        if result.status == FAILED:
            raise JobFailed(f"{result.name} failed ({result.reason}); its log: {result.log}")
    return results


def _check_acyclic(jobs: list[Job]) -> None:
    needs = {job.name: job.needs for job in jobs}
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if name in path:
            raise ValueError(f"jobs need each other in a circle: {' -> '.join((*path, name))}")
        for need in needs[name]:
            visit(need, (*path, name))
        state[name] = "done"

    for name in needs:
        visit(name, ())


# ------------------------------------------------------------------------------- process groups of live jobs
def _pid_file(job: Job) -> Optional[Path]:
    path = job.log_path
    return path.with_name(path.name + ".pid") if path is not None else None


def _remember(job: Job, proc: subprocess.Popen, argv: list) -> None:
    path = _pid_file(job)
    if path is not None:
        path.write_text(json.dumps({"pgid": proc.pid, "runner": os.getpid(), "argv": [str(a) for a in argv]}))


def _forget(job: Job) -> None:
    path = _pid_file(job)
    if path is not None:
        path.unlink(missing_ok=True)


def reap(job: Job) -> bool:
    """Kill what a dead runner left of `job` (its recorded process group, when its runner is gone and the group is
    still alive running the same command); True when something was killed."""
    path = _pid_file(job)
    if path is None or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
        pgid, runner = int(record["pgid"]), int(record["runner"])
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return False
    killed = False
    if not _alive(runner) and _alive(pgid) and _command_of(pgid) == record.get("argv"):
        _kill_group(pgid)
        killed = True
    path.unlink(missing_ok=True)
    return killed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")  # a zombie is dead


def _command_of(pid: int) -> Optional[list[str]]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _shown(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
