"""The attention page's interactions, on the real models: rollout and flow, special tokens hidden, query tokens
summed, head ablation (only through the head, the shared model untouched), and all of it restored from a link."""

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer.ablation import ablate_heads, heads_switched_off
from explorer.loading import load_model
from explorer.rollout import flow, residual_attention, rollout
from explorer.run import attention_modules, overview_attention
from explorer.selection import hide_tokens, special_positions, summed_rows
from explorer.state import parse_query, to_query
from tests.specs import array, figures

SENTENCE = "The giant ate the apple because it was hungry"
TOKENS = SENTENCE.split()


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def weights(smollm2):
    """(L, H, T, T) float32: every layer of SmolLM2 on the sentence."""
    return overview_attention(smollm2, SENTENCE).kept.astype(np.float32)


def test_rollout_rows_sum_to_one_and_start_from_the_first_layer(weights):
    rolled = rollout(weights)  # (L, T, T)
    assert rolled.shape == (30, 9, 9)
    np.testing.assert_allclose(rolled.sum(axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rolled[0], residual_attention(weights)[0])
    np.testing.assert_allclose(rolled[1], residual_attention(weights)[1] @ rolled[0], atol=1e-12)
    assert np.allclose(np.triu(rolled[-1], k=1), 0)  # causal: nothing flows back from later tokens


def test_flow_through_one_layer_is_that_layer_and_shares_sum_to_one(weights):
    np.testing.assert_allclose(flow(weights, 6, layer=0), residual_attention(weights)[0, 6], atol=1e-9)
    shares = flow(weights, 8, layer=5)
    assert shares.shape == (9,) and (shares >= 0).all() and shares.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="up to 20 tokens"):
        flow(np.full((2, 1, 30, 30), 1 / 30), 0)


def test_flow_is_the_maximum_flow_networkx_finds_by_another_algorithm(weights):
    """The flow solves with Boykov-Kolmogorov; networkx's default (preflow-push) on the same graph, built here from
    the definition, must give the same shares."""
    import networkx as nx

    mixed = residual_attention(weights)[:6]  # (6, T, T): up to layer 5
    graph = nx.DiGraph()
    for l, layer in enumerate(mixed):
        for i, j in zip(*np.nonzero(layer)):
            graph.add_edge((l, j), (l + 1, i), capacity=float(layer[i, j]))
    values = np.array([nx.maximum_flow_value(graph, (0, j), (6, 8)) for j in range(9)])
    np.testing.assert_allclose(flow(weights, 8, layer=5), values / values.sum(), atol=1e-12)


def test_hiding_special_tokens_renormalises_the_rows_that_remain():
    minilm = load_model("minilm")
    overview = overview_attention(minilm, "the cat saw the dog")
    specials = special_positions(overview.token_ids, set(minilm.tokenizer.all_special_ids))
    assert [overview.tokens[p] for p in specials] == ["[CLS]", "[SEP]"]
    hidden, kept = hide_tokens(overview.kept.astype(np.float32)[3], specials)  # (H, 5, 5)
    assert kept == [1, 2, 3, 4, 5] and hidden.shape == (12, 5, 5)
    np.testing.assert_allclose(hidden.sum(axis=-1), 1.0, atol=1e-5)
    original = overview.kept.astype(np.float32)[3, 0, 2, 1:6]
    np.testing.assert_allclose(hidden[0, 1], original / original.sum(), atol=1e-5)  # same proportions


def test_several_query_tokens_sum_their_rows(weights):
    summed = summed_rows(weights[0, 0], [6, 7, 8])
    np.testing.assert_allclose(summed, weights[0, 0, 6:9].sum(axis=0))
    assert summed.sum() == pytest.approx(3.0, abs=1e-3)


def test_links_keep_query_tokens_special_tokens_and_switched_off_heads():
    state, notices = parse_query({"queries": "2,5-7", "hide_special": "1", "ablate": "3.4,0.1"})
    assert not notices and state.queries == (2, 5, 6, 7) and state.hide_special and state.ablate == ((0, 1), (3, 4))
    assert to_query(state) == {"queries": "2,5,6,7", "hide_special": "1", "ablate": "0.1,3.4"}
    state, notices = parse_query({"queries": "7-2", "ablate": "three.four"})
    assert state.queries is None and state.ablate == () and len(notices) == 2


def _layer_outputs(loaded, input_ids, layer):
    """The attention probabilities of every layer, and the input and output of `layer`'s output projection."""
    taps = {}
    projection = attention_modules(loaded.model)[0][layer].o_proj
    hook = projection.register_forward_hook(lambda _m, inputs, output: taps.update(into=inputs[0], out=output))
    try:
        outputs = loaded.model(input_ids=input_ids, output_attentions=True)
    finally:
        hook.remove()
    return outputs, taps


