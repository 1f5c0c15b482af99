"""The one model description: window rules, partial configs, MoE fields, one spelling of variants, and the
fixes measured by the review (MoE decode roofline, separate weights and cache dtypes, GPU memory in GiB)."""

import json
import typing

import pytest

from explorer.__main__ import main
from explorer.config import ATTENTIONS, VARIANTS, Attention, classify, read_config
from explorer.hardware import GPUS, gpu_named
from explorer.kv import kv_cache_size
from explorer.params import estimate_parameters
from explorer.roofline import decode_roofline, longest_context
from explorer.state import parse_query, to_query

HEADS = {"num_attention_heads": 8, "num_key_value_heads": 4, "hidden_size": 256, "head_dim": 32}

# DeepSeek-V2-Lite's attention fields, without its MoE fields (the review's partial config)
V2_LITE_ATTENTION = {
    "model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 27,
    "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
}


# --- the window of every layer, by one rule ---------------------------------------------------------------------

def test_gemma2_alternates_sliding_and_full_layers():
    layout = read_config({"model_type": "gemma2", "num_hidden_layers": 4, "sliding_window": 4096, **HEADS})
    assert layout.layer_windows == (4096, None, 4096, None)  # transformers' layer_types for Gemma-2
    assert "2 of 4 slide over 4096 tokens" in layout.window_rule


def test_qwen2_slides_only_above_max_window_layers_and_not_at_all_when_off():
    qwen2 = {"model_type": "qwen2", "num_hidden_layers": 4, "sliding_window": 4096, "max_window_layers": 2, **HEADS}
    assert read_config({**qwen2, "use_sliding_window": True}).layer_windows == (None, None, 4096, 4096)
    off = read_config({**qwen2, "use_sliding_window": False})
    assert off.layer_windows == (None,) * 4 and "use_sliding_window is false" in off.window_rule


def test_a_config_without_model_type_says_which_window_rule_it_assumed():
    layout = read_config({"num_hidden_layers": 3, "sliding_window": 1024, **HEADS})
    assert layout.layer_windows == (1024,) * 3
    assert any(note.startswith("Without a model_type the window rule is assumed") and "Mistral" in note
               for note in layout.notes)


def test_the_masks_of_a_run_use_the_same_rule(smollm2):
    from explorer.run import layer_windows, run_attention

    run = run_attention(smollm2, "The giant ate the apple")
    assert run.layer_windows == layer_windows(smollm2.config) == list(read_config(smollm2.config).layer_windows)
    gemma2 = {"model_type": "gemma2", "num_hidden_layers": 4, "sliding_window": 8, **HEADS}
    assert layer_windows(gemma2) == [8, None, 8, None]


# --- partial configs --------------------------------------------------------------------------------------------

def test_deepseek_v2_lite_attention_alone_gives_the_cache_and_names_what_it_cannot_give():
    layout = read_config(V2_LITE_ATTENTION)
    assert (layout.attention, layout.latent_rank, layout.rope_head_dim, layout.query_rank) == ("mla", 512, 64, None)
    assert kv_cache_size(layout, 1000, 1, "bf16").kv_cache_bytes == 1000 * 27 * 576 * 2
    assert "num_experts_per_tok" in layout.missing["parameters"]
    with pytest.raises(ValueError, match="num_experts_per_tok.*cache size needs none of them"):
        estimate_parameters(layout)


