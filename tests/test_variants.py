"""Conversions of real SmolLM2 weights: exact where the maths says so, smaller caches, and the original untouched."""

import pytest
import torch

from explorer.quality import compare, evaluation_ids, reference
from explorer.run import run_attention
from explorer.variants import VariantSpec, attention_shape, cache_values_per_token, calibrate, convert
from explorer.variants.report import absorbed_vs_naive, variant_report
from tests.decoding import assert_cache_and_decoding

PROMPT = "The giant ate the apple because it was hungry. Then the giant"


@pytest.fixture(scope="module")
def calibration(smollm2):
    return calibrate(smollm2, tokens=512)


@pytest.fixture(scope="module")
def eval_reference(smollm2):
    return reference(smollm2.model, evaluation_ids(smollm2.tokenizer, chunks=1, chunk_tokens=128))


@pytest.fixture(scope="module")
def quality_of(smollm2, calibration, eval_reference):
    """Quality of a variant on the evaluation tokens, converted once per spec in this module."""
    measured = {}

    def measure(spec):
        if spec not in measured:
            measured[spec] = compare(convert(smollm2, spec, calibration).loaded.model, eval_reference)
        return measured[spec]

    return measure


@pytest.fixture(scope="module")
def original_greedy(smollm2):
    return greedy(smollm2)


def greedy(loaded, new_tokens=12):
    input_ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        output = loaded.model.generate(input_ids, max_new_tokens=new_tokens, do_sample=False)
    return output[0, input_ids.shape[1] :].tolist()


@pytest.mark.parametrize(
    "spec",
    [VariantSpec("mha"), VariantSpec("gqa", kv_heads=3), VariantSpec("mla", latent_rank=384, svd="data")],
    ids=lambda spec: spec.label(),
)
def test_exact_conversions_keep_logits_and_greedy_text(smollm2, calibration, eval_reference, original_greedy, spec):
    conversion = convert(smollm2, spec, calibration)
    quality = compare(conversion.loaded.model, eval_reference)
    assert quality.max_logit_diff <= 1e-4
    assert quality.top1_agreement == 1.0
    assert greedy(conversion.loaded) == original_greedy


def test_full_rank_plain_svd_mla_is_exact_up_to_float32_rounding(smollm2, eval_reference):
    conversion = convert(smollm2, VariantSpec("mla", latent_rank=384, svd="plain"))
    quality = compare(conversion.loaded.model, eval_reference)
    assert quality.max_logit_diff <= 1e-3  # two float32 matmuls instead of one; logits are ~±30
    assert quality.top1_agreement == 1.0


def test_absorbed_mla_equals_naive_mla_in_float64(smollm2, calibration):
    spec = VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, merge="aligned", attn_path="absorb")
    conversion = convert(smollm2, spec, calibration)
    input_ids = smollm2.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert absorbed_vs_naive(conversion.loaded.model, input_ids) <= 1e-9


