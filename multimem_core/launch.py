"""Runs started from the dashboard: `multimem score` as a background process whose state lives in files.

    RUN/job.json      what was started: the command, its process (group) id, when; `cancelled` once cancelled
    RUN/log.txt       everything the process printed
    RUN/exit_code     its exit status, written by the wrapper shell when it ends
    RUN/progress.json what the engine is doing (stage, model, epoch, samples/s, time left), see stages.Stages

Nothing is kept in the browser session: a reload, a second tab or a restarted dashboard reads the same
files and finds the job where it is. Inputs must lie under the data root (`multimem app --data-root`,
$MULTIMEM_DATA_ROOT, else the current directory); the dashboard never starts a run on a path outside it.
No Streamlit import here: the page is a thin view over these functions.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .data.paths import OutsideRootError
from .data.paths import resolve_under as resolve_under_root
from .config import ScoreConfig
from .atomic import atomic_write_json
from .run import RunDir
from .runlock import describe_holder

ENV_DATA_ROOT = "MULTIMEM_DATA_ROOT"
MANIFEST_SUFFIXES = (".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".pq")
SKIP_DIRS = {"cache", "embeddings", "models", "diagnostics", "mitigation", "exports", "node_modules", "__pycache__"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
# The wrapper records the command's exit status in a file, so that a dashboard that did not start the
# process (reloaded, restarted) still knows how it ended.
WRAPPER = '"$@"; status=$?; echo $status > "$MULTIMEM_EXIT_FILE"; exit $status'


class LaunchError(ValueError):
    """The run cannot start; the message says why and what to change."""


def data_root() -> Path:
    value = os.environ.get(ENV_DATA_ROOT, "").strip()
    return Path(value or os.getcwd()).expanduser().resolve()


def resolve_under(root: str | Path, text: str | Path) -> Path:
    """`text` (absolute, or relative to `root`) as a resolved path that exists and lies inside `root`."""
    root = Path(root).resolve()
    if not str(text).strip():
        raise LaunchError("no input given: pick a manifest or a shards folder under the data root.")
    try:
        path = resolve_under_root(root, text)  # the engine's one rule: '..', absolute paths, symlinks
    except OutsideRootError as e:
        raise LaunchError(f"{text} lies outside the data root {root} ({e.reason.removesuffix(': not opened')}). "
                          "The dashboard only starts runs on data under it; restart it with "
                          "`multimem app … --data-root DIR` to allow another folder.") from e
    if not path.exists():
        raise LaunchError(f"{path} does not exist.")
    return path


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "samples.parquet").is_file()


def find_inputs(root: str | Path, *, max_depth: int = 3, limit: int = 200, budget: int = 20_000) -> list[Path]:
    """Manifests, folders of .tar shards and Hugging Face `save_to_disk` folders under `root` (not inside run
    directories), nearest first.

    Bounded (depth, results and directory entries read) so that a data root with millions of files costs
    the same fraction of a second as a small one."""
    root = Path(root).resolve()
    found: list[Path] = []
    level = [root]
    seen = 0
    for _ in range(max_depth + 1):
        nxt = []
        for folder in level:
            if _is_run(folder):
                continue
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            seen += len(entries)
            tars = False
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    if e.name not in SKIP_DIRS:
                        nxt.append(Path(e.path))
                elif e.name.lower().endswith(MANIFEST_SUFFIXES):
                    found.append(Path(e.path))
                elif e.name.endswith(".tar") or e.name == "state.json":  # shards, or a save_to_disk folder
                    tars = True
            if tars:
                found.append(folder)
            if len(found) >= limit or seen >= budget:
                return found[:limit]
        level = nxt
    return found[:limit]


def split_inputs(paths: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """find_inputs' paths as (those a run can start on, {file: why it cannot}). A CSV or TSV whose header line
    lacks the columns a manifest needs, as the New-run page reads it (the standard names), is set apart: only its
    header is read (data.manifest.check_header). Folders, and formats without a header line, are kept."""
    from .data.manifest import ManifestError, check_header

    usable, refused = [], {}
    for p in paths:
        try:
            if not p.is_dir():
                check_header(p)
        except ManifestError as e:
            refused[p] = str(e)
        else:
            usable.append(p)
    return usable, refused


def runs_folder(app_root: str | Path | None, *, root: str | Path | None = None) -> Path:
    """Where the New-run page writes runs: the folder of runs the dashboard shows (so that the run picker
    finds them), else <data root>/runs when the dashboard shows a single run."""
    if app_root is not None:
        p = Path(app_root).expanduser().resolve()
        if p.is_dir() and not _is_run(p):
            return p
    return Path(root or data_root()).resolve() / "runs"


REQUEST = "request.json"  # the ScoreConfig a job runs, as `multimem score --config` reads it


def request(input: str | Path, out: str | Path, values: dict) -> ScoreConfig:
    """What the New-run page asks for: the engine's defaults with the options in `values` (dest -> value, as
    the config fields declare them), checked by the config itself."""
    try:
        return ScoreConfig(input=str(input), out=str(out)).with_options(values)
    except ValueError as e:
        raise LaunchError(str(e)) from e


def check_run_name(name: str) -> str:
    """`name` if it is a run's folder name (NAME_RE: no path, nothing hidden); LaunchError otherwise."""
    if not NAME_RE.match(name):
        raise LaunchError(f"run name {name!r}: use letters, digits, '.', '_' or '-' (up to 80), starting with a "
                          "letter or digit.")
    return name


