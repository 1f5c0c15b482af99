"""Every input a user can reach gets a clear message and breaks nothing: odd and hostile text, hostile links,
impossible variant settings, unknown model ids, and runs or models too large for memory (the memory guard).
Tried on the explorer's functions with real models (property-based where it fits) and on every page."""

from __future__ import annotations

import importlib
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings as hypothesis_settings, strategies as st
from streamlit.testing.v1 import AppTest
from transformers import LlamaConfig

from explorer import guard
from explorer.catalogue import CATALOGUE
from explorer.kv import reference_models
from explorer.loading import ModelLoadError, load_model
from explorer.run import MAX_TOKENS, overview_attention, run_attention
from explorer.settings import Settings
from explorer.state import CHOICES, INT_RANGES, MAX_TEXT_CHARS, ViewState, parse_query, to_query
from explorer.variants import VariantSpec, attention_shape, convert
from explorer.variants.spec import check_mla, target_kv_heads

convert_module = importlib.import_module("explorer.variants.convert")  # (the package exports a function of that name)

APP = "../app.py"
EMPTY = "type a sentence"  # what the run functions say about empty text

# Text a user can type or paste. Each is run through both models and shown on the pages.
HOSTILE_TEXTS = {
    "empty": "",
    "spaces": "   ",
    "whitespace": "\n\t \r\n",
    "emoji": "I ❤️ 🍕! 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 🇫🇷 and 🧑🏽‍💻",
    "right-to-left": "مرحبا بالعالم שלום עולם and English",
    "zero-width": "zero\u200bwidth\u200c\u200djoin\ufeffer\u2060s",
    "zero-width only": "\u200b\u200c\u200d\ufeff",
    "bidi override": "abc\u202edcba\u202c\u2066isolate\u2069",
    "control": "bell\x07 nul\x00 escape\x1b[31m red \x7f del \x08",
    "html": "<script>alert('x')</script><b>bold</b> <img src=x onerror=alert(1)>",
    "markdown": "# title\n**bold** [link](javascript:alert(1)) $x^2$ `code` | a | b |",
    "combining": "Z̷̢͓̈a̸̡̓l̶̰̎g̴̱̈o̵͙͝ t̷e̸x̶t̵",
    "one character": "a",
    "repeated token": "the " * 300,
    "long word": "x" * 5000,
    "mixed scripts": "日本語のテキスト 中文文本 한국어 текст Ελληνικά हिन्दी",
    "lone surrogate escaped": "\\ud800 and \\u0000 as literal text",
}
LONG_TEXT = "The giant ate the apple because it was hungry. " * 2200  # ~103,000 characters


# --- Text through the run functions, on both real models ----------------------------------------------------------


@pytest.fixture(scope="module")
def models(smollm2, minilm):
    return {"smollm2": smollm2, "minilm": minilm}


def check_run(run, text: str, max_tokens: int) -> None:
    """A run of any text: tokens and weights agree, every allowed row sums to 1, and nothing is NaN."""
    L, H, T, _ = run.attentions.shape
    assert len(run.tokens) == len(run.token_ids) == T and 1 <= T <= max_tokens
    assert all(isinstance(token, str) and token for token in run.tokens)
    assert np.isfinite(run.attentions).all()
    np.testing.assert_allclose(run.attentions.sum(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", list(HOSTILE_TEXTS))
@pytest.mark.parametrize("model", ["smollm2", "minilm"])
def test_hostile_text_runs_or_asks_for_a_sentence(models, model, name):
    text = HOSTILE_TEXTS[name]
    if not text.strip():
        with pytest.raises(ValueError, match=EMPTY):
            run_attention(models[model], text)
        with pytest.raises(ValueError, match=EMPTY):
            overview_attention(models[model], text)
        return
    check_run(run_attention(models[model], text), text, MAX_TOKENS)
    overview = overview_attention(models[model], text, 512)
    assert np.isfinite(overview.pooled).all() and len(overview.block_labels) == overview.pooled.shape[-1]


@pytest.mark.parametrize("model", ["smollm2", "minilm"])
def test_100000_characters_are_cut_to_the_token_limit_and_say_so(models, model):
    run = run_attention(models[model], LONG_TEXT)
    assert run.truncated and len(run.tokens) == MAX_TOKENS
    check_run(run, LONG_TEXT, MAX_TOKENS)


def test_a_context_longer_than_the_model_accepts_is_refused_with_a_sentence(minilm):
    with pytest.raises(ValueError, match="reads at most 512 tokens; choose a context of 512 tokens or fewer"):
        overview_attention(minilm, LONG_TEXT, 1024)


TEXT_ALPHABET = st.characters(codec="utf-8", exclude_categories=["Cs"])  # any character a browser can send
ODD_CHARACTERS = st.sampled_from(list("\u200b\u200d\ufeff\u202e\x00\x07\x1b\n\t<>&\"'`🍕👨‍👩‍👧مש"))


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(st.text(TEXT_ALPHABET, max_size=20), ODD_CHARACTERS), max_size=12).map("".join),
       model=st.sampled_from(["smollm2", "minilm"]))
