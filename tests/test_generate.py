"""Generation under every variant on the real SmolLM2: parity with transformers, the weighed cache against the
formula at every step, absorbed against naive MLA, comparisons, the CLI, the URL fields and the page."""

import json

import numpy as np
import pytest
import torch

from explorer import divergence, generate
from explorer.__main__ import main
from explorer.charts.generate import attention_rows_figure, cache_growth_figure, context_figure, kl_figure
from explorer.state import parse_query, to_query
from explorer.variants import VariantSpec, convert

PROMPT = "The giant ate the apple because it was"
# Cache values per token and layer (SmolLM2: 30 layers, 9 query heads, 3 KV heads, head dim 64) and float32 bytes.
EXPECTED_BYTES_PER_TOKEN = {
    VariantSpec("original"): 30 * 2 * 3 * 64 * 4,
    VariantSpec("mha"): 30 * 2 * 9 * 64 * 4,
    VariantSpec("gqa", kv_heads=1): 30 * 2 * 1 * 64 * 4,
    VariantSpec("mqa"): 30 * 2 * 1 * 64 * 4,
    VariantSpec("mla", latent_rank=192, svd="plain"): 30 * 192 * 4,
    VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, svd="plain", attn_path="absorb"):
        30 * (160 + 32) * 4,
}


@pytest.fixture(scope="module")
def models(smollm2):
    return {spec: convert(smollm2, spec).loaded for spec in EXPECTED_BYTES_PER_TOKEN}


def test_greedy_generation_equals_transformers_generate(smollm2):
    ours = generate.generate(smollm2, VariantSpec(), PROMPT, 20)
    ids = torch.tensor([ours.prompt_ids])  # (1, P)
    theirs = smollm2.model.generate(ids, max_new_tokens=20, do_sample=False)[0, ids.shape[1]:].tolist()
    assert ours.token_ids == theirs
    assert ours.text == smollm2.tokenizer.decode(theirs)


@pytest.mark.parametrize("spec", list(EXPECTED_BYTES_PER_TOKEN), ids=lambda spec: spec.label())
def test_weighed_cache_equals_the_formula_at_every_step(models, spec):
    run = generate.generate(models[spec], spec, PROMPT, 6, layer=2)
    per_token = EXPECTED_BYTES_PER_TOKEN[spec]
    assert run.bytes_per_token == per_token
    prompt = len(run.prompt_ids)
    assert [step.cached_tokens for step in run.steps] == list(range(prompt, prompt + 6))
    assert [step.cache_bytes for step in run.steps] == [step.formula_bytes for step in run.steps]
    assert run.steps[0].cache_bytes == prompt * per_token
    assert np.diff([step.cache_bytes for step in run.steps]).tolist() == [per_token] * 5
    for step in run.steps:  # the choosing query's row over every cached position, for all 9 heads
        assert step.attention.shape == (9, step.cached_tokens)
        assert np.allclose(step.attention.sum(axis=1), 1.0, atol=1e-4)
    assert [step.phase for step in run.steps] == ["prefill"] + ["decode"] * 5


def test_absorbed_deepseek_form_generates_what_its_naive_form_generates(smollm2):
    naive = VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, svd="plain", attn_path="naive")
    absorbed = VariantSpec("mla", form="decoupled", latent_rank=160, rope_dims=32, svd="plain", attn_path="absorb")
    first = generate.generate(convert(smollm2, naive).loaded, naive, PROMPT, 16)
    second = generate.generate(convert(smollm2, absorbed).loaded, absorbed, PROMPT, 16)
    assert first.token_ids == second.token_ids
    assert first.bytes_per_token == second.bytes_per_token


def test_comparison_of_bit_identical_variants_finds_no_divergence_and_no_kl(smollm2, models):
    mha = VariantSpec("mha")  # repeats the KV heads: the same logits as the original
    first = generate.generate(smollm2, VariantSpec(), PROMPT, 8)
    second = generate.generate(models[mha], mha, PROMPT, 8)
    comparison = divergence.compare(first, second, smollm2, models[mha])
    assert comparison.first_divergence is None
    assert comparison.kl.shape == (8,)
    assert comparison.kl.max() < 1e-4


def test_a_collapsed_variant_diverges_with_positive_kl(smollm2, models):
    mqa = VariantSpec("mqa")  # mean-pooled MQA without training: perplexity ~20,000
    first = generate.generate(smollm2, VariantSpec(), PROMPT, 8)
    second = generate.generate(models[mqa], mqa, PROMPT, 8)
    comparison = divergence.compare(first, second, smollm2, models[mqa])
    assert comparison.first_divergence == divergence.first_divergence(first.token_ids, second.token_ids)
    assert comparison.first_divergence is not None
    assert comparison.kl.mean() > 1.0


def test_first_divergence():
    assert divergence.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert divergence.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert divergence.first_divergence([1, 2, 3], [1, 2]) == 2  # one stopped early


