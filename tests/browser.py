"""A real browser on the real app: start it on a free port (`streamlit run app.py`, or the launcher `python -m
explorer app` that `make app` runs) and drive Debian's chromium."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots land here (ignored by git)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(extra_env: dict[str, str] | None = None, launcher: bool = False,
                     start: list[str] | None = None):
    """Run the app headless on loopback; yield its base URL; stop it afterwards.

    `launcher`: start it as `make app` does (`python -m explorer app`: the default model preloaded while the server
    starts) instead of with `streamlit run app.py`; `start`: another command that takes Streamlit's options (a
    benchmark's). The server's output is in test-artifacts/server-<port>.log.
    """
    port = free_port()
    if start is None:
        start = [sys.executable, "-m", "explorer", "app"] if launcher else [sys.executable, "-m", "streamlit", "run",
                                                                              str(ROOT / "app.py")]
    command = [
        *start,
        "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
        "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
    ]
    env = {**os.environ, **(extra_env or {})}
    ARTIFACTS.mkdir(exist_ok=True)
    # The server's output goes to a file: a pipe nobody reads fills up (64 KiB of tracebacks) and then blocks the
    # server on its next print, so that it neither answers nor stops.
    log = open(ARTIFACTS / f"server-{port}.log", "wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError("The streamlit server did not become healthy within 60 s.")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def record_frames(page) -> list[tuple[float, bool, bytes]]:
    """(network timestamp in s, sent?, bytes) of every websocket frame of `page` from now on (binary frames only)."""
    frames = []
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")

    def keep(sent: bool, event: dict) -> None:
        if event["response"]["opcode"] == 2:  # binary: a protobuf message
            frames.append((event["timestamp"], sent, base64.b64decode(event["response"]["payloadData"])))

    session.on("Network.webSocketFrameSent", lambda event: keep(True, event))
    session.on("Network.webSocketFrameReceived", lambda event: keep(False, event))
    return frames


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def wait_idle(page, timeout_ms: int = 120_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout_ms)