def test_any_text_runs_or_asks_for_a_sentence(models, text, model):
    if not text.strip():
        with pytest.raises(ValueError, match=EMPTY):
            run_attention(models[model], text)
        return
    check_run(run_attention(models[model], text), text, MAX_TOKENS)


# --- Links: hostile URL parameters --------------------------------------------------------------------------------

PARAMETER_NAMES = ["text", "model", "config", *INT_RANGES, *CHOICES, "unknown", "", "text\x00", "<b>"]
HOSTILE_VALUES = st.one_of(
    st.text(TEXT_ALPHABET, max_size=60),
    st.sampled_from(["", " ", "-1", "0", "1e9", "NaN", "inf", "0x10", "9" * 400, "<script>alert(1)</script>",
                     "../../etc/passwd", "javascript:alert(1)", "\x00", "%00", "null", "[]", "{}", "true"]),
    st.integers(-10**30, 10**30).map(str),
    st.tuples(st.sampled_from(["a", " ", "<", "\u200b", "🍕"]), st.integers(MAX_TEXT_CHARS - 5, MAX_TEXT_CHARS + 50))
    .map(lambda character_count: character_count[0] * character_count[1]),  # about the longest text a link keeps
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(PARAMETER_NAMES), st.text(max_size=10)), HOSTILE_VALUES, max_size=8))
def test_any_link_gives_a_usable_view_and_sentences(params):
    state, notices = parse_query(params)
    assert isinstance(state, ViewState)
    assert state.text.strip() and len(state.text) <= MAX_TEXT_CHARS
    for name, (low, high) in INT_RANGES.items():
        value = getattr(state, name)
        assert value is None or low <= value <= high
    for name, choices in CHOICES.items():
        assert getattr(state, name) in choices
    assert state.model.isprintable() and len(state.model) <= 200 and "<" not in state.model
    for notice in notices:
        assert notice.isprintable() and len(notice) < 400 and notice.rstrip("…").endswith(".")
    assert parse_query(to_query(state)) == (state, [])  # a link made from the view restores it exactly


# --- Impossible variant settings ----------------------------------------------------------------------------------


@hypothesis_settings(max_examples=200, deadline=None)
@given(kv_heads=st.one_of(st.none(), st.integers(-5, 40)), variant=st.sampled_from(["gqa", "mha", "mqa", "original"]))
def test_any_kv_head_count_is_accepted_or_explained(kv_heads, variant):
    shape = attention_shape(LlamaConfig(num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                                        num_hidden_layers=30), "SmolLM2")
    try:
        chosen = target_kv_heads(VariantSpec(variant, kv_heads=kv_heads), shape)
    except ValueError as error:
        assert str(error) == "SmolLM2 has 9 query heads and 3 KV heads; choose 1, 3 or 9 KV heads."
        assert variant == "gqa" and kv_heads not in (1, 3, 9)
        return
    assert chosen in (1, 3, 9)


@hypothesis_settings(max_examples=200, deadline=None)
@given(rank=st.integers(-10, 2000), rope_dims=st.integers(-4, 130), form=st.sampled_from(["naive", "decoupled"]),
       attn_path=st.sampled_from(["naive", "absorb"]), ranks_given=st.integers(0, 31))
def test_any_mla_setting_is_accepted_or_explained(rank, rope_dims, form, attn_path, ranks_given):
    shape = attention_shape(LlamaConfig(num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                                        num_hidden_layers=30), "SmolLM2")
    layer_ranks = None if ranks_given == 30 or ranks_given == 0 else (rank,) * ranks_given
    spec = VariantSpec("mla", form=form, latent_rank=rank, rope_dims=rope_dims, attn_path=attn_path,
                       layer_ranks=layer_ranks)
    try:
        ranks = check_mla(spec, shape)
    except ValueError as error:
        message = str(error)
        assert message.endswith(".") and ("choose" in message or "give one latent rank per layer" in message)
        return
    assert len(ranks) == 30 and all(1 <= r <= 3 * 128 for r in ranks)


