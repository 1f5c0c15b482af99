"""The generate page headless (AppTest) from a shared link, and in a real browser: tokens appear as they are
made, and the Stop button ends a generation in progress."""

import time
import urllib.parse

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.specs import array, figures

APP = "../app.py"
LINK = {"text": "The giant ate the apple because it was", "steps": "5", "variant": "mla", "latent_rank": "192",
        "svd": "plain", "compare": "original", "layer": "2", "horizon": "32768"}


def test_a_link_generates_both_variants_and_weighs_their_caches():
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params.update(LINK)
    app.run()
    app.switch_page("views/generate.py").run()
    assert not app.exception
    assert app.slider(key="gen-steps").value == 5
    texts = [m.value for m in app.markdown if 'data-testid="generated-text"' in m.value]
    assert len(texts) == 2 and all(text.count('title="step ') == 5 for text in texts)
    specs = figures(app)
    rows = specs["mla naive r=192 plain, layer 2: each new token's attention"]
    assert len(rows["data"]) == 9  # one heatmap per head
    assert array(rows["data"][0]["z"]).shape[0] == 5  # one row per generated token
    cache = specs["KV cache while generating: weighed (points) against the formula (dashed)"]
    weighed = {trace["name"]: array(trace["y"]) for trace in cache["data"] if trace["name"].endswith("weighed")}
    prompt = 8  # tokens of the prompt; after step i the cache holds prompt + i
    tokens = np.arange(prompt, prompt + 5)
    assert np.allclose(weighed["mla naive r=192 plain: weighed"], tokens * 30 * 192 * 4 / 2**20)
    assert np.allclose(weighed["original: weighed"], tokens * 30 * 384 * 4 / 2**20)
    assert any("KL(" in title for title in specs)
    assert any(title.startswith("The cache out to 32,768 tokens") for title in specs)
    assert "equal to the formula at every step" in " ".join(c.value for c in app.caption)
    charts = [chart.proto.id.split("-", 2)[2] for chart in app.get("plotly_chart")]  # "$$ID-<hash>-<key>"
    buttons = {button.key for button in app.download_button}
    assert len(charts) == 6 and all({f"csv-{key}", f"json-{key}"} <= buttons for key in charts), (charts, buttons)
    kept = app.query_params  # the link's settings stay in the address (compare=original is the default)
    assert (kept["steps"], kept["variant"], kept["latent_rank"], kept["horizon"]) == ("5", "mla", "192", "32768")


def test_the_default_view_compares_nothing_with_itself():
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params.update({"steps": "3"})  # variant and compare both default to the original
    app.run()
    app.switch_page("views/generate.py").run()
    assert not app.exception
    assert len([m for m in app.markdown if 'data-testid="generated-text"' in m.value]) == 1
    assert "is original itself" in " ".join(c.value for c in app.caption)


def test_a_hosted_server_limits_the_steps_with_a_notice(monkeypatch):
    monkeypatch.setenv("ATTENTION_EXPLORER_HOSTED", "1")
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params.update({"steps": "500", "compare": "none"})
    app.run()
    app.switch_page("views/generate.py").run()
    assert not app.exception
    assert "at most 64 tokens" in " ".join(w.value for w in app.warning)
    assert app.slider(key="gen-steps").value == 64


@pytest.mark.browser
def test_tokens_appear_one_by_one_and_stop_ends_the_run():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    from tests.browser import ARTIFACTS, launch, streamlit_server, wait_idle

    query = urllib.parse.urlencode({"text": "Once upon a time", "steps": "200", "compare": "mla-192"})
    chips = "() => document.querySelectorAll('[data-testid=\"generated-text\"] span[title]').length"
    with streamlit_server() as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(f"{url}/generate?{query}")
        page.wait_for_function(f"({chips})() >= 4", timeout=180_000)
        page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)  # rows, live
        seen = page.evaluate(chips)
        page.wait_for_function(f"({chips})() > {seen}", timeout=60_000)  # more tokens arrive while we watch
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "generate-streaming.png"), timeout=120_000)
        page.get_by_test_id("stMainBlockContainer").get_by_role("button", name="Stop generating").click(
            force=True, timeout=60_000)  # the page redraws while it generates: no waiting for it to stand still
        page.wait_for_selector("text=Stopped after", timeout=60_000)
        wait_idle(page)
        stopped = page.evaluate(chips)
        assert 0 < stopped < 2 * 200  # both columns' chips: fewer than the 200 steps asked of each
        time.sleep(2)
        assert page.evaluate(chips) == stopped  # nothing more is generated after Stop
        page.screenshot(path=str(ARTIFACTS / "generate-stopped.png"), timeout=120_000)
        browser.close()
