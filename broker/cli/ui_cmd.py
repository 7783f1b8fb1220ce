# SPDX-License-Identifier: Apache-2.0
"""``mmbroker ui``: the Streamlit dashboard on its own (``mmbroker up`` starts it next to the worker).

The dashboard is a separate process (``streamlit run ui/app.py``); it reads
the same settings, passed as ``MMBROKER_*`` environment variables: the state
folder, the archive, the topic prefix and the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

from broker.cli.common import add_settings_args, settings_from
from broker.config import Settings
from broker.errors import ConfigError

HELP = "start the Streamlit dashboard (live feed, sky map, alerts, filters, search, subscribe)"


def add_parser_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ui``."""
    add_settings_args(p)
    p.add_argument("--port", type=int, help="dashboard port (default: the ui_port setting, 8501; a free one if taken)")
    p.add_argument("--address", default="127.0.0.1",
                   help="listen address (default 127.0.0.1; 0.0.0.0 serves other machines)")


def app_path() -> Path:
    """The dashboard's Streamlit script, ``ui/app.py``."""
    return Path(str(resources.files("ui").joinpath("app.py")))


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether TCP ``port`` can be bound on ``host`` now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(port: int, host: str = "127.0.0.1") -> int:
    """``port`` if it is free (and not 0), else a free one."""
    if port and port_free(port, host):
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        free: int = s.getsockname()[1]
        return free


def dashboard_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the dashboard process: ``base`` (default ``os.environ``) plus the settings the
    command line may have changed, as ``MMBROKER_*`` variables (paths made absolute)."""
    env = dict(os.environ if base is None else base)
    env["MMBROKER_STATE_DIR"] = str(Path(settings.state_dir).resolve())
    env["MMBROKER_ARCHIVE_PATH"] = str(Path(settings.archive_path).resolve())
    env["MMBROKER_ARCHIVE_BACKEND"] = settings.archive_backend
    env["MMBROKER_PREFIX"] = settings.prefix
    if settings.bootstrap_servers:
        env["MMBROKER_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    if settings.config_file is not None:
        env["MMBROKER_CONFIG"] = str(Path(settings.config_file).resolve())
    if settings.filter_dir is not None:
        env["MMBROKER_FILTER_DIR"] = str(Path(settings.filter_dir).resolve())
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def streamlit_command(port: int, address: str) -> list[str]:
    """The ``streamlit run`` command line of the dashboard."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
        "--global.developmentMode", "false",
    ]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux), so no dashboard is left behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_dashboard(
    settings: Settings, port: int, address: str = "127.0.0.1", log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start the dashboard process on ``address:port`` (its output to ``log_path``, else inherited).

    Raises
    ------
    ConfigError
        If Streamlit cannot be started.
    """
    out = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - owned by the child
    try:
        return subprocess.Popen(
            streamlit_command(port, address), env=dashboard_env(settings), stdout=out,
            stderr=subprocess.STDOUT if out is not None else None, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # no threads yet in the callers
        )
    except OSError as exc:
        raise ConfigError(f"cannot start the dashboard (streamlit): {exc}") from exc
    finally:
        if out is not None:
            out.close()


def stop_dashboard(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop the dashboard process (SIGTERM, then SIGKILL after ``timeout_s``)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)


def dashboard_url(address: str, port: int) -> str:
    """The URL to open in a browser."""
    host = "localhost" if address in ("0.0.0.0", "127.0.0.1", "::", "") else address  # noqa: S104 - a comparison
    return f"http://{host}:{port}"


def main(args: argparse.Namespace) -> int:
    """Run ``ui`` until interrupted."""
    settings = settings_from(args, ui_port=args.port)
    port = choose_port(settings.ui_port, args.address)
    proc = start_dashboard(settings, port, args.address)
    print(f"dashboard on {dashboard_url(args.address, port)} "
          f"(archive {settings.archive_path}, prefix {settings.prefix})", flush=True)

    def stop(_signum: int, _frame: object) -> None:
        proc.terminate()  # forward; the wait below returns when Streamlit has stopped

    signal.signal(signal.SIGTERM, stop)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_dashboard(proc)
        return 0
    finally:
        stop_dashboard(proc)