def test_the_cli_answers_a_partial_config_and_says_what_it_cannot_compute(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(V2_LITE_ATTENTION))
    assert main(["kv", "--config", str(path), "--tokens", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kv_cache_bytes"] == 100 * 27 * 576 * 2
    assert report["weight_bytes_estimate"] is None and report["decode_roofline"] is None
    assert "num_experts_per_tok" in report["cannot_compute"]["parameters"]


def test_moe_fields_are_read():
    v3 = read_config("deepseek-v3")
    assert (v3.routed_experts, v3.experts_per_token, v3.shared_experts, v3.dense_layers) == (256, 8, 1, 3)
    assert (v3.moe_layers, v3.expert_intermediate_size, v3.tie_word_embeddings) == (58, 2048, False)
    assert not read_config("llama-3-8b").is_moe and read_config("smollm2-135m").tie_word_embeddings


# --- one spelling of the variants -------------------------------------------------------------------------------

def test_one_spelling_of_the_variants_everywhere():
    from explorer.variants.spec import VARIANTS as SPEC_VARIANTS
    from explorer.variants.spec import VariantSpec

    assert ATTENTIONS == typing.get_args(Attention) == ("mha", "gqa", "mqa", "mla")
    assert SPEC_VARIANTS == VARIANTS == ("original", *ATTENTIONS)
    assert typing.get_args(typing.get_type_hints(VariantSpec)["variant"]) == VARIANTS
    assert [classify(kv, 8) for kv in (8, 4, 1)] == ["mha", "gqa", "mqa"]
    assert {read_config(name).attention for name in ("llama-2-7b", "llama-3-8b", "falcon-7b", "deepseek-v2")} == {
        "mha", "gqa", "mqa", "mla"}


# --- the fixes --------------------------------------------------------------------------------------------------

def test_moe_decode_reads_only_the_experts_its_tokens_pick():
    """DeepSeek-V3, batch 1, fp8 weights, bf16 cache of 4,096 tokens on an H200, by hand: 58 MoE layers of 256
    routed experts (3 x 7168 x 2048 parameters each); one token reads 8 of them, so 248 per layer stay unread."""
    estimate = estimate_parameters("deepseek-v3")
    expert = 3 * 7168 * 2048
    unread = 58 * (256 - 8) * expert
    assert estimate.read_per_step(1) == estimate.total - unread == estimate.active_per_token
    assert estimate.read_per_step(32) == estimate.read_per_step(1000) == estimate.total  # 32 x 8 = all 256 experts
    assert estimate.read_per_step(2) == estimate.total - 58 * (256 - 16) * expert
    layout, h200 = read_config("deepseek-v3"), gpu_named("H200")
    point = decode_roofline(layout, h200, 4096, estimate.weights("fp8"), batch=1, dtype="bf16")
    cache = 4096 * 61 * 576 * 2
    assert point.weight_read_bytes == estimate.total - unread  # fp8: one byte per parameter
    assert point.tokens_per_second == pytest.approx(4.8e12 / (estimate.total - unread + cache))
    assert 120 < point.tokens_per_second < 135  # ~37 B active parameters (the paper's figure): ~127 tokens/s
    assert point.weight_bytes == estimate.total and not point.fits  # the memory fit still counts every expert
    dense = decode_roofline(layout, h200, 4096, estimate.total, batch=1, dtype="bf16")  # every expert read
    assert point.tokens_per_second / dense.tokens_per_second == pytest.approx(17.9, rel=0.02)


def test_weights_and_cache_have_their_own_dtypes(capsys):
    estimate = estimate_parameters("llama-3-8b")
    assert estimate.weights("fp8").total_bytes == estimate.total == estimate.weights("bf16").total_bytes / 2
    layout, memory = read_config("llama-3-8b"), gpu_named("H100 SXM").memory_bytes
    bf16_weights = longest_context(layout, memory, estimate.weights("bf16"), 1, "fp8")
    fp8_weights = longest_context(layout, memory, estimate.weights("fp8"), 1, "fp8")
    assert fp8_weights - bf16_weights == estimate.total // (32 * 2 * 8 * 128)  # freed bytes / fp8 cache per token
    reports = {}
    for weights_dtype in ("bf16", "fp8"):
        assert main(["kv", "--config", "llama-3-8b", "--dtype", "fp8", "--weights-dtype", weights_dtype,
                     "--json"]) == 0
        reports[weights_dtype] = json.loads(capsys.readouterr().out)
    assert reports["fp8"]["kv_cache_bytes"] == reports["bf16"]["kv_cache_bytes"] == 4096 * 64 * 1024
    assert reports["fp8"]["weight_bytes_estimate"] * 2 == reports["bf16"]["weight_bytes_estimate"]
    state, notices = parse_query({"dtype": "fp8", "weights_dtype": "fp8"})
    assert (state.dtype, state.weights_dtype, notices) == ("fp8", "fp8", [])
    assert to_query(state) == {"dtype": "fp8", "weights_dtype": "fp8"}
    assert parse_query({"weights_dtype": "fp64"})[1]  # an unknown dtype gets a notice


def test_gpu_memory_is_what_a_framework_can_allocate():
    h100, h200 = gpu_named("H100 SXM"), gpu_named("H200")
    assert h100.memory_bytes == int(79.11 * 2**30) and h200.memory_bytes == int(139.81 * 2**30)
    for gpu in GPUS:
        assert 0.93 * gpu.memory_gb < gpu.memory_gib < gpu.memory_gb  # less than the label read as GiB
        assert gpu.memory_source and gpu.source and gpu.bandwidth_gb_per_s > 0
        assert gpu.peak_flops("bf16") > 0 and gpu.peak_flops("fp8") >= gpu.peak_flops("bf16")
    # an "80 GB" H100 is no longer taken to hold 80 GiB: the longest context beside Llama-3-8B is shorter
    weights = estimate_parameters("llama-3-8b").weights("bf16")
    old = (80 * 2**30 - weights.total_bytes) // (128 * 1024)
    assert longest_context(read_config("llama-3-8b"), h100.memory_bytes, weights) < old
