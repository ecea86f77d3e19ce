"""New run: start `multimem score` on data under the data root, watch its progress, cancel it, open it.

The form's option widgets are built from the config fields that declare them (multimem_core.config): their
labels, defaults, choices and bounds are the CLI's. The page builds a ScoreConfig, and the job runs it from
RUN/request.json. The job's state lives in its run directory (job.json, progress.json, log.txt, exit_code:
see multimem_core.launch), not in the browser session, so a reload finds it where it is; the job shown is
in the address (?job=NAME).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from app import common, run_data
from app.option_widgets import FORM_OPTIONS, option_widget
from multimem_core import launch
from multimem_core.names import MODALITIES
from multimem_core.run import RunDir

STATE_ICONS = {"starting": ":material/hourglass_top:", "running": ":material/sync:",
               "complete": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}

root = launch.data_root()
folder = launch.runs_folder(run_data.runs_root(), root=root)


@st.cache_data(ttl=30, show_spinner=False)
def found_inputs(root_path: str) -> tuple[list[str], dict[str, str]]:
    """(inputs to offer, {CSV or TSV file: why it is not a manifest}) under the data root, relative to it."""
    base = Path(root_path)

    def rel(p: Path) -> str:
        return str(p.relative_to(base)) if p != base else "."

    usable, refused = launch.split_inputs(launch.find_inputs(base))
    return [rel(p) for p in usable], {rel(p): why for p, why in refused.items()}


@st.cache_data(ttl=30, max_entries=16, show_spinner="Reading the input…")
def describe_input(path: str, mtime: float) -> tuple[list[str], int, str]:
    """(modalities, samples, error) of a manifest or shards folder."""
    from multimem_core.data.manifest import ManifestError

    p = Path(path)
    try:
        if p.is_dir() or p.suffix == ".tar":
            from multimem_core.data.shards import read_shards

            source = read_shards(p)
        else:
            from multimem_core.data.manifest import read_manifest

            source = read_manifest(p)
    except (ManifestError, OSError, ValueError) as e:
        return [], 0, str(e)
    return list(source.modalities), int(len(source.table)), ""


def open_run(path: Path) -> None:
    """Make `path` the dashboard's run and go to its Overview."""
    run_data.discover_runs.clear()
    st.session_state["run_path"] = str(path.resolve())
    st.session_state["run_picker"] = str(path.resolve())
    st.switch_page("views/overview.py")


def show_job(name: str) -> None:
    state = launch.job_state(folder / name)
    if state is None:
        st.warning(f"No run named {common.code(name)} was started in {common.code(folder)}.")
        return
    started = datetime.fromtimestamp(state.started).strftime("%Y-%m-%d %H:%M:%S")
    st.subheader(f"{common.plain(name)}")
    st.caption(f"{STATE_ICONS[state.state]} **{state.state}** · started {started} · "
               f"input {common.code(state.job.get('options', {}).get('input', '?'))}")
    if state.active:
        d = launch.describe(state.progress)
        p = state.progress or {}
        c = st.columns(4)
        c[0].metric("Stage", d["stage"])
        c[1].metric("Epoch", f"{p['epoch']} / {p['epochs']}" if p.get("stage") == "train" and "epoch" in p else "–")
        c[2].metric("Samples/s", f"{float(p['samples_per_s']):.0f}" if "samples_per_s" in p else "–")
        c[3].metric("Time left", launch.duration(d["eta_s"]) if d["eta_s"] is not None else "–",
                    help="Time left in the current stage (training: all models)")
        if d["fraction"] is not None:
            st.progress(d["fraction"], text=d["detail"])
        elif d["detail"]:
            st.caption(d["detail"])
        st.caption(f"Running for {launch.duration(time.time() - state.started)}. The page follows the job by "
                   "itself; closing or reloading it does not stop the run.")
        st.button("Cancel the run", icon=":material/stop_circle:", key=f"newrun_cancel_{name}",
                  on_click=launch.cancel, args=(state.path,))
        with st.expander("Log"):
            st.code(launch.log_tail(state.path, lines=30) or "(nothing yet)", language=None)
    elif state.state == "complete":
        cfg = RunDir(state.path).config()
        st.success(common.inert(f"Finished: {cfg.get('n_scored', '?')} samples scored of {cfg.get('n_samples', '?')}."),
                   icon=":material/check_circle:")
        if st.button("Open this run", type="primary", icon=":material/open_in_new:", key=f"newrun_open_{name}"):
            open_run(state.path)
    elif state.state == "failed":
        code = f" (exit status {state.exit_code})" if state.exit_code is not None else ""
        st.error(f"The run failed{code}. The end of its log ({common.code(state.path / 'log.txt')}):",
                 icon=":material/error:")
        st.code(state.error, language=None)
    else:
        st.warning("Cancelled. The run directory keeps what was done; start a new run to score again.",
                   icon=":material/cancel:")
    was = st.session_state.get(f"_newrun_active_{name}")
    st.session_state[f"_newrun_active_{name}"] = state.active
    if was and not state.active:
        st.rerun()  # the whole page: stop polling, show the finished state


