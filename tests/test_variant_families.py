"""Conversions of Gemma-3, GPT-2 and BERT attention: exact where the maths says so, caches as the formula says,
the shared original untouched, impossible settings refused with a sentence.

Gemma-3 and GPT-2 run as tiny randomly initialised models (their real weights are optional or online only);
BERT also runs as the real all-MiniLM-L6-v2. Random models get random biases and norm weights, so a
conversion that dropped a bias or a q/k norm would fail the parity tests.
"""

import pytest
import torch
from transformers import BertConfig, BertModel, Gemma3ForCausalLM, Gemma3TextConfig, GPT2Config, GPT2LMHeadModel

from explorer.catalogue import entry_for
from explorer.loading import LoadedModel
from explorer.quality import compare_encoder, document_ids, encoder_evaluation_ids, encoder_reference
from explorer.variants import (
    VariantSpec,
    attention_shape,
    cache_values_per_token,
    calibrate,
    computed_kv,
    convert,
    family_of,
)
from explorer.variants.report import variant_report
from tests.decoding import assert_cache_and_decoding

VOCAB = 30522  # the MiniLM tokenizer's vocabulary: the tiny models share its tokenizer for calibration prose


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's small matrices on one thread, then restore the setting.

    On a shared 2-core machine, two OpenMP threads spinning on a 768×768 eigh took 20–60 s per MiniLM
    conversion; one thread takes about 1.5 s. The models here are small, so one thread loses nothing.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(model, tokenizer, kind: str, name: str) -> LoadedModel:
    """A LoadedModel around a randomly initialised model, with random biases and norm weights."""
    torch.manual_seed(1)
    for parameter_name, parameter in model.named_parameters():
        if parameter_name.endswith("bias") or "norm" in parameter_name:
            parameter.data.normal_(0.0, 0.2)
    model.eval().requires_grad_(False)
    return LoadedModel(entry_for(name), model, tokenizer, kind, torch.device("cpu"), torch.float32, 0.0)


@pytest.fixture(scope="module")
def gemma(minilm):
    """Gemma-3 in miniature: head_dim 32 ≠ 64/4, 2 KV heads, a sliding window of 6 on layer 0, its own scale."""
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=20, sliding_window=6,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=512,
        attn_implementation="eager", bos_token_id=101, eos_token_id=102, pad_token_id=0,
    )
    return tiny(Gemma3ForCausalLM(config), minilm.tokenizer, "decoder", "tiny-gemma3")


@pytest.fixture(scope="module")
def gpt2(minilm):
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=512, attn_implementation="eager",
        bos_token_id=101, eos_token_id=102,
    )
    return tiny(GPT2LMHeadModel(config), minilm.tokenizer, "decoder", "tiny-gpt2")


@pytest.fixture(scope="module")
def bert(minilm):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=512, attn_implementation="eager",
    )
    return tiny(BertModel(config, add_pooling_layer=False), minilm.tokenizer, "encoder", "tiny-bert")


@pytest.fixture(scope="module")
def models(gemma, gpt2, bert, minilm):
    return {"gemma": gemma, "gpt2": gpt2, "bert": bert, "minilm": minilm}


@pytest.fixture(scope="module")
def calibrations(models):
    """Calibration moments per model, from the calibration half of the prose, computed once."""
    return {name: calibrate(loaded, tokens=512) for name, loaded in models.items()}


def prompt_ids(loaded, tokens: int = 16) -> torch.Tensor:
    """(1, tokens) ids of a fixed evaluation-prose document (longer than the tiny Gemma's window)."""
    return encoder_evaluation_ids(loaded.tokenizer, texts=1)[0][:, :tokens]


def outputs(loaded, input_ids):
    with torch.inference_mode():
        result = loaded.model(input_ids=input_ids)
    return result.last_hidden_state if loaded.kind == "encoder" else result.logits


def greedy(loaded, input_ids, new_tokens: int = 6) -> list[int]:
    with torch.inference_mode():
        output = loaded.model.generate(input_ids, max_new_tokens=new_tokens, do_sample=False, min_new_tokens=new_tokens)
    return output[0, input_ids.shape[1] :].tolist()


