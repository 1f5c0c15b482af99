"""KV-cache formulas against the papers' numbers, every config trap, what fits, the roofline, and the real cache
of SmolLM2 measured beside the formula."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.config import load_config, read_config, reference_models
from explorer.dtypes import DTYPE_BITS
from explorer.hardware import GPUS, gpu_named
from explorer.kv import (
    cache_bytes,
    convert_layout,
    kv_cache_size,
    measure_kv_cache,
    values_per_token_per_layer,
    variant_layouts,
)
from explorer.params import estimate_parameters, measured_weight_bytes
from explorer.roofline import decode_roofline, longest_context

KiB = 1024


# --- the papers' numbers: bf16, per token, all layers --------------------------------------------------------

@pytest.mark.parametrize(
    "name, kib_per_token",
    [
        ("llama-2-7b", 512),  # 32 layers x 2 x 32 heads x 128 x 2 bytes
        ("llama-3-8b", 128),  # 32 x 2 x 8 x 128 x 2
        ("mistral-7b", 128),
        ("llama-3-70b", 320),  # 80 x 2 x 8 x 128 x 2
        ("falcon-7b", 8),  # 32 x 2 x 1 x 64 x 2
        ("deepseek-v2", 67.5),  # 60 x (512 + 64) x 2 = 69,120 B
        ("deepseek-v3", 68.625),  # 61 x 576 x 2 = 70,272 B = 68.625 KiB, the "68.6 KiB" rounded to 0.1
    ],
)
def test_bf16_bytes_per_token_match_the_papers(name, kib_per_token):
    size = kv_cache_size(read_config(name), tokens=1, dtype="bf16")
    assert size.bytes_per_token == kib_per_token * KiB
    assert size.kv_cache_bytes == kib_per_token * KiB
    assert round(size.bytes_per_token / KiB, 1) == round(kib_per_token, 1)


def test_deepseek_v2_caches_576_values_per_layer():
    layout = read_config("deepseek-v2")
    assert (layout.attention, layout.latent_rank, layout.rope_head_dim) == ("mla", 512, 64)
    assert values_per_token_per_layer(layout) == 576
    # Table 1: MHA would cache 2 * n_h * d_h = 2 * 128 * 128 values per layer, 56.9x more than MLA
    assert values_per_token_per_layer(convert_layout(layout, "mha")) == 32768
    assert layout.fields_used["kv_lora_rank"] == 512 and layout.fields_used["qk_rope_head_dim"] == 64


def test_total_is_batch_times_tokens_times_per_token_and_dtype_scales_it():
    layout = read_config("llama-3-8b")
    assert kv_cache_size(layout, tokens=8192, batch=4, dtype="bf16").kv_cache_bytes == 4 * 8192 * 128 * KiB
    bf16 = kv_cache_size(layout, 1000, 1, "bf16").kv_cache_bytes
    assert kv_cache_size(layout, 1000, 1, "fp32").kv_cache_bytes == 2 * bf16
    assert kv_cache_size(layout, 1000, 1, "fp8").kv_cache_bytes == 1000 * 64 * KiB
    assert kv_cache_size(layout, 1000, 1, "int4").kv_cache_bytes == 1000 * 32 * KiB


# --- traps in real configs -------------------------------------------------------------------------------------

def test_falcon_multi_query_beats_num_kv_heads_71():
    raw = reference_models()["falcon-7b"]
    as_written = {**raw, "num_kv_heads": 71}  # what a loaded FalconConfig shows
    for config in (raw, as_written):
        layout = read_config(config)
        assert (layout.attention, layout.kv_heads, layout.head_dim) == ("mqa", 1, 64)
        assert any("num_kv_heads: 71 is ignored" in note for note in layout.notes)
    # the same through a transformers config object, which fills in num_kv_heads = 71 itself
    from transformers import FalconConfig

    fields = {k: v for k, v in raw.items() if not k.startswith("_") and k != "model_type"}
    falcon = FalconConfig(**fields)
    assert falcon.num_kv_heads == 71 and falcon.multi_query
    assert read_config(falcon).kv_heads == 1
    # with the new decoder architecture (Falcon-40B) num_kv_heads counts
    falcon_40b = {**as_written, "new_decoder_architecture": True, "num_kv_heads": 8, "num_attention_heads": 128,
                  "hidden_size": 8192}
    assert read_config(falcon_40b).kv_heads == 8


def test_gemma_head_dim_is_not_hidden_over_heads_and_text_config_is_read():
    layout = read_config("gemma-3-4b")
    assert (layout.num_layers, layout.query_heads, layout.kv_heads, layout.head_dim) == (34, 8, 4, 256)
    assert 2560 // 8 == 320 != layout.head_dim
    assert layout.fields_used["text_config.head_dim"] == 256
    assert any("text_config" in note for note in layout.notes)


def test_gemma_hub_file_without_heads_takes_transformers_defaults():
    """google/gemma-3-4b-it's text_config names only five fields; transformers' defaults fill in the rest."""
    hub_file = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": {
            "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
            "num_hidden_layers": 34, "sliding_window": 1024,
        },
    }
    layout = read_config(hub_file)
    assert (layout.query_heads, layout.kv_heads, layout.head_dim) == (8, 4, 256)
    assert layout.layer_windows == read_config("gemma-3-4b").layer_windows
    assert any("text_config.num_attention_heads is not in the config" in note for note in layout.notes)


def test_layer_types_give_mixed_layers_and_the_windows_cap_the_cache():
    layout = read_config("gemma-3-270m")  # 5 of every 6 layers slide over 512 tokens
    assert layout.layer_windows.count(512) == 15 and layout.layer_windows.count(None) == 3
    per_layer_token = 2 * 1 * 256 * 2  # bf16 bytes, one KV head of 256
    short = kv_cache_size(layout, tokens=400)
    assert short.kv_cache_bytes == 18 * 400 * per_layer_token  # below the window every layer grows
    long = kv_cache_size(layout, tokens=10_000)
    assert long.kv_cache_bytes == (15 * 512 + 3 * 10_000) * per_layer_token
    assert long.cached_tokens_per_layer[:6] == (512, 512, 512, 512, 512, 10_000)


def test_every_layer_sliding_stops_growing_at_the_window():
    layout = read_config("mistral-7b")
    assert set(layout.layer_windows) == {4096}
    assert kv_cache_size(layout, 4096).kv_cache_bytes == kv_cache_size(layout, 1_000_000).kv_cache_bytes
    assert longest_context(layout, gpu_named("H100 SXM").memory_bytes, 14.5e9) is None  # memory sets no limit


def test_qwen2_use_sliding_window_false_means_full_attention():
    layout = read_config("qwen2.5-7b")
    assert set(layout.layer_windows) == {None}
    assert any("use_sliding_window is false" in note for note in layout.notes)
    assert kv_cache_size(layout, 200_000).kv_cache_bytes == 200_000 * 28 * 2 * 4 * 128 * 2


def test_gpt2_field_names():
    layout = read_config("gpt2")  # n_layer, n_head, n_embd
    assert (layout.num_layers, layout.query_heads, layout.kv_heads, layout.head_dim) == (12, 12, 12, 64)
    assert layout.fields_used["n_head"] == 12 and layout.fields_used["n_embd"] == 768
    assert estimate_parameters("gpt2").total == 124_439_808  # the published GPT-2 small count


def test_old_falcon_field_names():
    old = {"model_type": "RefinedWebModel", "n_layer": 60, "n_head": 128, "n_head_kv": 8, "hidden_size": 8192}
    layout = read_config(old)  # Falcon-40B's first config: unknown to transformers, read as written
    assert (layout.num_layers, layout.kv_heads, layout.head_dim) == (60, 8, 64)
    assert any("only the fields" in note for note in layout.notes)


def test_an_encoder_keeps_no_cache():
    layout = read_config("all-minilm-l6-v2")
    assert not layout.is_decoder
    size = kv_cache_size(layout, 512)
    assert size.kv_cache_bytes == 0 and "keeps no KV cache" in size.explanation
    assert variant_layouts(layout) == []
    with pytest.raises(ValueError, match="encoder"):
        convert_layout(layout, "mqa")


def test_user_errors_are_sentences():
    layout = read_config("smollm2-135m")
    with pytest.raises(ValueError, match="choose a KV-head count that divides it: 1, 3, 9"):
        convert_layout(layout, "gqa", kv_heads=2)
    with pytest.raises(ValueError, match="choose one of fp32"):
        kv_cache_size(layout, 10, dtype="fp64")
    with pytest.raises(ValueError, match="complete config.json"):
        read_config({"hidden_size": 64})
    with pytest.raises(ValueError, match="neither a reference model"):
        load_config("no-such-model")


def test_hub_ids_say_what_to_do_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline.*reference model: all-minilm-l6-v2"):
        load_config("someone/some-model")


def test_config_from_a_file_and_a_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(reference_models()["llama-3-8b"]))
    assert read_config(tmp_path).kv_heads == 8
    assert read_config(tmp_path / "config.json").kv_heads == 8
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_every_reference_names_its_source():
    for name, config in reference_models().items():
        assert config["_source"].endswith("config.json") or "config.json on the Hugging Face hub" in config["_source"]
        read_config(config)  # every reference reads without error


# --- variants ----------------------------------------------------------------------------------------------

def test_variants_of_llama_2_7b():
    labels = [layout.label for layout in variant_layouts(read_config("llama-2-7b"))]
    assert labels == ["MHA (32 KV heads)", "GQA (8 KV heads)", "MLA (512 + 64)", "MQA (1 KV head)"]
    mla = convert_layout(read_config("llama-2-7b"), "mla")  # DeepSeek-V2's d_c = 4 d_h, d_h^R = d_h / 2
    assert values_per_token_per_layer(mla) == 4 * 128 + 64


def test_variants_keep_the_model_own_layout():
    layouts = variant_layouts(read_config("smollm2-135m"))
    assert [layout.kv_heads for layout in layouts if layout.attention != "mla"] == [9, 3, 1]
    smaller_latent = convert_layout(read_config("deepseek-v2"), "mla", latent_rank=256, rope_head_dim=32)
    assert values_per_token_per_layer(smaller_latent) == 288


# --- weights, what fits, roofline -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, published_billions",
    [("llama-2-7b", 6.74), ("llama-3-8b", 8.03), ("llama-3-70b", 70.6), ("mistral-7b", 7.24),
     ("falcon-7b", 6.92), ("qwen2.5-7b", 7.62), ("deepseek-v2", 236), ("deepseek-v3", 671)],
)
def test_parameter_estimates_are_within_one_percent_of_published(name, published_billions):
    assert estimate_parameters(name).total / 1e9 == pytest.approx(published_billions, rel=0.01)


def test_moe_active_parameters():
    assert estimate_parameters("deepseek-v2").active_per_token / 1e9 == pytest.approx(21, rel=0.03)
    assert estimate_parameters("deepseek-v3").active_per_token / 1e9 == pytest.approx(37, rel=0.03)


def test_longest_context_is_the_last_token_that_fits():
    layout = read_config("llama-3-8b")
    weights = estimate_parameters("llama-3-8b").weight_bytes("bf16")
    memory = gpu_named("RTX 4090").memory_bytes
    tokens = longest_context(layout, memory, weights)
    assert tokens == (memory - weights) // (128 * KiB)
    assert weights + kv_cache_size(layout, tokens).kv_cache_bytes <= memory
    assert weights + kv_cache_size(layout, tokens + 1).kv_cache_bytes > memory
    assert longest_context(layout, memory, weights=memory) == 0  # the weights alone fill it


def test_longest_context_with_mixed_windows():
    layout = read_config("gemma-3-270m")
    memory = 1 * 2**30
    tokens = longest_context(layout, memory, weights=0)
    assert kv_cache_size(layout, tokens).kv_cache_bytes <= memory < kv_cache_size(layout, tokens + 1).kv_cache_bytes


def test_decode_roofline():
    gpu = gpu_named("H100 SXM")
    layout = read_config("llama-2-7b")
    weights = estimate_parameters("llama-2-7b").weight_bytes("bf16")
    point = decode_roofline(layout, gpu, tokens=4096, weights=weights, batch=8)
    assert point.kv_cache_bytes == 8 * 4096 * 512 * KiB
    assert point.tokens_per_second == pytest.approx(8 * 3350e9 / (weights + point.kv_cache_bytes))
    assert point.fits
    assert not decode_roofline(layout, gpu, tokens=100_000, weights=weights, batch=8).fits
    assert {gpu.name for gpu in GPUS} >= {"RTX 4090", "L40S", "A100 80GB SXM", "H100 SXM", "H200"}
    assert all(gpu.source for gpu in GPUS)


# --- properties ----------------------------------------------------------------------------------------------

layouts = st.sampled_from([name for name, c in reference_models().items() if c["model_type"] != "bert"]).map(
    read_config
)


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(0, 2_000_000), st.integers(0, 100_000), st.sampled_from(sorted(DTYPE_BITS)))
def test_cache_grows_with_tokens(layout, tokens, more, dtype):
    longer = kv_cache_size(layout, tokens + more, 1, dtype).kv_cache_bytes
    assert longer >= kv_cache_size(layout, tokens, 1, dtype).kv_cache_bytes


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(0, 1_000_000), st.integers(1, 64))
def test_cache_is_linear_in_batch(layout, tokens, batch):
    one = kv_cache_size(layout, tokens, 1).kv_cache_bytes
    assert kv_cache_size(layout, tokens, batch).kv_cache_bytes == batch * one


@settings(max_examples=60, deadline=None)
@given(layouts, st.integers(1, 1_000_000), st.data())
def test_mqa_le_gqa_le_mha(layout, tokens, data):
    divisors = [d for d in range(1, layout.query_heads + 1) if layout.query_heads % d == 0]
    kv_heads = data.draw(st.sampled_from(divisors))
    size = {
        variant: kv_cache_size(convert_layout(layout, variant, kv_heads=kv_heads), tokens).kv_cache_bytes
        for variant in ("mqa", "gqa", "mha")
    }
    assert size["mqa"] <= size["gqa"] <= size["mha"]


# --- measured on the real models ---------------------------------------------------------------------------

def test_smollm2_measured_cache_equals_the_formula(smollm2):
    measured = measure_kv_cache(smollm2.model, tokens=37, batch=2)
    assert measured.has_cache and measured.dtype == "fp32"
    assert measured.tensor_count == 2 * 30  # keys and values, every layer
    assert measured.measured_bytes == measured.formula_bytes == 2 * 37 * 30 * 2 * 3 * 64 * 4
    assert "equal to the formula" in measured.explanation
    # the formula read from the loaded config equals the reference config's
    from_loaded, from_reference = read_config(smollm2.config), read_config("smollm2-135m")
    assert values_per_token_per_layer(from_loaded) == values_per_token_per_layer(from_reference) == 384


def test_smollm2_parameters_from_config_equal_the_loaded_model(smollm2):
    counted = sum(p.numel() for p in smollm2.model.parameters())
    assert estimate_parameters(smollm2.config).total == estimate_parameters("smollm2-135m").total == counted
    assert measured_weight_bytes(smollm2.model) >= 4 * counted  # fp32, tied embedding counted once


def test_minilm_says_an_encoder_has_no_cache(minilm):
    measured = measure_kv_cache(minilm.model, tokens=16)
    assert not measured.has_cache and measured.measured_bytes == measured.formula_bytes == 0
    assert "encoder" in measured.explanation and "no KV cache" in measured.explanation
    assert estimate_parameters(minilm.config).total == sum(p.numel() for p in minilm.model.parameters())


def test_cache_bytes_accepts_plain_tensors():
    import torch

    legacy = ((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)),) * 3  # ((K, V) per layer)
    assert cache_bytes(legacy) == 3 * 2 * 40 * 4
    assert cache_bytes({"latent": torch.zeros(2, 7, 3, dtype=torch.bfloat16)}) == 2 * 7 * 3 * 2
    with pytest.raises(TypeError, match="Cannot list the tensors"):
        cache_bytes(object())


def test_nan_free_sizes_for_huge_contexts():
    size = kv_cache_size(read_config("llama-3-70b"), tokens=1_000_000, batch=64)
    assert math.isfinite(size.kv_cache_bytes) and size.kv_cache_bytes == 64 * 1_000_000 * 320 * KiB


def test_a_hub_id_we_ship_is_read_without_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert read_config("meta-llama/Llama-2-7b-hf").label == "MHA (32 KV heads)"
    assert read_config("deepseek-ai/DeepSeek-V3").num_layers == 61


def test_mixed_sliding_layers_measured_on_a_real_transformers_model():
    """A small Gemma-3 built from a config (random weights: the cache's size does not depend on them)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=100, hidden_size=64, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    below = measure_kv_cache(model, tokens=6)
    assert below.measured_bytes == below.formula_bytes == 6 * 6 * 2 * 16 * 4
    above = measure_kv_cache(model, tokens=20, batch=3)
    assert above.formula_bytes == 3 * (5 * 8 + 20) * 2 * 16 * 4
    # transformers keeps window - 1 tokens of each full sliding layer between steps
    assert above.measured_bytes == above.formula_bytes - 3 * 5 * 2 * 16 * 4
    assert "window - 1 tokens" in above.explanation


def test_pasted_json_text():
    pasted = json.dumps(reference_models()["qwen2.5-7b"], indent=2)
    assert read_config(pasted).kv_heads == 4
    with pytest.raises(ValueError, match="pasted config is not valid JSON"):
        load_config('{"model_type": "llama",')