@pytest.mark.parametrize("spec, message", [
    (VariantSpec("gqa", kv_heads=2), "choose 1, 3 or 9 KV heads"),
    (VariantSpec("gqa", kv_heads=0), "choose 1, 3 or 9 KV heads"),
    (VariantSpec("gqa"), "choose 1, 3 or 9 KV heads"),
    (VariantSpec("mla", latent_rank=0), "choose a latent rank between 1 and 384"),
    (VariantSpec("mla", latent_rank=10**6), "choose a latent rank between 1 and 384"),
    (VariantSpec("mla", form="decoupled", rope_dims=7), "choose an even rope_dims"),
    (VariantSpec("mla", attn_path="absorb"), "choose form='decoupled'"),
    (VariantSpec("mla", layer_ranks=(64, 64)), "give one latent rank per layer"),
])
def test_impossible_variants_are_refused_before_any_work_and_the_model_is_untouched(smollm2, spec, message,
                                                                                     monkeypatch):
    before = {name: tensor.clone() for name, tensor in list(smollm2.model.state_dict().items())[:8]}
    work = []  # the conversion's first steps of real work: a calibration pass, then copying the model
    monkeypatch.setattr(convert_module, "calibrate", lambda *args, **kwargs: work.append("calibrate"))
    monkeypatch.setattr(convert_module, "fresh_copy", lambda *args, **kwargs: work.append("copy"))
    with pytest.raises(ValueError, match=message):
        convert(smollm2, spec)
    assert work == []  # refused by the checks, before any calibration or copy
    for name, tensor in before.items():
        assert torch_equal(smollm2.model.state_dict()[name], tensor)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_a_variant_an_encoder_cannot_have_is_refused_with_a_sentence(minilm):
    before = {name: tensor.clone() for name, tensor in minilm.model.state_dict().items()}
    with pytest.raises(ValueError, match="form='naive'"):  # BERT has no RoPE to decouple
        convert(minilm, VariantSpec("mla", form="decoupled", attn_path="absorb", latent_rank=128))
    assert all(torch.equal(tensor, before[name]) for name, tensor in minilm.model.state_dict().items())


# --- Model ids: unknown, private, malformed -----------------------------------------------------------------------

BAD_MODEL_IDS = [
    "", " ", "someone/private-model", "no-such-model", "<script>alert(1)</script>", "a" * 5000, "x/y/z",
    "https://huggingface.co/gpt2", "../../etc/passwd", "/etc", "/dev/null", "~", ".", "\x00", "model\x00name",
    "C:\\Windows", "owner/name with spaces", "🍕/🍕", "~0", "~nosuchuser/model",
]


@pytest.mark.parametrize("key", BAD_MODEL_IDS)
def test_a_bad_model_id_is_refused_with_a_sentence(monkeypatch, key):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as refusal:
        load_model(key, device="cpu", settings=Settings(offline=True))
    message = str(refusal.value)
    assert message.endswith(".") and len(message) < 800 and "Traceback" not in message


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.text(TEXT_ALPHABET, max_size=40))
def test_any_model_id_loads_or_is_refused_with_a_sentence(key):
    assume(key not in CATALOGUE)
    for chosen in [Settings(offline=True), Settings(hosted=True, offline=True, allowed_models=("smollm2", "minilm"),
                                                  allow_local_paths=False)]:
        with pytest.raises(ModelLoadError):
            load_model(key, device="cpu", settings=chosen)


# --- The memory guard ---------------------------------------------------------------------------------------------


def test_the_estimate_holds_the_attention_weights_a_run_really_keeps(smollm2, minilm):
    for model in (smollm2, minilm):
        for tokens in (16, 128):
            run = run_attention(model, "word " * tokens)
            estimate = guard.estimate_run(model.config, len(run.tokens))
            assert run.attentions.nbytes <= estimate.attention_bytes <= 3 * run.attentions.nbytes


def peak_memory_of(action) -> int:
    """Bytes the resident memory of this process grew by, at its peak, while `action` ran."""
    process = psutil.Process()
    start = process.memory_info().rss
    peak, done = [start], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
    finally:
        done.set()
        sampler.join()
    return peak[0] - start


def test_the_estimate_covers_the_memory_a_real_run_takes(smollm2):
    text = "The giant ate the apple because it was hungry. " * 60  # ~600 tokens, cut to 384
    run_attention(smollm2, text, 384)  # warm: the weights' pages are read once, allocator pools fill
    measured = peak_memory_of(lambda: run_attention(smollm2, text, 384))
    estimate = guard.estimate_run(smollm2.config, 384)
    assert measured <= 1.25 * estimate.total_bytes, (measured, estimate)