def case_id(value) -> str:
    return value if isinstance(value, str) else value.label()


def full_rank(loaded) -> int:
    shape = attention_shape(loaded.config)
    return 2 * shape.kv_heads * shape.head_dim


EXACT = [
    ("gemma", VariantSpec("mha")),
    ("gemma", VariantSpec("gqa", kv_heads=2)),
    ("gemma", VariantSpec("mla", latent_rank=128, svd="plain")),
    ("gemma", VariantSpec("mla", latent_rank=128, svd="data")),
    ("gpt2", VariantSpec("mha")),
    ("gpt2", VariantSpec("mla", latent_rank=128, svd="plain")),
    ("gpt2", VariantSpec("mla", latent_rank=128, svd="data")),
    ("bert", VariantSpec("mha")),
    ("bert", VariantSpec("mla", latent_rank=128, svd="data")),
    ("minilm", VariantSpec("mla", latent_rank=768, svd="data")),
    ("minilm", VariantSpec("mla", latent_rank=768, svd="plain")),
]


@pytest.mark.parametrize(("name", "spec"), EXACT, ids=case_id)
def test_exact_conversions_keep_outputs_and_greedy_text(models, calibrations, name, spec):
    loaded = models[name]
    assert spec.variant != "mla" or spec.latent_rank == full_rank(loaded)
    input_ids = prompt_ids(loaded)
    conversion = convert(loaded, spec, calibrations[name])
    difference = (outputs(conversion.loaded, input_ids) - outputs(loaded, input_ids)).abs().max()
    assert difference <= 1e-4
    if loaded.kind == "decoder":
        assert greedy(conversion.loaded, input_ids) == greedy(loaded, input_ids)


def test_gemma_keeps_its_norms_scale_and_sliding_window(gemma):
    layer = convert(gemma, VariantSpec("mha")).loaded.model.model.layers[0].self_attn
    original = gemma.model.model.layers[0].self_attn
    assert layer.scaling == original.scaling == 20**-0.5 != 32**-0.5
    assert torch.equal(layer.k_norm.weight, original.k_norm.weight) and layer.k_norm is not original.k_norm
    assert (layer.sliding_window, layer.is_sliding) == (6, True)
    mla = convert(gemma, VariantSpec("mla", latent_rank=64, svd="plain")).loaded.model.model.layers
    local, full = mla[0].self_attn.rope_inv_freq, mla[1].self_attn.rope_inv_freq  # different RoPE bases
    assert local.shape == full.shape == (16,) and not torch.equal(local, full)


DECODING = [
    ("gemma", VariantSpec("original")),
    ("gemma", VariantSpec("mha")),
    ("gemma", VariantSpec("mqa", merge="mean")),
    ("gemma", VariantSpec("mla", latent_rank=48, svd="data")),
    ("gpt2", VariantSpec("gqa", kv_heads=2, merge="mean")),
    ("gpt2", VariantSpec("mqa", merge="first")),
    ("gpt2", VariantSpec("mla", latent_rank=40, svd="plain")),
]


@pytest.mark.parametrize(("name", "spec"), DECODING, ids=case_id)
def test_decoder_cache_holds_what_the_formula_says_and_decoding_from_it_matches_a_full_pass(
    models, calibrations, name, spec
):
    loaded = models[name]
    model = convert(loaded, spec, calibrations[name]).loaded.model
    input_ids = prompt_ids(loaded)  # (1, 16): past the tiny Gemma's window of 6
    assert_cache_and_decoding(model, loaded.config, spec, input_ids, steps=4, atol=1e-4)


ENCODER_KV = [
    ("bert", VariantSpec("original")),
    ("bert", VariantSpec("mqa")),
    ("bert", VariantSpec("mla", latent_rank=48)),
    ("minilm", VariantSpec("original")),
    ("minilm", VariantSpec("gqa", kv_heads=4)),
    ("minilm", VariantSpec("mla", latent_rank=192)),
]


