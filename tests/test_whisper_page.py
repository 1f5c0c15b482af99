"""The cross-attention page on Whisper tiny.en: headless from a shared link, and once in a real browser with audio."""

import urllib.parse

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import audio as audio_module
from explorer.charts.hearing import attention_over_audio, frames_heatmap, heads_over_audio, waveform_envelope
from tests.browser import ARTIFACTS, launch, streamlit_server, wait_idle
from tests.specs import array, figures

SENTENCE = "We will meet at the station tomorrow morning."
LINK = {"text": SENTENCE, "decoder_layer": "2", "cross_head": "5", "encoder_layer": "1", "under": "spectrogram"}


def test_the_page_opens_on_whisper_from_a_link():
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.query_params.update(LINK)
    app.run()
    app.switch_page("views/cross_attention.py").run()
    assert not app.exception and not app.error
    heard = next(m.value for m in app.markdown if m.value.startswith("**Whisper heard:**"))
    assert "we will meet at the station tomorrow morning" in heard.lower() and "word error rate" in heard
    specs = figures(app)
    cross = specs["Cross-attention, decoder layer 2, head 5 (an alignment head): each decoder token over the sound"]
    rows = cross["layout"]["yaxis"]["ticktext"]
    assert rows[:3] == ["<|startoftranscript|>", "<|notimestamps|>", " We"] and rows[-1] == "<|endoftext|>"
    weights = array(cross["data"][0]["z"])  # (tokens, frames)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)  # each row over the clip's frames
    spectrogram = array(cross["data"][1]["z"])
    assert spectrogram.shape == (80, 2 * weights.shape[1])  # the log-mel under it, two 10 ms hops per frame
    assert cross["layout"]["xaxis2"]["range"][1] == pytest.approx(weights.shape[1] * 0.02)  # one time axis
    assert "Encoder self-attention over the sound<br>layer 1, head 5" in specs
    assert "Decoder causal self-attention<br>layer 2, head 5" in specs
    assert any(title.startswith("The 8 alignment heads, averaged") for title in specs)
    words = [b for b in app.button if b.key and b.key.startswith("word-")]
    assert [b.label.strip(".").lower() for b in words] == SENTENCE.strip(".").lower().split()
    share = app.sidebar.code[0].value
    assert "decoder_layer=2" in share and "under=spectrogram" in share  # the link names what is shown
    app.button(key="word-5").click().run()  # "station"
    assert not app.exception
    assert any(c.value.startswith("Playing 'station'") for c in app.caption)
    assert len(app.get("audio")) == 2  # the clip, and the word's span


def test_the_page_says_what_to_do_without_espeak_ng(monkeypatch):
    monkeypatch.setattr(audio_module.shutil, "which", lambda name: None)
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.query_params.update({"text": "A sentence nobody has spoken here yet."})
    app.run()
    app.switch_page("views/cross_attention.py").run()
    assert not app.exception
    assert any("espeak-ng is not installed" in e.value and "record or upload" in e.value for e in app.error)


def test_audio_charts_share_one_time_axis():
    samples = np.sin(np.arange(16_000) / 3).astype(np.float32)  # 1 s
    weights = np.full((3, 50), 1 / 50)  # 3 tokens over 50 frames of 20 ms
    figure = attention_over_audio(weights, ["a", "b", "c"], samples, "t")
    assert figure.layout.xaxis.range == (0, 1.0) and figure.layout.xaxis2.range == (0, 1.0)
    assert figure.data[0].x[0] == pytest.approx(0.01) and figure.data[0].x[-1] == pytest.approx(0.99)
    times, lows, highs = waveform_envelope(samples, 100)
    assert len(times) == 100 and np.all(lows <= highs) and highs.max() == pytest.approx(samples.max())
    with pytest.raises(ValueError, match="3 rows but 2 row labels"):
        attention_over_audio(weights, ["a", "b"], samples, "t")
    grid = heads_over_audio(np.stack([weights, weights]), [(1, 0), (3, 4)], ["a", "b", "c"], "heads")
    assert [a.text for a in grid.layout.annotations][:2] == ["layer 1, head 0", "layer 3, head 4"]
    pooled = frames_heatmap(np.eye(900) * 0.5 + 0.5 / 900, "encoder", max_frames=300)
    assert np.asarray(pooled.data[0].z).shape == (300, 300)  # blocks of 3 frames


@pytest.mark.browser
def test_the_page_plays_the_sentence_and_a_word_in_a_real_browser():
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    query = urllib.parse.urlencode({"text": SENTENCE})
    with streamlit_server() as url, sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 4300})
        page.goto(f"{url}/cross_attention?{query}")
        page.wait_for_selector('[data-testid="stPlotlyChart"] g.heatmaplayer image', timeout=300_000)
        wait_idle(page, 300_000)
        assert page.get_by_text("Whisper heard:").count() == 1
        clip = page.locator("audio").first
        clip.evaluate("node => node.play()")  # the clip really plays in the browser
        page.wait_for_function("() => document.querySelector('audio').currentTime > 0.2", timeout=20_000)
        page.get_by_role("button", name="station", exact=True).click()
        page.wait_for_selector("text=Playing 'station'", timeout=120_000)
        wait_idle(page)
        span = page.locator("audio").nth(1)
        page.wait_for_function("() => document.querySelectorAll('audio')[1].ended", timeout=20_000)  # it played
        duration = span.evaluate("node => node.duration")
        assert 0.1 <= duration < 1.5  # the word's span, not the whole clip
        page.mouse.move(0, 0)  # no hover tooltip over the words in the screenshot
        page.wait_for_timeout(1000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "cross_attention_whisper.png", full_page=True)
        browser.close()
