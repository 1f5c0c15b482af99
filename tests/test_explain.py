"""Explanations in plain words: every topic exists, cites its papers by name, and is shown beside a chart."""

import re

import pytest
from streamlit.testing.v1 import AppTest

from explorer.explain import TOPICS, explanation


def test_every_topic_has_a_titled_text_that_cites_a_paper():
    for name in TOPICS:
        text = explanation(name)
        assert text.startswith("### "), name
        assert 60 <= len(text.split()) <= 300, (name, len(text.split()))  # short enough to read beside a chart
        assert re.search(r"\b(19|20)\d\d\b", text), f"{name} cites no paper with its year"


def test_the_names_other_pages_rely_on_exist():
    for name in ["kv_cache", "mqa_gqa", "mla", "quadratic_cost", "qkv", "self_causal", "multi_head"]:
        assert explanation(name)


def test_the_texts_say_what_they_promise():
    assert all(word in explanation("qkv") for word in ["query", "key", "value", "softmax", "Attention Is All You Need"])
    assert all(word in explanation("self_causal") for word in ["encoder", "decoder", "Cross-attention", "mask"])
    assert "Shazeer" in explanation("mqa_gqa") and "Ainslie" in explanation("mqa_gqa")
    mla = explanation("mla")
    assert all(idea in mla for idea in ["Latent compression", "Decoupled RoPE", "Weight absorption", "DeepSeek-V2"])
    assert "512 KiB per token" in explanation("kv_cache") and "T × T" in explanation("quadratic_cost")


def test_an_unknown_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="no explanation called 'kv'; choose one of: qkv"):
        explanation("kv")


def test_the_home_page_shows_explanations_beside_its_charts():
    app = AppTest.from_file("../app.py", default_timeout=180)
    app.run()
    assert not app.exception
    shown = " ".join(m.value for m in app.markdown)
    for name in ["multi_head", "self_causal", "head_summaries", "quadratic_cost"]:
        assert explanation(name).splitlines()[0] in shown