def start(cfg: ScoreConfig, *, root: str | Path | None = None) -> Path:
    """Check the job, write RUN/request.json, then start `multimem score --config` on it in its own process
    group, logging to RUN/log.txt."""
    root = Path(root or data_root()).resolve()
    given = Path(cfg.out).expanduser()
    # checked as given: "runs/../../x" resolves to a folder named "x" anywhere on the disk
    check_run_name(given.name if ".." not in given.parts else "..")
    out = given.resolve()
    cfg = replace(cfg, input=str(resolve_under(root, cfg.input)), out=str(out), progress=False)
    holder = describe_holder(out)
    if holder is not None:
        raise LaunchError(f"{out} is being written by {holder}: choose another run name, or wait for it.")
    if out.exists() and any(out.iterdir()):
        raise LaunchError(f"{out} exists already: choose another run name.")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / REQUEST, cfg.to_dict())
    cmd = [sys.executable, "-m", "multimem_core.cli", "score", "--config", str(out / REQUEST)]
    repo = Path(__file__).resolve().parent.parent  # a checkout that is not pip-installed still imports
    env = {**os.environ, "MULTIMEM_EXIT_FILE": str(out / "exit_code"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)}
    with open(out / "log.txt", "ab") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(["/bin/sh", "-c", WRAPPER, "multimem-job", *cmd], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(out), env=env,
                                start_new_session=True)  # its own group: cancel ends it and its children
    atomic_write_json(out / "job.json", {"pid": proc.pid, "pgid": proc.pid, "command": cmd, "started": time.time(),
                                         "options": cfg.to_dict(), "data_root": str(root)})
    return out


# --- the state of a job, from its files ----------------------------------------------------------------------

def _reap(pid: int) -> None:
    try:  # our own child that ended: collect it so it does not linger as a zombie
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def process_alive(pid: int, marker: str) -> bool:
    """Whether `pid` still runs and is the job's (its command line holds `marker`: a reused pid is not)."""
    _reap(pid)
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z" and marker.encode() in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def log_tail(run: str | Path, *, lines: int = 40, max_bytes: int = 64_000) -> str:
    path = Path(run) / "log.txt"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # tqdm redraws a line with carriage returns: keep the last state of each line
    rows = [r.rsplit("\r", 1)[-1] for r in text.splitlines()]
    return "\n".join(r for r in rows[-lines:])


@dataclass
class JobState:
    path: Path
    state: str                       # starting | running | complete | failed | cancelled
    job: dict
    progress: dict | None
    exit_code: int | None
    error: str = ""                  # failed: the last lines of the log

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running")

    @property
    def started(self) -> float:
        return float(self.job.get("started", 0))


