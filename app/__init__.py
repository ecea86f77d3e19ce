"""The MultiMem Studio dashboard (Streamlit). Entry point: app/main.py; `multimem app RUN` starts it."""

from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"
# The folder every launcher starts Streamlit in. Streamlit reads .streamlit/config.toml from the folder it
# starts in, and `multimem app` is naturally started in a dataset folder (its default --data-root), which may
# come from someone else: a config there turned off Streamlit's XSRF and CORS checks and loaded fonts from
# another host. The paths the app needs are passed absolute, so where it starts changes nothing else.
LAUNCH_DIR = MAIN.parent

# Server options every launcher uses (`multimem app`, the browser test): a viewer's toolbar (no Deploy
# button), no usage statistics, and a calm blue that does not read as "noisy" red.
STREAMLIT_OPTIONS = [
    "--server.headless", "true",
    "--browser.gatherUsageStats", "false",
    "--client.toolbarMode", "viewer",
    "--theme.primaryColor", "#2F6DB5",
]


def streamlit_command(run: str | Path, *, host: str = "127.0.0.1", port: int = 8501,
                      data_root: str | Path | None = None) -> list[str]:
    """The `streamlit run` command line that serves the dashboard for `run` (a run or a folder of runs);
    media are served only from under `data_root` (default: the folder the app starts in)."""
    import sys

    root = ["--data-root", str(Path(data_root).resolve())] if data_root is not None else []
    return [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.address", host,
            "--server.port", str(port), *STREAMLIT_OPTIONS, *reachable_as(host, port), "--", "--run", str(run),
            *root]


LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
WILDCARD = ("", "0.0.0.0", "::")


def reachable_as(host: str, port: int) -> list[str]:
    """Server options that accept a browser only at the address the dashboard was started on.

    Streamlit accepts any Host header by default: a web page the user visits could rebind its own name to
    127.0.0.1 (DNS rebinding) and drive the dashboard as a same-origin page, reading its media and pressing
    its buttons. The Host allow-list refuses that; the origins that may control the app from a parent frame
    are narrowed from Streamlit Cloud's to the app's own. A dashboard bound to every interface (0.0.0.0) is
    reached under names this machine cannot know, so there the Host check is left to whoever exposed it."""
    shown = "127.0.0.1" if host in WILDCARD else host
    origin = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    hosts = [] if host in WILDCARD else list(dict.fromkeys([*LOOPBACK, host]))
    return [*(a for h in hosts for a in ("--server.allowedHosts", h)), "--client.allowedOrigins", origin]