SPECS = [
    VariantSpec("original"),
    VariantSpec("mha"),
    VariantSpec("gqa", kv_heads=3),
    VariantSpec("mqa", merge="mean"),
    VariantSpec("mqa", merge="aligned"),
    VariantSpec("mla", latent_rank=128, svd="data"),
    VariantSpec("mla", latent_rank=96, svd="plain", weighting="query-output"),
    VariantSpec("mla", layer_ranks=tuple(range(40, 190, 5)), svd="data"),
    VariantSpec("mla", form="decoupled", latent_rank=224, rope_dims=32, merge="aligned", attn_path="naive"),
    VariantSpec("mla", form="decoupled", latent_rank=224, rope_dims=16, merge="first", attn_path="absorb"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.label())
def test_cache_holds_what_the_formula_says_and_decoding_from_it_matches_a_full_pass(smollm2, calibration, spec):
    model = convert(smollm2, spec, calibration).loaded.model
    input_ids = smollm2.tokenizer(PROMPT, return_tensors="pt")["input_ids"]  # (1, T)
    assert_cache_and_decoding(model, smollm2.config, spec, input_ids, steps=3, atol=2e-4)


def test_conversions_never_touch_the_shared_model(smollm2, calibration):
    run_attention(smollm2, PROMPT)  # installs transformers' recording hooks on the original first
    before = {name: tensor.clone() for name, tensor in smollm2.model.state_dict().items()}
    classes = [type(layer.self_attn) for layer in smollm2.model.model.layers]
    for spec in (VariantSpec("mqa", merge="aligned"), VariantSpec("mla", form="decoupled", merge="aligned")):
        convert(smollm2, spec, calibration)
    after = smollm2.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert [type(layer.self_attn) for layer in smollm2.model.model.layers] == classes
    assert smollm2.config.num_key_value_heads == 3


def test_converted_models_draw_heatmaps_with_the_existing_run(smollm2, calibration):
    original = run_attention(smollm2, PROMPT)
    conversion = convert(smollm2, VariantSpec("mla", latent_rank=128), calibration)
    taps = []
    layer = conversion.loaded.model.model.layers[5].self_attn
    handle = layer.hook_pattern.register_forward_hook(lambda module, inputs, output: taps.append(output))
    converted = run_attention(conversion.loaded, PROMPT)
    handle.remove()
    assert converted.attentions.shape == original.attentions.shape  # (30, 9, T, T)
    assert abs(converted.attentions.sum(-1) - 1).max() < 1e-4
    assert not abs(converted.attentions - original.attentions).max() < 1e-3  # a different model
    assert torch.allclose(taps[0][0].float(), torch.from_numpy(converted.attentions[5]))  # the named tap


def test_mean_pooling_beats_keeping_the_first_head(quality_of):
    mean, first = quality_of(VariantSpec("mqa", merge="mean")), quality_of(VariantSpec("mqa", merge="first"))
    assert mean.perplexity < first.perplexity
    assert mean.kl < first.kl


def test_aligned_merge_beats_mean_pooling(quality_of):
    aligned, mean = quality_of(VariantSpec("mqa", merge="aligned")), quality_of(VariantSpec("mqa", merge="mean"))
    assert aligned.perplexity < mean.perplexity / 10


def test_data_aware_mla_at_mqa_cache_beats_mean_pooled_mqa(smollm2, quality_of):
    shape = attention_shape(smollm2.config)
    mla_spec, mqa_spec = VariantSpec("mla", latent_rank=128, svd="data"), VariantSpec("mqa", merge="mean")
    assert cache_values_per_token(mla_spec, shape) == cache_values_per_token(mqa_spec, shape) == [128] * 30
    mla, mqa = quality_of(mla_spec), quality_of(mqa_spec)
    assert mla.perplexity < mqa.perplexity
    assert mla.top1_agreement > mqa.top1_agreement


def test_data_aware_svd_beats_plain_svd_at_the_same_rank(quality_of):
    data = quality_of(VariantSpec("mla", latent_rank=192, svd="data"))
    plain = quality_of(VariantSpec("mla", latent_rank=192, svd="plain"))
    assert data.perplexity < plain.perplexity


def test_aligned_shared_rope_key_beats_the_mean_one(quality_of):
    def decoupled(merge):
        return VariantSpec("mla", form="decoupled", latent_rank=288, rope_dims=32, merge=merge, attn_path="absorb")

    assert quality_of(decoupled("aligned")).perplexity < quality_of(decoupled("mean")).perplexity


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (VariantSpec("gqa", kv_heads=2), "9 query heads and 3 KV heads; choose 1, 3 or 9 KV heads"),
        (VariantSpec("mla", latent_rank=500), "choose a latent rank between 1 and 384"),
        (VariantSpec("mla", form="naive", attn_path="absorb"), "choose form='decoupled'"),
        (VariantSpec("mla", form="decoupled", rope_dims=7), "choose an even rope_dims"),
    ],
)
def test_impossible_settings_say_what_to_choose(smollm2, spec, message):
    with pytest.raises(ValueError, match=message):
        convert(smollm2, spec)


def test_variant_report_rows(smollm2):
    specs = (VariantSpec("original"), VariantSpec("mqa", calibration_tokens=512))
    report = variant_report(smollm2, specs, eval_tokens=128, chunk_tokens=128)
    original, mqa = report["variants"]
    assert original["kv_values_per_token_per_layer"] == {"measured": 384, "formula": 384}
    assert mqa["kv_bytes_per_token_per_layer"] == {"measured": 512, "formula": 512}
    assert mqa["measured_equals_formula"] and mqa["cache_vs_original"] == pytest.approx(1 / 3)
    assert mqa["perplexity"] > original["perplexity"] and 0 < mqa["top1_agreement"] < 1
