"""The app as `make app` starts it (`python -m explorer app`), with every script run timed inside the server: from
a rerun request reaching the server to the end of the run it starts (the whole page, or only the part a fragment
redraws). One line per run, "<how it ended> <seconds>", is appended to the file named first.

Used by `bench/interaction.py`: `python -m bench.timed_server TIMES_FILE [options of python -m explorer app]`.
It wraps two methods of Streamlit's `AppSession` (the request arriving, the runner's events) and changes nothing
else; the browser's side (the websocket, drawing) is timed by the benchmark itself.
"""

from __future__ import annotations

import sys
import time

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.scriptrunner import ScriptRunnerEvent

from explorer.__main__ import main as explorer_main

FINISHED = (ScriptRunnerEvent.SCRIPT_STOPPED_WITH_SUCCESS, ScriptRunnerEvent.FRAGMENT_STOPPED_WITH_SUCCESS)


def time_script_runs(times_file: str) -> None:
    """Append the server-side seconds of every script run to `times_file`."""
    lines = open(times_file, "a", buffering=1)
    requested: dict[str, float] = {}  # session id -> when its last rerun request arrived
    handle_backmsg, on_event = AppSession.handle_backmsg, AppSession._on_scriptrunner_event

    def timed_backmsg(session: AppSession, msg) -> None:
        if msg.WhichOneof("type") == "rerun_script":
            requested[session.id] = time.perf_counter()
        handle_backmsg(session, msg)

    def timed_event(session: AppSession, sender, event, *args, **kwargs) -> None:
        if event in FINISHED and session.id in requested:
            lines.write(f"{event.name} {time.perf_counter() - requested.pop(session.id):.4f}\n")
        on_event(session, sender, event, *args, **kwargs)

    AppSession.handle_backmsg, AppSession._on_scriptrunner_event = timed_backmsg, timed_event


if __name__ == "__main__":
    time_script_runs(sys.argv[1])
    raise SystemExit(explorer_main(["app", *sys.argv[2:]]))
