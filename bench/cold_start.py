"""Cold start: seconds from launching `streamlit run app.py` to the first heatmap drawn in a real browser.

Run: `.venv/bin/python -m bench.cold_start [--json bench/results/cold-start-cpu.json]`.
Measures twice: with the converted model cache on disk, and on a very first run (an empty cache directory,
so the packaged GGUF is converted while a progress bar shows).
"""

from __future__ import annotations

import argparse
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
    with streamlit_server(env) as url:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        with tempfile.TemporaryDirectory() as empty_cache:
            first_run, progress_shown = seconds_to_first_heatmap(playwright, empty_cache)
        cached, _ = seconds_to_first_heatmap(playwright, None)
    report(
        {
            "cold_start_cached_s": round(cached, 1),
            "cold_start_first_run_s": round(first_run, 1),
            "first_run_progress_shown": progress_shown,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
