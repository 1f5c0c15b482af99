"""The app in a real browser: Debian's chromium driven by Playwright, screenshots saved for people to look at."""

import time
import urllib.parse

import pytest

from tests.browser import ARTIFACTS, launch, streamlit_server, wait_idle

pytestmark = pytest.mark.browser
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


@pytest.fixture(scope="module")
def server():
    with streamlit_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def open_page(browser, url, height=2400, timeout_ms=120_000):
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.goto(url)
    wait_idle(page, timeout_ms)
    return page


def axis_labels(page, chart_index: int) -> list[str]:
    chart = page.locator('[data-testid="stPlotlyChart"]').nth(chart_index)
    return chart.locator("g.xtick text").evaluate_all("nodes => nodes.map(n => n.textContent)")


def wait_for_labels(page, chart_index: int, expected: list[str], timeout_s: float = 120) -> list[str]:
    """The chart's x-axis token labels, once they equal `expected` (charts draw one after another)."""
    deadline = time.time() + timeout_s
    while (labels := axis_labels(page, chart_index)) != expected and time.time() < deadline:
        page.wait_for_timeout(250)
    return labels


def test_typing_a_sentence_draws_its_heatmaps(server, browser):
    page = open_page(browser, server)
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)

    box = page.get_by_role("textbox", name="Text")
    box.fill("Paris is the capital of France")
    box.press("Control+Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"] g.xtick text')]"
        ".some(t => t.textContent === 'France')",
        timeout=60_000,
    )
    wait_idle(page)
    heatmaps = page.locator('[data-testid="stPlotlyChart"] g.heatmaplayer image')
    assert heatmaps.count() >= 4  # the head grid, one head, its mask, the overview
    expected = ["Paris", "is", "the", "capital", "of", "France"]
    assert wait_for_labels(page, 1, expected) == expected
    assert "text=Paris+is+the+capital+of+France" in page.url or "Paris%20is" in page.url
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "attention.png", full_page=True)
    page.close()


def test_a_shared_link_restores_the_view(server, browser):
    query = urllib.parse.urlencode({"text": "the cat saw the dog", "model": "minilm", "layer": "3", "head": "7"})
    page = open_page(browser, f"{server}/?{query}", height=1600)
    page.get_by_text("Layer 3, head 7").first.wait_for(timeout=120_000)
    # Repeated tokens ("the" twice) keep their own columns.
    expected = ["[CLS]", "the", "cat", "saw", "the", "dog", "[SEP]"]
    assert wait_for_labels(page, 1, expected) == expected
    page.close()


def test_self_vs_causal_page(server, browser):
    page = open_page(browser, f"{server}/self_vs_causal", height=1800)
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)
    wait_idle(page)
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 6
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "self_vs_causal.png", full_page=True)
    page.close()


def choose_context(page, tokens: int) -> None:
    """Pick a context length in the sidebar: the text filled up with news prose to `tokens` tokens."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Context length").click()
    page.get_by_role("option", name=f"{tokens} tokens: your text, then news prose").click()


def test_a_long_context_draws_pooled_overview_summaries_and_zoom(server, browser):
    page = open_page(browser, server, height=3200)
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)
    choose_context(page, 256)
    page.get_by_text("all 256 tokens, pooled").first.wait_for(timeout=300_000)
    wait_idle(page, timeout_ms=300_000)
    titles = page.locator('[data-testid="stPlotlyChart"] g.g-gtitle text').all_text_contents()
    assert any(t.endswith("tokens 0–63") for t in titles) and "All heads × layers" in titles
    assert "Weight on the first token" in titles
    assert page.locator('[data-testid="stPlotlyChart"] g.heatmaplayer image').count() >= 8
    assert page.get_by_text("Why several heads?").count() == 1  # the words beside the picture
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "long_inputs_256.png", full_page=True)
    page.close()


def test_cross_attention_page_shows_three_kinds_and_says_untrained(server, browser):
    page = open_page(browser, f"{server}/cross_attention", height=2000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)
    wait_idle(page)
    titles = page.locator('[data-testid="stPlotlyChart"] g.g-gtitle text').all_text_contents()
    assert len(titles) == 4 and all("untrained (random weights)" in t for t in titles)
    assert page.get_by_text("Its weights are random").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "cross_attention.png", full_page=True)
    page.close()


def test_a_deep_link_is_the_first_request_of_a_fresh_server(browser):
    """A shared link to a page other than home, opened on a server nobody has visited yet, still runs app.py
    (navigation, settings) and restores the view."""
    with streamlit_server() as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(f"{url}/kv_cache?config=llama-3-8b&dtype=fp8")
        wait_idle(page)
        page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=120_000)
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "Attention Explorer" in sidebar and "Variant lab" in sidebar
        assert "llama-3-8b: weights + KV cache against context length" in page.locator('[data-testid="stMain"]').inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "kv_cache.png", full_page=True)
        page.close()


def test_the_variant_lab_converts_and_measures_in_a_browser(server, browser):
    page = open_page(browser, f"{server}/variant_lab?variant=mla&latent_rank=192", height=2600, timeout_ms=600_000)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=600_000)
    wait_idle(page, 600_000)
    metrics = page.locator('[data-testid="stMetric"]').all_inner_texts()
    assert any(m.startswith("KV values / token / layer") and "192" in m for m in metrics)
    assert any(m.startswith("Perplexity") for m in metrics)
    page.get_by_text("mla naive r=192 data: layer 0, head 0").first.wait_for(timeout=120_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "variant_lab.png", full_page=True)
    page.close()