def test_a_run_over_the_limit_is_refused_with_what_would_fit(smollm2):
    limit = 100 * 10**6
    with pytest.raises(guard.MemoryLimitError) as refusal:
        guard.check_run(smollm2.config, 2048, "SmolLM2", limit_bytes=limit)
    message = str(refusal.value)
    assert message.startswith("Running 2,048 tokens through SmolLM2 would need about")
    assert "attention" in message and "KV cache" in message and "at most about" in message
    fitting = int(message.split("at most about ")[1].split(" tokens")[0].replace(",", ""))
    assert guard.check_run(smollm2.config, fitting, limit_bytes=limit).total_bytes <= limit
    with pytest.raises(guard.MemoryLimitError):
        guard.check_run(smollm2.config, fitting + 1, limit_bytes=limit)


@hypothesis_settings(max_examples=100, deadline=None)
@given(tokens=st.integers(1, 1 << 16), keeps=st.sampled_from(["all_layers", "one_layer"]),
       name=st.sampled_from(sorted(reference_models())))
def test_estimates_grow_with_tokens_for_every_reference_model(tokens, keeps, name):
    config = _config(name)
    smaller = guard.estimate_run(config, tokens, keeps=keeps)
    larger = guard.estimate_run(config, tokens + 1, keeps=keeps)
    assert 0 < smaller.total_bytes <= larger.total_bytes


def _config(name: str):
    """A transformers config object of a reference model, built offline from its JSON."""
    from transformers import PretrainedConfig

    return PretrainedConfig(**{k: v for k, v in reference_models()[name].items() if not k.startswith("_")})


def test_a_model_too_large_for_memory_is_refused_before_its_weights_are_read(tmp_path, minilm):
    folder = minilm.entry.package_path()
    small = Settings(memory_limit_bytes=20 * 10**6)
    with pytest.raises(ModelLoadError, match=r"about 91 MB of weights .* more than the 20 MB .* pick a smaller model"):
        load_model(str(folder), device="cpu", settings=small)
    with pytest.raises(guard.MemoryLimitError, match="Llama-2-7B has about 27 GB of weights"):
        guard.check_model(_config("llama-2-7b"), "Llama-2-7B", limit_bytes=16 * 10**9)


def test_runs_in_flight_count_against_each_other(smollm2):
    ledger = guard.MemoryLedger()
    one = guard.estimate_run(smollm2.config, 256).total_bytes
    limit = int(1.5 * one)  # room for one run of 256 tokens, not two
    with ledger.admit(smollm2.config, 256, "SmolLM2", limit_bytes=limit):
        assert ledger.reserved_bytes() == one
        with pytest.raises(guard.MemoryLimitError, match="try again in a moment|at most about"):
            with ledger.admit(smollm2.config, 256, "SmolLM2", limit_bytes=limit):
                pass
    assert ledger.reserved_bytes() == 0
    with ledger.admit(smollm2.config, 256, "SmolLM2", limit_bytes=limit):  # room again once the first ended
        pass


def test_a_text_is_admitted_by_its_token_count_and_refused_over_the_limit(smollm2):
    text = "The giant ate the apple because it was hungry. " * 100  # ~1000 tokens, cut to 512
    with guard.admit_text(smollm2, text, 512, settings=Settings(memory_limit_bytes=10**9)) as estimate:
        assert estimate.num_tokens == 512 and guard.LEDGER.reserved_bytes() == estimate.total_bytes
    assert guard.LEDGER.reserved_bytes() == 0
    with pytest.raises(guard.MemoryLimitError, match="Running 512 tokens through SmolLM2-135M-Instruct"):
        with guard.admit_text(smollm2, text, 512, keeps="one_layer", settings=Settings(memory_limit_bytes=10**8)):
            pass


def test_the_limit_comes_from_settings_or_available_memory():
    assert guard.memory_limit(Settings(memory_limit_bytes=123)) == 123
    available = guard.available_memory()
    assert 0 < available <= psutil.virtual_memory().available * 1.05
    assert 0 < guard.memory_limit(Settings(memory_fraction=0.5)) <= 0.55 * psutil.virtual_memory().available


# --- The pages ----------------------------------------------------------------------------------------------------

PAGES = ["views/attention.py", "views/self_vs_causal.py", "views/cross_attention.py", "views/kv_cache.py",
         "views/scaling.py", "views/variant_lab.py"]
