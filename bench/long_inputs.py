"""Long inputs: payload sent to the browser, server time, and time until the charts are visible in a browser.

Run: `.venv/bin/python -m bench.long_inputs [--tokens 256 1024] [--json bench/results/long-inputs-cpu.json]`.
For each context length it measures, on SmolLM2 with the text filled up with news prose:
- the reduced forward pass (`overview_attention`) and one layer recomputed in full (`layer_attention`);
- the bytes of every plotly figure the home page sends (read from a headless run of the page), the
  all-heads overview on its own included;
- in a real browser (Debian's chromium), seconds until the page is idle with the overview drawn: after
  choosing the context length (cold, the forward pass included; then cached, in a new tab), and after a
  rerun that sends and draws every chart again (the log colour scale switched on).
The machine's load average is recorded too: on a shared 2-core machine the times move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from explorer.loading import load_model
from explorer.run import fill_with_prose, layer_attention, overview_attention
from explorer.state import DEFAULT_TEXT

ROOT = Path(__file__).resolve().parents[1]
OVERVIEW = "All heads × layers"


def page_payload(tokens: int) -> dict[str, int]:
    """Bytes of each plotly figure (its JSON spec) on the home page at `tokens` tokens, by figure title."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    app.run()
    app.sidebar.selectbox(key="context_length").set_value(tokens).run()
    if app.exception:
        raise RuntimeError(app.exception[0].message)
    sizes = {}
    for element in app.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        title = spec["layout"].get("title", {}).get("text", "untitled")
        sizes[title] = len(element.proto.spec.encode())
    return sizes


def server_seconds(tokens: int) -> dict[str, float]:
    model = load_model("smollm2", device="cpu")
    text = fill_with_prose(DEFAULT_TEXT, tokens)
    started = time.perf_counter()
    overview = overview_attention(model, text, tokens)
    reduced_pass = time.perf_counter() - started
    started = time.perf_counter()
    layer_attention(model, overview, overview.num_layers // 2)
    one_layer = time.perf_counter() - started
    return {"overview_pass_s": round(reduced_pass, 2), "middle_layer_s": round(one_layer, 2),
            "full_weights_kept": overview.kept is not None}


def browser_seconds(tokens_list: list[int]) -> dict[int, dict[str, float]]:
    """Seconds until an idle page shows the overview: after choosing a context length (cold: the forward pass
    included; cached: a new tab, the run already computed), and after a rerun that redraws every chart (the
    log colour scale switched on; median of 3)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch, streamlit_server, wait_idle

    results = {}
    with sync_playwright() as playwright, streamlit_server() as url:
        browser = launch(playwright)
        for tokens in tokens_list:
            results[tokens] = {}
            for attempt in ("cold", "cached"):
                page = browser.new_page(viewport={"width": 1400, "height": 3000})
                page.goto(url)
                wait_idle(page)
                page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=300_000)
                started = time.perf_counter()
                choose_context(page, tokens)
                page.get_by_text(f"all {tokens} tokens, pooled").first.wait_for(timeout=600_000)
                wait_idle(page, timeout_ms=600_000)
                overview = page.locator('[data-testid="stPlotlyChart"]').last
                overview.locator("g.heatmaplayer image").wait_for()
                results[tokens][f"browser_{attempt}_s"] = round(time.perf_counter() - started, 2)
                if attempt == "cold":
                    page.close()
            redraws = []
            for _ in range(3):
                started = time.perf_counter()
                page.get_by_text("Log colour scale").click()  # on: every chart is sent and drawn again
                overview.locator("g.colorbar text", has_text="0.0001").wait_for(timeout=120_000)
                wait_idle(page)
                redraws.append(time.perf_counter() - started)
                page.get_by_text("Log colour scale").click()  # off again, not timed
                overview.locator("g.colorbar text", has_text="0.8").wait_for(timeout=120_000)
                wait_idle(page)
            results[tokens]["browser_redraw_s"] = round(sorted(redraws)[1], 2)
            page.close()
        browser.close()
    return results


def choose_context(page, tokens: int) -> None:
    """Open the sidebar's context-length box and pick `tokens`."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Context length").click()
    page.get_by_role("option", name=f"{tokens} tokens: your text, then news prose").click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--no-browser", action="store_true", help="skip the real-browser timing")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = {"model": "smollm2", "device": "cpu", "date": time.strftime("%Y-%m-%d"), "lengths": {},
               "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}
    for tokens in args.tokens:
        sizes = page_payload(tokens)
        figures["lengths"][tokens] = {
            "overview_bytes": sizes[OVERVIEW],
            "page_bytes": sum(sizes.values()),
            "figures": len(sizes),
            **server_seconds(tokens),
        }
    if not args.no_browser:
        for tokens, seconds in browser_seconds(args.tokens).items():
            figures["lengths"][tokens].update(seconds)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
