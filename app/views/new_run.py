"""New run: start `multimem score` on data under the data root, watch its progress, cancel it, open it.

The job's state lives in its run directory (job.json, progress.json, log.txt, exit_code: see
multimem_core.launch), not in the browser session, so a reload finds it where it is; the job shown is
in the address (?job=NAME).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from app import common
from multimem_core import MODALITIES, launch
from multimem_core.config import AUDIO_TOWERS, VIDEO_TOWERS, ModelConfig, field_help
from multimem_core.run import RunDir

DEFAULT = launch.NewRun  # its field defaults are the engine's (multimem_core.config), as `multimem score` has them
IMAGE_TOWERS = ["efficientnet-lite0", "mm-tiny", "mm-small"]
TEXT_TOWERS = {"minilm": "minilm (frozen MiniLM + projection)", "": "same as the image tower",
               "mm-tiny": "mm-tiny", "mm-small": "mm-small"}
STATE_ICONS = {"starting": ":material/hourglass_top:", "running": ":material/sync:",
               "complete": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}

root = launch.data_root()
folder = launch.runs_folder(common.runs_root(), root=root)


@st.cache_data(ttl=30, show_spinner=False)
def found_inputs(root_path: str) -> list[str]:
    base = Path(root_path)
    return [str(p.relative_to(base)) if p != base else "." for p in launch.find_inputs(base)]


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
    common.discover_runs.clear()
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
        st.success(f"Finished: {cfg.get('n_scored', '?')} samples scored of {cfg.get('n_samples', '?')}.",
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
found = found_inputs(str(root))
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
    c1, c2, c3 = st.columns(3)
    protocols = ["crossfit", "paper"]
    protocol = c1.radio("Protocol", protocols, index=protocols.index(DEFAULT.protocol), key="newrun_protocol",
                        help="crossfit: K models, every training sample scored; paper: S_S/S_C/S_I/H, two models")
    folds = int(c2.number_input("Folds", min_value=2, max_value=10, value=DEFAULT.folds, key="newrun_folds",
                                disabled=protocol != "crossfit"))
    epochs = int(c3.number_input("Epochs", min_value=1, max_value=1000, value=DEFAULT.epochs, key="newrun_epochs"))
    c1, c2 = st.columns(2)
    image_tower = c1.selectbox("Image tower", IMAGE_TOWERS, index=IMAGE_TOWERS.index(DEFAULT.image_tower), key="newrun_image_tower",
                               help="efficientnet-lite0: frozen pretrained features (shipped with the package) + a trained "
                                    "projection; mm-tiny / mm-small: open_clip towers trained from scratch")
    text_tower = c2.selectbox("Text tower", list(TEXT_TOWERS), index=list(TEXT_TOWERS).index(DEFAULT.text_tower),
                              format_func=TEXT_TOWERS.get, key="newrun_text_tower")
    c1, c2 = st.columns(2)
    audio_tower = c1.selectbox("Audio tower", AUDIO_TOWERS, index=list(AUDIO_TOWERS).index(DEFAULT.audio_tower),
                               key="newrun_audio_tower", help=field_help(ModelConfig, "audio_tower"),
                               disabled="audio" not in picked)
    video_tower = c2.selectbox("Video tower", VIDEO_TOWERS, index=list(VIDEO_TOWERS).index(DEFAULT.video_tower),
                               key="newrun_video_tower", help=field_help(ModelConfig, "video_tower"),
                               disabled="video" not in picked)
with right:
    with st.expander("More options"):
        views = int(st.number_input("Augmented views per sample", 1, 64, DEFAULT.views, key="newrun_views"))
        # 0: the image tower's own size (DEFAULT.image_size None), as `multimem score` decides it
        image_size = int(st.number_input("Image size (px, 0: the tower's own)", 0, 512, DEFAULT.image_size or 0,
                                         step=8, key="newrun_image_size")) or None
        batch_size = int(st.number_input("Batch size", 2, 4096, DEFAULT.batch_size, key="newrun_batch"))
        frames = int(st.number_input("Video frames", 1, 64, DEFAULT.frames, key="newrun_frames"))
        audio_seconds = float(st.number_input("Audio seconds", 0.1, 30.0, DEFAULT.audio_seconds, step=0.5, key="newrun_audio_s"))
        seed = int(st.number_input("Seed", 0, 2**31 - 1, DEFAULT.seed, key="newrun_seed"))
        devices = ["auto", "cpu", "cuda"]
        device = st.selectbox("Device", devices, index=devices.index(DEFAULT.device), key="newrun_device")
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
        job = launch.NewRun(input=str(path), out=str(folder / name.strip()), modalities=picked, protocol=protocol,
                            folds=folds, epochs=epochs, image_tower=image_tower, text_tower=text_tower,
                            audio_tower=audio_tower, video_tower=video_tower, views=views, image_size=image_size, batch_size=batch_size,
                            frames=frames, audio_seconds=audio_seconds, seed=seed, device=device)
        try:
            out = launch.start(job, root=root)
        except launch.LaunchError as e:
            st.error(str(e), icon=":material/block:")
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