def test_sampling_is_reproducible_and_top_k_1_is_greedy(smollm2):
    sampled = generate.Sampling(temperature=1.0, top_p=0.9, seed=7)
    first = generate.generate(smollm2, VariantSpec(), PROMPT, 8, sampling=sampled)
    again = generate.generate(smollm2, VariantSpec(), PROMPT, 8, sampling=sampled)
    assert first.token_ids == again.token_ids
    greedy = generate.generate(smollm2, VariantSpec(), PROMPT, 8)
    top_1 = generate.generate(smollm2, VariantSpec(), PROMPT, 8, sampling=generate.Sampling(1.5, top_k=1, seed=3))
    assert top_1.token_ids == greedy.token_ids
    with pytest.raises(ValueError, match="top-p"):
        generate.Sampling(temperature=1.0, top_p=0.0)


def test_a_long_cache_filled_in_chunks_weighs_what_the_formula_says(models):
    spec = VariantSpec("mla", latent_rank=192, svd="plain")
    points = generate.fill_cache(models[spec], spec, list(range(1000, 1600)), chunk=256)
    assert [p.tokens for p in points] == [256, 512, 600]
    assert [p.measured_bytes for p in points] == [p.formula_bytes for p in points] == [n * 30 * 192 * 4
                                                                                       for n in (256, 512, 600)]


def test_sliding_windows_stop_the_formula_where_the_cache_stops():
    formula = generate.CacheFormula((10, 10, 10), (None, 512, 512))  # Gemma-3-like: windows on two layers
    assert formula.bytes_per_token == 30
    assert formula.bytes_at(100) == 3000
    assert formula.bytes_at(600) == 10 * 600 + 2 * 10 * 511  # transformers keeps window - 1 between steps


def test_compare_names_round_trip():
    for name in ("none", "original", "mha", "mqa", "gqa-1", "mla-192", "mla-192-plain", "mla-160-rope32"):
        assert generate.compare_name(generate.compare_spec(name)) == name
    with pytest.raises(ValueError, match="names no variant"):
        generate.compare_spec("mla-wide")


def test_cli_prints_tokens_text_and_per_step_cache(capsys):
    assert main(["generate", "--text", PROMPT, "--steps", "4", "--variant", "mla", "--latent-rank", "192",
                 "--svd", "plain", "--compare", "original", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["generated_tokens"]) == len(report["steps"]) == 4
    assert report["text"]
    for step in report["steps"]:
        assert step["cache_bytes_measured"] == step["cache_bytes_formula"] == step["cached_tokens"] * 30 * 192 * 4
        assert step["seconds"] > 0
    assert report["compare"]["variant"] == "original"
    assert len(report["kl_per_step"]) == 4
    assert main(["generate", "--steps", "0"]) == 2


def test_links_carry_the_generation_settings():
    state, notices = parse_query({"steps": "40", "compare": "mla-160-rope32", "temperature": "0.7", "top_p": "0.9",
                                  "top_k": "50", "seed": "3", "horizon": "32768"})
    assert notices == []
    assert (state.steps, state.compare, state.temperature, state.top_p, state.top_k, state.seed, state.horizon) == (
        40, "mla-160-rope32", 0.7, 0.9, 50, 3, 32768)
    assert parse_query(to_query(state))[0] == state
    state, notices = parse_query({"steps": "0", "compare": "gpt", "temperature": "hot"})
    assert (state.steps, state.compare, state.temperature) == (32, "original", 0.0)
    assert len(notices) == 3


def test_charts_grow_and_refuse_mismatched_inputs():
    rows = [np.full((9, n), 1.0 / n, np.float32) for n in (5, 6, 7)]
    figure = attention_rows_figure(rows, [f"t{i}" for i in range(7)], ["a", "b", "c"], "rows")
    assert len(figure.data) == 9
    assert np.isnan(np.asarray(figure.data[0].z, dtype=float)[0, 6])  # not cached yet at the first step
    with pytest.raises(ValueError, match="token labels"):
        attention_rows_figure(rows, [f"t{i}" for i in range(7)], ["a"], "rows")
    growth = cache_growth_figure({"mla": ([5, 6], [10, 12])}, {"mla": ([5, 6], [10, 12]), "original": ([5, 6], [20, 24])})
    assert [trace.name for trace in growth.data] == ["mla: formula", "mla: weighed", "original: formula"]
    with pytest.raises(ValueError, match="no formula"):
        cache_growth_figure({"mla": ([5], [10])}, {"original": ([5], [20])})
    lengths = generate.context_lengths(131_072)
    assert {4_096, 32_768, 131_072} <= set(lengths)
    context = context_figure(lengths, {"a": [2 * n for n in lengths], "b": [4 * n for n in lengths]},
                             {"a": ([256], [512])}, 256)
    assert context.layout.xaxis.type == "log"
    assert kl_figure([0.0, 0.5], 1, ("a", "b")).data[0].y == (0.0, 0.5)
