"""The packaged real weights: the GGUF -> safetensors conversion itself (run into an empty cache directory, since
the user cache already holds its result), and Gemma-3-270M's held-out perplexity against the committed figure,
with an exact conversion (MQA expanded to MHA) keeping its logits."""

import json

import pytest
import torch

from explorer.catalogue import CATALOGUE
from explorer.lab import RESULTS
from explorer.loading import converted_path, load_model, needs_conversion
from explorer.quality import compare, evaluation_ids, reference
from explorer.variants import VariantSpec, convert

PROMPT = "The giant ate the apple because it was hungry. Then the giant"


@pytest.mark.slow
def test_a_gguf_package_converts_into_an_empty_cache_with_the_same_logits(smollm2, tmp_path, monkeypatch):
    """The first run's conversion (dequantise the GGUF, save safetensors, move it into place) into a fresh cache
    directory: its model gives the logits of the model loaded from the user's existing cache, bit for bit."""
    monkeypatch.setenv("ATTENTION_EXPLORER_CACHE", str(tmp_path))
    entry = CATALOGUE["smollm2"]
    assert converted_path(entry).parent == tmp_path and needs_conversion(entry)
    steps = []
    fresh = load_model("smollm2", device="cpu", progress=lambda fraction, message: steps.append(message))
    assert any("converting" in step for step in steps)  # it really converted, here
    assert (tmp_path / "smollm2-safetensors" / "model.safetensors").is_file() and not needs_conversion(entry)
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]  # no scratch left behind
    input_ids = smollm2.tokenizer(PROMPT, return_tensors="pt")["input_ids"]  # (1, T)
    assert fresh.tokenizer(PROMPT)["input_ids"] == input_ids[0].tolist()
    with torch.inference_mode():
        assert torch.equal(fresh.model(input_ids=input_ids).logits, smollm2.model(input_ids=input_ids).logits)


GEMMA3_RESULTS = RESULTS / "variants-gemma3-cpu.json"
PERPLEXITY_TOLERANCE = 1e-3  # relative: same weights and tokens, only float32 summation order differs (measured 5e-7)


@pytest.fixture(scope="module")
def gemma3():
    if not CATALOGUE["gemma3"].is_installed():
        pytest.skip("Gemma-3-270M is an optional package (scripts/setup.sh installs it)")
    return load_model("gemma3", device="cpu")


@pytest.mark.slow
def test_gemma3_perplexity_matches_the_committed_figure_and_mha_keeps_its_logits(gemma3):
    committed = json.loads(GEMMA3_RESULTS.read_text())
    original = next(row for row in committed["variants"] if row["label"] == "original")
    chunk_tokens = 256  # `python -m explorer variants` evaluates decoders on chunks of 256 tokens
    # The committed figure rests on 8,192 tokens (a pass of minutes with Gemma-3's 262k vocabulary): recompute its
    # first two sequences, block for block, and check the committed perplexity sits inside its own interval.
    input_ids = evaluation_ids(gemma3.tokenizer, committed["eval_tokens"] // chunk_tokens, chunk_tokens)[:2]  # (2, T)
    ref = reference(gemma3.model, input_ids)
    blocks = len(ref.blocks["nll"])
    assert ref.blocks["nll"] == pytest.approx(original["blocks"]["nll"][:blocks], rel=PERPLEXITY_TOLERANCE)
    low, high = original["perplexity_ci"]
    assert low <= original["perplexity"] <= high

    mha = convert(gemma3, VariantSpec("mha")).loaded.model  # 1 KV head repeated for each of the 4 query heads
    assert mha.model.layers[0].self_attn.kv_heads == 4
    quality = compare(mha, ref)
    assert quality.max_logit_diff <= 1e-4 and quality.top1_agreement == 1.0
    assert quality.perplexity == pytest.approx(ref.perplexity, rel=1e-6)
