"""Time of an interaction (change layer, change head) against a bare eager forward pass.

Run: `.venv/bin/python -m bench.interaction [--json bench/results/interaction-cpu.json]`.
Both figures come from the same run and the same 16-token sentence with the model cache on disk.

The page redraws only its layer-and-head part when the layer or head changes (a Streamlit fragment), which a
headless `AppTest` cannot do: it always reruns the whole script. So the interaction is driven in a real browser
(Debian's chromium) on the app started as `make app` starts it, and timed three ways:
- `server`: inside the server, from the rerun request arriving to the end of the run it starts (`bench.timed_server`):
  the app's own work, which the forward pass is compared with (the issue's 0.83x was this, measured headless);
- `round_trip`: from the browser sending the request to it receiving the "script finished" message, by the
  network's timestamps of the websocket frames (adds the transfer, and waits while the page's own drawing of the
  previous charts holds the browser's network thread on these 2 cores);
- `drawn`: from the key press or click until the new chart's title is drawn (what a person waits for).
The whole page's rerun (what a change of text or colour scale costs once the pass is cached) is timed headless, for
comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import torch

from bench.common import report

SENTENCE = "The old lighthouse keeper watched the storm roll across the bay while his old dog slept"
REPEATS = 15
ROOT = Path(__file__).resolve().parents[1]

def median_seconds(action, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bare_forward_seconds() -> tuple[float, int]:
    """Median seconds of one eager forward pass of SENTENCE through SmolLM2 in this process, and its token count."""
    from explorer.loading import load_model

    loaded = load_model("smollm2")
    input_ids = loaded.tokenizer(SENTENCE, return_tensors="pt")["input_ids"].to(loaded.device)
    with torch.inference_mode():
        loaded.model(input_ids=input_ids)  # warm-up
        return median_seconds(lambda: loaded.model(input_ids=input_ids)), int(input_ids.shape[1])


def full_rerun_seconds() -> float:
    """Median seconds of a headless rerun of the whole page (the pass cached), as a change of colour scale costs."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    app.query_params["text"] = SENTENCE
    app.run()
    switches = iter(range(10_000))
    seconds = median_seconds(lambda: app.toggle(key="log_scale").set_value(next(switches) % 2 == 0).run(), 7)
    assert not app.exception, app.exception
    return seconds


def rerun_times(page, frames: list, server_times: Path, act, title: str) -> tuple[float, float, float]:
    """`act()` in the page; seconds of the run it starts inside the server (the last line of `server_times`), from
    its rerun request to the server's "script finished" (network timestamps of the websocket frames in `frames`,
    filled by `record_frames`), and from `act()` until `title` is drawn (checked at every animation frame)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    from tests.browser import wait_idle

    frames.clear()
    clicked = time.perf_counter()
    act()
    page.wait_for_function(
        """title => [...document.querySelectorAll('[data-testid="stPlotlyChart"] g.g-gtitle text')]
                   .some(node => node.textContent.startsWith(title))""",
        arg=title, polling="raf", timeout=120_000)
    drawn = time.perf_counter() - clicked
    wait_idle(page)
    requested = [t for t, sent, data in frames if sent and BackMsg.FromString(data).WhichOneof("type")
                 == "rerun_script"][-1]
    finished = next(t for t, sent, data in frames if not sent and t > requested
                    and ForwardMsg.FromString(data).WhichOneof("type") == "script_finished")
    ended, seconds = server_times.read_text().splitlines()[-1].split()
    if ended != "FRAGMENT_STOPPED_WITH_SUCCESS":
        raise RuntimeError(f"The change reran the whole page ({ended}), not only its layer-and-head part.")
    return float(seconds), finished - requested, drawn


def browser_seconds() -> dict[str, float]:
    """Median server, round-trip and drawn seconds of changing the layer (the slider's arrow key) and the head (its
    button)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch, record_frames, streamlit_server, wait_idle

    with tempfile.TemporaryDirectory() as folder:
        server_times = Path(folder) / "script-runs.txt"
        server_times.touch()
        timed_launcher = [sys.executable, "-m", "bench.timed_server", str(server_times)]
        with sync_playwright() as playwright, streamlit_server(start=timed_launcher) as url:
            browser = launch(playwright)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            frames = record_frames(page)
            page.goto(f"{url}?{urllib.parse.urlencode({'text': SENTENCE})}")
            wait_idle(page, 300_000)
            page.get_by_text("All heads × layers").first.wait_for(timeout=300_000)
            wait_idle(page)
            slider = page.get_by_role("slider").first
            press_right = lambda: (slider.focus(), page.keyboard.press("ArrowRight"))  # noqa: E731
            layers = [rerun_times(page, frames, server_times, press_right, f"Layer {layer}: all 9 heads")
                      for layer in range(1, REPEATS + 1)]
            heads = [rerun_times(page, frames, server_times,
                                 lambda head=head: page.locator('[data-testid="stButtonGroup"] button',
                                                                has_text=f"H{head}").first.click(),
                                 f"Layer {REPEATS}, head {head}") for head in [*range(1, 9), *range(0, 8)][:REPEATS]]
            browser.close()
    figures = {}
    for change, times in (("layer", layers), ("head", heads)):
        for index, measure in enumerate(("server", "round_trip", "drawn")):
            figures[f"change_{change}_{measure}_s"] = statistics.median(row[index] for row in times)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    forward, tokens = bare_forward_seconds()
    figures = {name: round(seconds, 4) for name, seconds in browser_seconds().items()}
    full_rerun = full_rerun_seconds()
    report(
        {
            "tokens": tokens,
            "bare_eager_forward_s": round(forward, 4),
            **figures,
            "full_page_rerun_s": round(full_rerun, 4),
            "change_layer_over_forward": round(figures["change_layer_server_s"] / forward, 2),
            "change_head_over_forward": round(figures["change_head_server_s"] / forward, 2),
            "change_layer_round_trip_over_forward": round(figures["change_layer_round_trip_s"] / forward, 2),
            "change_head_round_trip_over_forward": round(figures["change_head_round_trip_s"] / forward, 2),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
