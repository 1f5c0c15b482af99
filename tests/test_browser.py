"""The app in a real browser: Debian's chromium driven by Playwright, screenshots saved for people to look at."""

import json
import time
import urllib.parse

import pytest

from explorer.export import png_export_available
from tests.browser import ARTIFACTS, launch, streamlit_server, wait_idle
from tests.vector import pdf_pages_and_fonts, row_labels_fit, svg_texts

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


def chart_titles(page) -> list[str]:
    return page.locator('[data-testid="stPlotlyChart"] g.g-gtitle text').all_text_contents()


def wait_for_titles(page, expected: list[str], timeout_s: float = 120) -> list[str]:
    """The chart titles on the page, once every one of `expected` is among them (charts draw one after another)."""
    deadline = time.time() + timeout_s
    while not set(expected) <= set(titles := chart_titles(page)) and time.time() < deadline:
        page.wait_for_timeout(250)
    return titles


def test_a_link_restores_the_self_vs_causal_view(server, browser):
    query = urllib.parse.urlencode({"minilm_layer": "2", "minilm_head": "5", "smollm2_layer": "7",
                                    "smollm2_head": "8", "follow": "apple"})
    page = open_page(browser, f"{server}/self_vs_causal?{query}", height=1800)
    expected = ["Where 'apple' looks, layer 2", "Layer 2, head 5", "Where 'apple' looks, layer 7", "Layer 7, head 8"]
    assert set(expected) <= set(wait_for_titles(page, expected))
    wait_idle(page)
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 6
    assert "follow=apple" in page.url and "smollm2_head=8" in page.url
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
    query = urllib.parse.urlencode({"encoder_decoder": "tiny-t5-untrained", "encoder_layer": "0", "cross_head": "2",
                                    "target": "hungry giant"})
    page = open_page(browser, f"{server}/cross_attention?{query}", height=2000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=120_000)
    wait_idle(page)
    expected = ["[PAD]", "[CLS]", "hungry", "giant", "[SEP]"]
    assert wait_for_labels(page, 1, expected) == expected  # the decoder reads the linked text
    titles = chart_titles(page)
    assert len(titles) == 4 and all("untrained (random weights)" in t for t in titles)
    assert titles[0].startswith("Encoder self-attention") and "layer 0, head 2" in titles[0]
    assert page.get_by_text("Its weights are random").count() == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "cross_attention.png", full_page=True)
    page.close()


def test_a_link_restores_the_scaling_page_roofline(server, browser):
    page = open_page(browser, f"{server}/scaling?gpu=H200", height=2200)
    page.locator('[data-testid="stPlotlyChart"] text.legendtext', has_text="MHA bound, H200").first.wait_for(
        timeout=120_000)  # the linked GPU's roofline is drawn
    wait_idle(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "scaling.png", full_page=True)
    page.close()


def download(page, key: str) -> bytes:
    """Click the export button with widget key `key` and return the file the browser saves."""
    with page.expect_download(timeout=120_000) as saved:
        page.locator(f".st-key-{key} button").filter(visible=True).first.click()
    return saved.value.path().read_bytes()


def test_exports_save_the_numbers_a_server_rendered_png_and_vector_files_for_papers(server, browser):
    query = urllib.parse.urlencode({"text": "the cat saw the dog", "model": "minilm", "layer": "3", "head": "7"})
    page = open_page(browser, f"{server}/?{query}", height=1600)
    page.get_by_text("Layer 3, head 7").first.wait_for(timeout=120_000)
    wait_idle(page)
    table = download(page, "csv-head").decode()
    header, *rows = table.splitlines()
    assert header == "query \\ key,#0 [CLS],#1 the,#2 cat,#3 saw,#4 the,#5 dog,#6 [SEP]"
    assert len(rows) == 7 and all(abs(sum(map(float, row.split(",")[1:])) - 1) < 3e-3 for row in rows)  # float16
    layer = json.loads(download(page, "json-grid"))
    assert (layer["model"], layer["layer"]) == ("minilm", 3) and len(layer["weight"]) == 12  # every head
    if png_export_available():
        png = download(page, "png-head")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == 2400  # 1200 px at 2x
        svg = download(page, "svg-head")
        texts = svg_texts(svg)  # for papers: labels stay text, as on screen
        assert "Layer 3, head 7" in texts and {"[CLS]", "cat", "dog", "[SEP]"} <= set(texts)
        assert row_labels_fit(svg) and b"#000001" not in svg  # not Streamlit's template: labels are not cut off
        pages, text, fonts = pdf_pages_and_fonts(download(page, "pdf-head"))
        assert pages == 1 and fonts and "Layer 3, head 7" in text
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


def test_a_link_restores_a_deployment_on_the_kv_page(server, browser):
    query = "config=deepseek-v3&weights_dtype=fp8&gpus=8&parallel=dp-attention&tokens=32768&batch=64"
    page = open_page(browser, f"{server}/kv_cache?{query}", height=4200)
    page.get_by_text("Decode ceilings on 8×H200 (dp-attention)").first.wait_for(timeout=180_000)
    wait_idle(page)
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert "8×H200 (dp-attention), fp8 weights, bf16 cache, 64 sequences of 32,768 tokens" in main
    assert page.get_by_text("data-parallel attention").first.is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "kv_cache_deployment.png", full_page=True)
    page.close()


@pytest.mark.parametrize("config, opened", [
    ("deepseek-v3", "8×H200 (dp-attention), fp8 weights"),
    ("llama-3-70b", "2×H100 SXM (tp), bf16 weights"),
    ("smollm2-135m", "1×H200 (tp), bf16 weights"),
])
def test_each_reference_model_opens_on_a_deployment_that_serves_it(server, browser, config, opened):
    """At 1280 px, the model alone in the link: the page opens on a deployment that serves it, draws its ceilings
    against context and batch, and names the GPU's figures and sources (screenshots in test-artifacts)."""
    page = browser.new_page(viewport={"width": 1280, "height": 4400})
    page.goto(f"{server}/kv_cache?config={config}")
    wait_idle(page, 180_000)
    page.get_by_text(f"Decode ceilings on {opened.split(',')[0]} against batch").first.wait_for(timeout=180_000)
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert opened in main and "Each " in main and "datasheet" in main
    assert "does not fit on" not in main  # no warning: the default deployment serves the model
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"kv_cache_default_{config}.png", full_page=True)
    page.close()


def test_the_variant_lab_converts_and_measures_in_a_browser(server, browser):
    page = open_page(browser, f"{server}/variant_lab?variant=mla&latent_rank=192", height=5000, timeout_ms=600_000)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=600_000)
    wait_idle(page, 600_000)
    metrics = page.locator('[data-testid="stMetric"]').all_inner_texts()
    assert any(m.startswith("KV values / token / layer") and "192" in m for m in metrics)
    assert any(m.startswith("Perplexity") for m in metrics)
    assert "Llama architecture, 30 layers" in page.locator('[data-testid="stMain"]').inner_text()  # SmolLM2, by default
    page.get_by_text("mla naive r=192 data: layer 0, head 0").first.wait_for(timeout=120_000)
    page.get_by_text("Uptrain this variant and the control").wait_for(timeout=120_000)
    assert "Estimated" in page.get_by_text("Runs of 32 steps").inner_text()  # the time estimate comes first
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "variant_lab.png", full_page=True)
    page.close()