@torch.inference_mode()
def test_ablating_a_head_acts_only_through_that_head_and_leaves_the_shared_model_untouched(smollm2):
    layer, head = 3, 4
    head_dim = smollm2.config.head_dim
    before_parameters = {name: p.clone() for name, p in smollm2.model.named_parameters()}
    input_ids = torch.tensor([smollm2.tokenizer(SENTENCE)["input_ids"]])  # (1, T)
    base, base_taps = _layer_outputs(smollm2, input_ids, layer)
    with heads_switched_off(smollm2, [(layer, head)]):
        ablated, ablated_taps = _layer_outputs(smollm2, input_ids, layer)
    # Up to and including the ablated layer, every head's attention is what it was.
    for l in range(layer + 1):
        torch.testing.assert_close(ablated.attentions[l], base.attentions[l], rtol=0, atol=0)
    assert not torch.equal(ablated.attentions[layer + 1], base.attentions[layer + 1])  # later layers feel it
    # The layer's output changes by exactly what that head wrote through the output projection.
    columns = slice(head * head_dim, (head + 1) * head_dim)
    weight = attention_modules(smollm2.model)[0][layer].o_proj.weight  # (d, H * hd)
    head_part = base_taps["into"][..., columns] @ weight[:, columns].T  # (1, T, d)
    torch.testing.assert_close(base_taps["out"] - ablated_taps["out"], head_part, rtol=1e-4, atol=1e-5)
    # Afterwards the shared model is as it was: no hook left, same weights, same logits.
    for module in smollm2.model.modules():
        assert not module._forward_pre_hooks
    assert all(torch.equal(p, before_parameters[name]) for name, p in smollm2.model.named_parameters())
    torch.testing.assert_close(smollm2.model(input_ids=input_ids).logits, base.logits, rtol=0, atol=0)


def test_ablation_reports_the_loss_and_next_token_before_and_after(smollm2):
    result = ablate_heads(smollm2, SENTENCE, [(0, 1), (3, 4)])
    assert result.heads == [(0, 1), (3, 4)] and result.num_tokens == 9
    assert 0 < result.before.loss < 20 and result.after.loss != result.before.loss
    assert result.candidates[0][1] == pytest.approx(result.before.probabilities.max())
    assert {"next_token", "probability_all_heads", "probability_heads_off"} == set(result.rows()[0])
    with pytest.raises(ValueError, match="no head H9 in layer 0"):
        ablate_heads(smollm2, SENTENCE, [(0, 9)])
    with pytest.raises(ValueError, match="not a decoder"):
        ablate_heads(load_model("minilm"), SENTENCE, [(0, 1)])


@pytest.fixture(scope="module")
def linked_app():
    """The page opened from a link that sets every new interaction at once (one run serves several tests)."""
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.query_params.update({"layer": "2", "head": "3", "queries": "6,7", "ablate": "0.1,3.4"})
    app.run()
    return app


def test_a_link_restores_query_tokens_rollout_flow_and_ablation(linked_app):
    app = linked_app
    assert not app.exception
    specs = figures(app)
    summed = specs["Layer 2, head 3: attention of 2 query token(s), summed"]
    assert array(summed["data"][0]["y"]).sum() == pytest.approx(2.0, abs=2e-3)
    rolled = array(specs["Attention rollout, layer by layer (approximation)"]["data"][0]["z"])  # (L, T)
    assert rolled.shape == (30, 9)
    np.testing.assert_allclose(rolled.sum(axis=-1), 1.0, atol=1e-5)  # every layer's row sums to 1
    assert array(specs["Attention flow to the last layer (approximation)"]["data"][0]["y"]).sum() == pytest.approx(1.0)
    assert "Next token with L0 H1, L3 H4 off" in specs
    metrics = {m.label: m for m in app.metric}
    assert float(metrics["Loss on the text (8 predictions, nats)"].value) > 0
    assert app.multiselect[0].value == [6, 7] and app.multiselect[1].value == [(0, 1), (3, 4)]
    assert dict(app.query_params) == {"layer": "2", "head": "3", "queries": "6,7", "ablate": "0.1,3.4"}


def test_every_token_is_labelled_on_every_axis_of_every_token_chart(linked_app):
    for title, spec in figures(linked_app).items():
        layout = spec["layout"]
        for axis in ("xaxis", "yaxis"):
            ticks = layout.get(axis, {}).get("ticktext")
            if ticks and not ticks[0].startswith(("L", "H", "x")):  # token axes (not layers, heads or ratios)
                assert ticks == TOKENS, (title, axis, ticks)


def test_a_link_hides_special_tokens_and_says_so():
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.query_params.update({"text": "the cat saw the dog", "model": "minilm", "hide_special": "1"})
    app.run()
    assert not app.exception
    head = figures(app)["Layer 0, head 0"]
    assert head["layout"]["xaxis"]["ticktext"] == ["the", "cat", "saw", "the", "dog"]
    np.testing.assert_allclose(array(head["data"][0]["z"]).sum(axis=-1), 1.0, atol=1e-3)
    assert any("Special tokens hidden ([CLS], [SEP])" in c.value for c in app.caption)
    assert app.query_params["hide_special"] == "1"