@pytest.mark.parametrize(("name", "spec"), ENCODER_KV, ids=case_id)
def test_encoder_kv_computed_per_token_equals_the_formula(models, calibrations, name, spec):
    loaded = models[name]
    model = convert(loaded, spec, calibrations[name]).loaded.model
    values, sizes = computed_kv(model, family_of(loaded.config).attention_modules(model), prompt_ids(loaded))
    formula = cache_values_per_token(spec, attention_shape(loaded.config))
    assert values == formula
    assert sizes == [4 * n for n in formula]


@pytest.mark.parametrize("name", ["gemma", "gpt2", "bert", "minilm"])
def test_conversions_never_touch_the_shared_model(models, calibrations, name):
    loaded = models[name]
    family = family_of(loaded.config)
    with torch.inference_mode():
        loaded.model(input_ids=prompt_ids(loaded), output_attentions=True)  # installs the recording hooks first
    before = {key: tensor.clone() for key, tensor in loaded.model.state_dict().items()}
    classes = [type(layer) for layer in family.attention_modules(loaded.model)]
    config_before = loaded.config.to_dict()
    for spec in (VariantSpec("mqa"), VariantSpec("mla", latent_rank=32)):
        convert(loaded, spec, calibrations[name])
    after = loaded.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert [type(layer) for layer in family.attention_modules(loaded.model)] == classes
    assert loaded.config.to_dict() == config_before


@pytest.mark.parametrize("name", ["gemma", "gpt2", "bert"])
def test_converted_layers_report_their_probabilities(models, name):
    loaded = models[name]
    conversion = convert(loaded, VariantSpec("mla", latent_rank=32, svd="plain"))
    taps = []
    layer = family_of(loaded.config).attention_modules(conversion.loaded.model)[1]
    handle = layer.hook_pattern.register_forward_hook(lambda module, inputs, output: taps.append(output))
    with torch.inference_mode():
        attentions = conversion.loaded.model(input_ids=prompt_ids(loaded), output_attentions=True).attentions
    handle.remove()
    assert len(attentions) == 2 and attentions[1].shape == (1, 4, 16, 16)  # (B, H, T, S)
    assert torch.allclose(attentions[1].sum(-1), torch.ones(1, 4, 16), atol=1e-5)
    assert torch.equal(taps[0], attentions[1])  # the named tap sees what outputs.attentions records
    causal = loaded.kind == "decoder"
    assert bool((attentions[1][0, 0].triu(1) == 0).all()) == causal  # decoders look back only; encoders both ways


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("gpt2", VariantSpec("mla", form="decoupled"), "learned absolute positions, not RoPE.*choose form='naive'"),
        ("bert", VariantSpec("mla", form="decoupled"), "learned absolute positions, not RoPE.*choose form='naive'"),
        ("minilm", VariantSpec("mla", form="decoupled"), "learned absolute positions, not RoPE.*choose form='naive'"),
        ("minilm", VariantSpec("mqa", merge="aligned"), "has no RoPE; choose merge='mean'"),
        ("gemma", VariantSpec("mla", form="decoupled"), "k_norm.*choose form='naive'"),
        ("gemma", VariantSpec("mqa", merge="aligned"), "k_norm.*choose merge='mean'"),
        ("minilm", VariantSpec("gqa", kv_heads=5), "12 query heads and 12 KV heads; choose 1, 2, 3, 4, 6 or 12"),
        ("minilm", VariantSpec("mla", latent_rank=1000), "choose a latent rank between 1 and 768"),
    ],
)
def test_impossible_settings_say_what_to_choose(models, name, spec, message):
    with pytest.raises(ValueError, match=message):
        convert(models[name], spec)


def test_unknown_families_are_refused_with_a_sentence():
    class Config:
        model_type = "mamba"

    with pytest.raises(ValueError, match="Pick SmolLM2, Gemma-3, GPT-2 or all-MiniLM-L6-v2"):
        family_of(Config(), "Mamba")


# Real all-MiniLM-L6-v2: quality as a sentence-embedding model, on the evaluation prose.