def job_state(run: str | Path) -> JobState | None:
    """The job in `run` as its files describe it now, or None if no job was started there."""
    path = Path(run)
    job = _read_json(path / "job.json")
    if job is None:
        return None
    progress = _read_json(path / "progress.json")
    if progress and float(progress.get("updated", 0)) < float(job.get("started", 0)):
        progress = None  # left over from an earlier attempt in the same folder
    exit_text = (path / "exit_code").read_text().strip() if (path / "exit_code").is_file() else ""
    exit_code = int(exit_text) if exit_text.lstrip("-").isdigit() else None
    config = _read_json(path / "config.json") or {}
    complete = config.get("status") == "complete" and RunDir(path).is_complete()
    if exit_code is None and process_alive(int(job["pid"]), str(path)):
        state = "running" if progress else "starting"
    elif job.get("cancelled"):
        state = "cancelled"
    elif complete and exit_code in (0, None):
        state = "complete"
    else:
        state = "failed"
    error = ""
    if state == "failed":
        error = log_tail(path) or ("the process ended without output" if exit_code is not None else
                                   "the process is gone without an exit status (killed, or the machine restarted)")
    return JobState(path, state, job, progress, exit_code, error)


def list_jobs(folder: str | Path) -> list[JobState]:
    """Jobs started in `folder` (one run directory each), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    states = [job_state(p) for p in folder.iterdir() if (p / "job.json").is_file()]
    return sorted((s for s in states if s is not None), key=lambda s: s.started, reverse=True)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (zombies, which only wait for their parent to collect them, are not).

    Reads /proc (Linux); elsewhere, a signal-0 probe of the group stands for "some member is alive".
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    out = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def cancel(run: str | Path, *, grace_s: float = 5.0) -> bool:
    """End the job's whole process group: SIGTERM, then SIGKILL to whatever is still alive after `grace_s`.

    Returns once no member of the group is left (training workers included), or False if it had ended."""
    path = Path(run)
    job = _read_json(path / "job.json")
    if job is None or not process_alive(int(job["pid"]), str(path)):
        return False
    atomic_write_json(path / "job.json", {**job, "cancelled": True, "cancelled_at": time.time()})
    pgid = int(job["pgid"])
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for sig, wait_s in ((signal.SIGKILL, grace_s), (None, 5.0)):
        end = time.time() + wait_s
        while time.time() < end and group_members(pgid):
            time.sleep(0.1)
        if sig is None or not group_members(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
    return True


# --- progress in words ---------------------------------------------------------------------------------------

STAGE_WORDS = {"read": "reading the input", "decode": "decoding media", "prepare": "preparing the towers",
               "train": "training", "embed": "embedding every sample", "score": "scoring",
               "projection": "projecting (UMAP)", "done": "done"}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(max(0.0, float(seconds))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def describe(progress: dict | None) -> dict:
    """stage (words), detail (one line), fraction of the stage done (or None), time left in seconds (or None)."""
    if not progress:
        return {"stage": "starting", "detail": "loading the engine", "fraction": None, "eta_s": None}
    stage = str(progress.get("stage", "?"))
    out = {"stage": STAGE_WORDS.get(stage, stage), "detail": "", "fraction": None, "eta_s": None}
    if stage == "train" and "epoch" in progress:
        k, total = int(progress.get("model_index", 1)), int(progress.get("models_total", 1))
        epoch, epochs = int(progress["epoch"]), int(progress.get("epochs", 1))
        out["detail"] = (f"model {k} of {total} ({progress.get('model', '?')}), epoch {epoch} of {epochs}, "
                         f"{float(progress.get('samples_per_s', 0)):.0f} samples/s")
        out["fraction"] = min(1.0, ((k - 1) * epochs + epoch) / max(1, total * epochs))
        out["eta_s"] = progress.get("eta_train_s", progress.get("eta_s"))
    elif stage == "embed" and "chunk" in progress:
        out["detail"] = (f"model {progress.get('model', '?')}, chunk {progress['chunk']} of {progress['chunks']}"
                         + (f", {float(progress['samples_per_s']):.0f} samples/s" if "samples_per_s" in progress else ""))
        out["fraction"] = min(1.0, int(progress["chunk"]) / max(1, int(progress["chunks"])))
        out["eta_s"] = progress.get("eta_s")
    return out
