"""The Python API (explorer.api) on the real SmolLM2: labelled arrays, conversions, KV numbers, figures saved
as SVG and PDF for papers, and the README's "Python" example run as written."""

import re
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from explorer import api, export
from explorer.run import run_attention
from tests.vector import pdf_pages_and_fonts, row_labels_fit, svg_texts

TEXT = "The giant ate the apple because it was hungry"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smollm2():
    return api.load("smollm2", device="cpu")  # shared with the README's example below (loaded once per device)


@pytest.fixture(scope="module")
def seen(smollm2):
    return api.attention(smollm2, TEXT)


def test_attention_is_the_runs_weights_with_a_label_on_every_axis(smollm2, seen):
    run = run_attention(smollm2, TEXT)
    T = len(run.tokens)
    weights = seen.weights
    assert weights.values.shape == (30, 9, T, T) and list(weights.axes) == ["layer", "head", "query", "key"]
    assert weights.axes["layer"][29] == "L29" and weights.axes["head"][8] == "H8"
    assert seen.tokens == run.tokens and weights.axes["key"][1] == f"#1 {run.tokens[1]}"
    np.testing.assert_allclose(weights.values, run.attentions, atol=1e-6)
    head = seen.head(3, 7)
    assert head.values.shape == (T, T) and list(head.axes) == ["query", "key"]
    np.testing.assert_allclose(head.values.sum(-1), 1, atol=1e-5)  # each query's weights sum to 1
    assert seen.layer(3).values.shape == (9, T, T) and head.about["layer"] == 3
    assert not seen.mask(0).values[0, 1] and seen.mask(0).values[1, 0]  # causal: no looking ahead
    with pytest.raises(ValueError, match="choose a head from 0 to 8"):
        seen.head(3, 9)


def test_a_conversion_runs_like_a_model_and_keeps_its_cache_by_the_formula(smollm2):
    mqa = api.convert(smollm2, "mqa")
    assert mqa.loaded.model is not smollm2.model  # a copy: the original is never changed
    assert (api.cache_values(smollm2), api.cache_values(mqa)) == (384, 128)  # 2 x 3 x 64, 2 x 1 x 64
    converted = api.attention(mqa, TEXT)
    assert converted.variant == "mqa kv=1 mean" and converted.kv_heads == 1
    assert converted.weights.values.shape[:2] == (30, 9)
    with pytest.raises(ValueError, match="choose 1, 3 or 9 KV heads"):
        api.convert(smollm2, "gqa", kv_heads=2)


def test_kv_numbers_for_any_config_match_the_command_line():
    report = api.kv_cache("llama-3-8b", tokens=131_072, dtype="bf16")
    assert report.size.bytes_per_token == 128 * 1024  # 32 layers x 2 x 8 KV heads x 128 dims x 2 bytes
    assert report.size.kv_cache_bytes == 16 * 2**30
    legends = [size.layout.legend for size in report.variants]
    assert "GQA (8 KV heads), as built" in legends and "MQA (1 KV head)" in legends
    assert report.longest_context["H200"] > report.longest_context["RTX 4090"] > 0
    assert {row["variant"] for row in report.rows} == set(legends)


def test_charts_are_the_apps_figures(seen):
    figure = api.heatmap(seen, 3, 7)
    assert isinstance(figure, go.Figure) and figure.layout.title.text == "Layer 3, head 7"
    assert list(figure.layout.yaxis.ticktext) == seen.tokens  # the same labels as on screen
    grid = api.heads(seen, 3)
    assert "H4 · KV1" in [note.text for note in grid.layout.annotations]  # GQA: 3 query heads per KV head
    assert api.mask(seen, 0).layout.title.text.startswith("Mask: causal")
    kv = api.kv_chart("llama-3-8b")
    assert {trace.name for trace in kv.data} >= {"MQA (1 KV head)", "GQA (8 KV heads), as built"}


@pytest.mark.skipif(not export.png_export_available(), reason="vector export renders through Chromium")
def test_a_heatmap_saves_as_svg_with_its_token_labels_and_as_a_one_page_pdf(seen, tmp_path):
    from pypdf import PdfReader

    figure = api.heatmap(seen, 3, 7)
    svg = api.save(figure, tmp_path / "head.svg").read_bytes()
    texts = svg_texts(svg)
    assert "Layer 3, head 7" in texts and set(seen.tokens) <= set(texts)  # labels stay text, as on screen
    assert row_labels_fit(svg)
    pdf = api.save(figure, tmp_path / "head.pdf", size="column").read_bytes()
    pages, text, fonts = pdf_pages_and_fonts(pdf)
    assert pages == 1 and fonts, fonts  # the fonts it uses are in the file
    assert "Layer 3, head 7" in text and "giant" in text
    page = PdfReader(tmp_path / "head.pdf").pages[0]  # one column of a paper wide, the chart's height
    assert (float(page.mediabox.width), float(page.mediabox.height)) == pytest.approx((3.5 * 72, 460 * 0.75), abs=0.5)
    short = PdfReader(api.save(figure, tmp_path / "short.pdf", size=5, height=240)).pages[0]
    assert (float(short.mediabox.width), float(short.mediabox.height)) == pytest.approx((5 * 72, 240 * 0.75), abs=0.5)
    with pytest.raises(ValueError, match=r"\.svg, \.pdf or \.png"):
        api.save(figure, tmp_path / "head.jpg")
    with pytest.raises(ValueError, match="'column'"):
        api.save(figure, tmp_path / "head.pdf", size="poster")


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)  # the example saves its figures in the current folder
    namespace = {}
    exec(compile(example, "README.md (Python)", "exec"), namespace)  # noqa: S102  (our own README)
    assert namespace["seen"].weights.values.shape[:2] == (30, 9)
    assert svg_texts((tmp_path / "head.svg").read_bytes()) and pdf_pages_and_fonts((tmp_path / "head.pdf").read_bytes())[0] == 1


def test_figures_made_where_streamlit_is_imported_still_export_with_room_for_their_labels(seen):
    import plotly.io as pio
    import streamlit  # noqa: F401  (importing it makes its template every figure's default)

    before = pio.templates.default
    pio.templates.default = "streamlit"  # as in the app, whatever ran before
    try:
        figure = api.heatmap(seen, 3, 7)
    finally:
        pio.templates.default = before
    assert figure.layout.template.layout.colorway[0] == export.STREAMLIT_PLACEHOLDER  # made as in the app
    copy = export.for_files(figure)
    assert copy.layout.template.layout.yaxis.automargin and copy.layout.yaxis.ticktext == figure.layout.yaxis.ticktext
    plain = go.Figure(figure).update_layout(template="plotly")
    assert export.for_files(plain) is plain  # a template of one's own is kept


def test_an_encoder_runs_converts_and_is_measured_by_its_embeddings(minilm):
    seen = api.attention(minilm, "the cat saw the dog")
    assert seen.tokens[0] == "[CLS]" and seen.mask(5).values.all()  # bidirectional: no mask
    mqa = api.convert(minilm, "mqa")
    measured = api.quality(minilm, mqa, texts=4)
    assert measured.texts == 4 and 0 < measured.embedding_cosine < 1  # moved, not identical, not unrelated
    assert api.quality(minilm, minilm, texts=4).embedding_cosine == pytest.approx(1.0)
    report = api.kv_cache(minilm)
    assert report.size.kv_cache_bytes == 0 and "keeps no KV cache" in report.size.explanation
    with pytest.raises(ValueError, match="encoder"):
        api.kv_chart(minilm)