@pytest.fixture(scope="module")
def minilm_reference(minilm):
    return encoder_reference(minilm.model, encoder_evaluation_ids(minilm.tokenizer, texts=8))


def test_calibration_and_evaluation_documents_never_overlap(minilm):
    calibration = {tuple(row[0].tolist()) for row in document_ids(minilm.tokenizer, "calibration", total_tokens=4096)}
    evaluation = {tuple(row[0].tolist()) for row in encoder_evaluation_ids(minilm.tokenizer, texts=16)}
    assert calibration and evaluation and not calibration & evaluation


def test_the_original_encoder_scores_perfectly_against_itself(minilm, minilm_reference):
    quality = compare_encoder(minilm.model, minilm_reference)
    assert quality.embedding_cosine == pytest.approx(1.0) and quality.similarity_rank_correlation == pytest.approx(1.0)
    assert quality.hidden_relative_error == 0.0 and quality.texts == 8


def test_minilm_mean_pooled_kv_heads_beat_the_first_head(minilm, calibrations, minilm_reference):
    def quality(merge):
        return compare_encoder(convert(minilm, VariantSpec("gqa", kv_heads=4, merge=merge)).loaded.model,
                               minilm_reference)

    mean, first = quality("mean"), quality("first")
    assert mean.embedding_cosine > first.embedding_cosine
    assert mean.hidden_relative_error < first.hidden_relative_error


def test_minilm_data_aware_latent_beats_plain_svd_and_mqa_at_the_same_cache(minilm, calibrations, minilm_reference):
    def quality(spec):
        return compare_encoder(convert(minilm, spec, calibrations["minilm"]).loaded.model, minilm_reference)

    shape = attention_shape(minilm.config)
    data, plain = VariantSpec("mla", latent_rank=64, svd="data"), VariantSpec("mla", latent_rank=64, svd="plain")
    mqa = VariantSpec("mqa", merge="mean")
    assert cache_values_per_token(data, shape) == cache_values_per_token(mqa, shape) == [64] * 6
    data_quality = quality(data)
    assert data_quality.embedding_cosine > quality(plain).embedding_cosine
    assert data_quality.embedding_cosine > quality(mqa).embedding_cosine


def test_encoder_report_rows(minilm):
    specs = (VariantSpec("original"), VariantSpec("mqa"), VariantSpec("mla", latent_rank=96, calibration_tokens=512))
    report = variant_report(minilm, specs, eval_tokens=128)
    original, mqa, mla = report["variants"]
    assert report["kind"] == "encoder" and "what a cache would hold" in report["kv_measured_from"]
    assert original["kv_values_per_token_per_layer"] == {"measured": 768, "formula": 768}
    assert original["embedding_cosine"] == pytest.approx(1.0)
    assert mqa["measured_equals_formula"] and mqa["cache_vs_original"] == pytest.approx(1 / 12)
    assert mla["kv_values_per_token_per_layer"]["measured"] == 96 and 0 < mla["energy_kept_mean"] < 1
    assert mqa["embedding_cosine"] < 1 and mqa["hidden_relative_error"] > 0


@pytest.mark.parametrize(
    ("shape", "model_type", "expected"),
    [
        ((18, 4, 1, 256), "gemma3_text", ["original", "mha", "gqa kv=2 mean", "mla naive r=512 data"]),
        ((6, 12, 12, 32), "bert", ["original", "gqa kv=2 mean", "gqa kv=2 first", "gqa kv=6 mean"]),
    ],
)
def test_report_specs_fit_each_model_shape(shape, model_type, expected):
    from explorer.variants.report import report_specs
    from explorer.variants.spec import AttentionShape

    attention = AttentionShape(*shape)
    specs = report_specs(attention, model_type)
    assert [spec.label() for spec in specs[: len(expected)]] == expected
    assert all(cache_values_per_token(spec, attention) for spec in specs)  # every one is a valid setting
    full = attention.kv_values_per_layer
    assert min(spec.latent_rank for spec in specs if spec.variant == "mla") == min(full // 8, 2 * attention.head_dim)