st.title("New run")
st.caption(f"Score a dataset without leaving the browser: `multimem score` runs in the background and this page "
           f"follows it. Inputs come from the data root {common.code(root)} (`multimem app … --data-root DIR`); "
           f"runs are written to {common.code(folder)}.")

jobs = launch.list_jobs(folder)
names = [j.name for j in jobs]
wanted = st.query_params.get("job")
if wanted not in names:
    active = [j.name for j in jobs if j.active]
    wanted = active[0] if active else (names[0] if names else None)
if wanted:
    if len(names) > 1:
        pick = st.selectbox("Runs started here", names, index=names.index(wanted), key="newrun_pick",
                            format_func=lambda n: f"{n} · {next(j.state for j in jobs if j.name == n)}")
        wanted = pick
    if st.query_params.get("job") != wanted:
        st.query_params["job"] = wanted
    current = next(j for j in jobs if j.name == wanted)
    with st.container(border=True):
        if current.active:
            st.fragment(run_every=1.0)(show_job)(wanted)
        else:
            show_job(wanted)

# --- the form ---------------------------------------------------------------------------------------------------
st.subheader("Start a run")
found, not_manifests = found_inputs(str(root))
left, right = st.columns([3, 2], gap="large")
with left:
    if found:
        likely = next((i for i, f in enumerate(found) if "manifest" in Path(f).name.lower()), 0)
        choice = st.selectbox("Input: a manifest or a folder of WebDataset shards", found, index=likely,
                              key="newrun_found", help=f"Found under {root} (three levels deep)")
    else:
        choice = ""
        st.info(f"No manifest or shards folder found under {common.code(root)}. Give a path below, or start the "
                "dashboard with `--data-root` pointing at your data.", icon=":material/folder_open:")
    if not_manifests:  # listed apart, with the reason, instead of failing once chosen
        shown = sorted(not_manifests)[:5]
        st.caption(f"Not listed, not manifests ({len(not_manifests)}): "
                   + ", ".join(common.code(f) for f in shown) + (" …" if len(not_manifests) > len(shown) else "")
                   + f". A manifest's header names at least two of the columns {', '.join(MODALITIES)}.",
                   help="\n\n".join(common.plain(not_manifests[f]) for f in shown))
    other = st.text_input("Or a path under the data root", key="newrun_path", placeholder="data/train.csv")
    text = other.strip() or choice
    path, problem = None, ""
    if text:
        try:
            path = launch.resolve_under(root, text)
        except launch.LaunchError as e:
            problem = str(e)
    if problem:
        st.error(problem, icon=":material/block:")
    mods, n, err = describe_input(str(path), path.stat().st_mtime) if path else ([], 0, "")
    if err:
        st.error(err, icon=":material/error:")
    elif path:
        st.caption(f"{n:,} samples · modalities {', '.join(mods)}")
    picked = st.multiselect("Modalities", [m for m in MODALITIES if m in mods], default=mods, key="newrun_mods",
                            help="At least two")
    values: dict = {}
    basic, more = FORM_OPTIONS
    for row in (basic[:3], basic[3:]):
        for o, col in zip(row, st.columns(3)):
            with col:
                values[o.dest] = option_widget(o, disabled=o.dest == "folds" and values.get("protocol") != "crossfit")
with right:
    with st.expander("More options"):
        for o in more:  # a tower of a modality the run leaves out does not matter
            values[o.dest] = option_widget(o, disabled=o.dest in ("audio_tower", "video_tower")
                                           and o.dest.removesuffix("_tower") not in picked)
    if "newrun_name" not in st.session_state:
        stem = Path(text).stem if text and text != "." else "run"
        if stem == "manifest" and Path(text).parent.name:  # shapes/manifest.csv -> shapes-…
            stem = Path(text).parent.name
        st.session_state["newrun_name"] = f"{stem}-{datetime.now():%Y%m%d-%H%M%S}"
    name = st.text_input("Run name", key="newrun_name", help=f"The run directory: {folder}/NAME")
    ready = path is not None and not err and len(picked) >= 2
    if path is not None and not err and len(picked) < 2:
        st.caption("Pick at least two modalities.")
    if st.button("Start run", type="primary", icon=":material/play_arrow:", disabled=not ready, key="newrun_start"):
        try:
            run_name = launch.check_run_name(name.strip())  # a name, not a path: the run stays in this folder
            out = launch.start(launch.request(path, folder / run_name, {**values, "modalities": picked}), root=root)
        except launch.LaunchError as e:
            st.error(common.inert(e), icon=":material/block:")
        else:
            st.query_params["job"] = out.name
            st.session_state.pop("newrun_name", None)  # the next run gets a fresh name
            st.session_state.pop("newrun_pick", None)
            st.rerun()

if jobs:
    with st.expander(f"All runs started here ({len(jobs)})"):
        st.dataframe(pd.DataFrame({
            "run": [j.name for j in jobs], "state": [j.state for j in jobs],
            "started": [datetime.fromtimestamp(j.started).strftime("%Y-%m-%d %H:%M") for j in jobs],
            "input": [j.job.get("options", {}).get("input", "") for j in jobs]}), hide_index=True, width="stretch")
