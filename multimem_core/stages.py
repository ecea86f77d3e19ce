"""A run being written: how long each stage took (RUN/timings.json) and what it is doing now (RUN/progress.json)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from types import SimpleNamespace

from .run import RunDir


class Stages:
    """Times each stage into RUN/timings.json and reports it in RUN/progress.json.

    timings.json holds the seconds of the work behind the run's files. A rerun (which resumes) times anew each
    stage it redoes and keeps the earlier seconds of one whose work it found done (its code sets `.reused` on
    what `with stages(name) as stage` gives: decoded cache, cached features, trained models), so rerunning a
    finished run adds nothing for work it skipped. A stage timed twice by one command adds up."""

    def __init__(self, run: RunDir, enabled: bool):
        self.run, self.enabled, self.timed = run, enabled, set()

    @contextmanager
    def __call__(self, name: str):
        if self.enabled:
            self.run.write_progress(stage=name)
        stage, t = SimpleNamespace(reused=False), time.perf_counter()
        yield stage
        self.record(name, time.perf_counter() - t, reused=stage.reused)

    def record(self, name: str, seconds: float, *, reused: bool = False) -> None:
        if not self.enabled:
            return
        earlier, first = self.run.timings(), name not in self.timed
        self.timed.add(name)
        if not (first and reused and name in earlier):  # else: done, and timed, by an earlier command
            self.run.record_timing(name, seconds + (0.0 if first else earlier.get(name, 0.0)))

    def report(self, **fields):
        if self.enabled:
            self.run.write_progress(**fields)
