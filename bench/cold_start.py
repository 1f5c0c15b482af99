"""Cold start: seconds from launching the app as `make app` does (`python -m explorer app`, which preloads the
default model while the server starts) to the first heatmap drawn in a real browser.

Run: `.venv/bin/python -m bench.cold_start [--json bench/results/cold-start-cpu.json] [--cached-only] [--repeats N]`.
Measures twice: with the converted model cache on disk, and on a very first run (an empty cache directory,
so the packaged GGUF is converted while a progress bar shows). Beside them, the floor: a bare Python process that
imports torch, transformers, streamlit and plotly, loads SmolLM2 from the cache and runs one forward pass with
attentions; `cached_over_bare` is the app's cold start over that floor (the goal is 1.5 or less).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.common import report
from tests.browser import launch, streamlit_server

HEATMAP = '[data-testid="stPlotlyChart"] g.heatmaplayer image'


def seconds_to_first_heatmap(playwright, cache: str | None) -> tuple[float, bool]:
    """Launch a server (optionally with its own cache dir), open the app, wait for a heatmap."""
    started = time.perf_counter()
    env = {"ATTENTION_EXPLORER_CACHE": cache} if cache else None
    saw_progress = False
    with streamlit_server(env, launcher=True) as url:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(url)
        deadline = time.time() + 600
        while not page.locator(HEATMAP).count():
            saw_progress |= page.locator('[data-testid="stProgress"]').count() > 0
            if time.time() > deadline:
                raise RuntimeError("No heatmap within 10 minutes.")
            page.wait_for_timeout(100)
        elapsed = time.perf_counter() - started
        browser.close()
    return elapsed, saw_progress


BARE = """
import torch, transformers, streamlit, plotly.graph_objects
from explorer.loading import load_model
loaded = load_model("smollm2")
ids = loaded.tokenizer("The giant ate the apple because it was hungry", return_tensors="pt")["input_ids"]
with torch.inference_mode():
    assert loaded.model(input_ids=ids, output_attentions=True).attentions
"""


def bare_process_seconds() -> float:
    """Seconds for a fresh Python to import the libraries, load SmolLM2 from its cache and run one pass."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE], check=True, cwd=Path(__file__).resolve().parents[1],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--cached-only", action="store_true", help="skip the very first run (GGUF conversion)")
    parser.add_argument("--repeats", type=int, default=1, help="cached starts and bare processes, alternated")
    args = parser.parse_args()
    figures = {}
    with sync_playwright() as playwright:
        if not args.cached_only:
            with tempfile.TemporaryDirectory() as empty_cache:
                first_run, progress_shown = seconds_to_first_heatmap(playwright, empty_cache)
            figures.update(cold_start_first_run_s=round(first_run, 1), first_run_progress_shown=progress_shown)
        cached, bare = [], []
        for _ in range(args.repeats):  # alternated, so that a change in the machine's load touches both
            bare.append(bare_process_seconds())
            cached.append(seconds_to_first_heatmap(playwright, None)[0])
    figures.update(
        cold_start_cached_s=round(statistics.median(cached), 1),
        bare_process_s=round(statistics.median(bare), 1),
        cached_over_bare=round(statistics.median(cached) / statistics.median(bare), 2),
        each_cached_s=[round(x, 1) for x in cached],
        each_bare_s=[round(x, 1) for x in bare],
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    report(figures, args.json)


if __name__ == "__main__":
    main()