TEXTS_PER_PAGE = {  # every hostile text on the attention page; a spread of them on the other text pages
    "views/attention.py": [*HOSTILE_TEXTS],
    "views/self_vs_causal.py": ["empty", "html", "control", "zero-width only", "emoji", "right-to-left"],
    "views/cross_attention.py": ["spaces", "html", "bidi override", "mixed scripts"],
}


@pytest.fixture
def offline_app(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return AppTest.from_file(APP, default_timeout=300)


@pytest.mark.slow
def test_hostile_text_on_every_text_page_shows_as_text(offline_app):
    """Each hostile text typed into the sidebar, on the attention and self-vs-causal pages: no exception, an
    empty text asks for a sentence, and markup is shown as text (escaped), never run."""
    offline_app.run()
    for page, names in TEXTS_PER_PAGE.items():
        offline_app.switch_page(page).run()
        for name in [*names, "100,000 characters"]:
            text = HOSTILE_TEXTS.get(name, LONG_TEXT)
            offline_app.sidebar.text_area[0].set_value(text).run()
            assert not offline_app.exception, (page, name, [e.value for e in offline_app.exception])
            if not text.strip():
                assert any(EMPTY in i.value for i in offline_app.info), (page, name)
        offline_app.sidebar.text_area[0].set_value(HOSTILE_TEXTS["html"]).run()
        bodies = " ".join(m.value for m in offline_app.markdown)
        assert "<script>" not in bodies and "<img src" not in bodies, page


HOSTILE_LINKS = [
    {"text": "\x00\x07\x1b", "model": "../../etc/passwd", "layer": "-1", "head": "9" * 400},
    {"model": "<script>alert(1)</script>", "variant": "<b>mla</b>", "kv_heads": "0", "latent_rank": "NaN",
     "rope_dims": "1e9"},
    {"model": "someone/private-model", "config": "javascript:alert(1)", "tokens": "-5", "batch": "0x10",
     "dtype": "fp64"},
    {"model": "minilm", "layer": "5", "head": "11", "config": "../../../../etc/passwd", "tokens": str(1 << 40)},
    {"text": "A" * (MAX_TEXT_CHARS + 10), "model": "", "config": "", "unknown": "x", "layer": "", "head": " 3 "},
]


@pytest.mark.slow
@pytest.mark.parametrize("params", HOSTILE_LINKS, ids=["controls", "markup", "private", "paths", "overlong"])
def test_a_hostile_link_on_every_page_shows_notices_not_a_traceback(offline_app, params):
    offline_app.query_params.update(params)
    offline_app.run()
    assert not offline_app.exception, [e.value for e in offline_app.exception]
    for page in PAGES[1:]:
        offline_app.switch_page(page).run()
        assert not offline_app.exception, (page, [e.value for e in offline_app.exception])


@pytest.mark.slow
def test_a_model_that_does_not_fit_is_refused_on_the_page(offline_app, monkeypatch, minilm):
    monkeypatch.setenv("ATTENTION_EXPLORER_MEMORY_LIMIT", "20MB")
    offline_app.query_params.update({"model": str(minilm.entry.package_path())})
    offline_app.run()
    assert not offline_app.exception
    assert any("more than the 20 MB this server can spare" in e.value for e in offline_app.error)


@pytest.mark.slow
def test_a_run_that_does_not_fit_is_refused_on_the_page(offline_app, monkeypatch):
    monkeypatch.setenv("ATTENTION_EXPLORER_MEMORY_LIMIT", "30MB")
    offline_app.query_params.update({"text": "The giant ate the apple because it was hungry. " * 40})
    offline_app.run()
    assert not offline_app.exception
    assert any("this server can spare for one run" in m.value for m in offline_app.warning)


@pytest.mark.slow
def test_a_context_longer_than_the_model_accepts_shows_a_sentence_on_the_page(offline_app):
    offline_app.query_params.update({"model": "minilm"})
    offline_app.run()
    offline_app.sidebar.selectbox[0].set_value(1024).run()
    assert not offline_app.exception, [e.value for e in offline_app.exception]
    assert any("reads at most 512 tokens" in i.value for i in offline_app.info)


@pytest.mark.slow
def test_an_impossible_variant_in_a_link_is_replaced_with_a_notice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    app = AppTest.from_file(APP, default_timeout=600)
    app.query_params.update({"variant": "gqa", "kv_heads": "2"})
    app.run()
    app.switch_page("views/variant_lab.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("choose 1, 3 or 9 KV heads" in w.value for w in app.warning)
