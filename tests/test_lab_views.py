"""The variant lab's views of what a conversion hurts: rotary shares per head, damaged heads, published figures."""

import json

import numpy as np
import pytest
import torch
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explorer.catalogue import CATALOGUE
from explorer.charts.damage import damage_scatter
from explorer.charts.rope import pair_share_heatmap
from explorer.committed import uptrain_rows
from explorer.damage import attention_shift, js_divergence, measure_damage
from explorer.lab import committed_report
from explorer.published import PUBLISHED, our_rows
from explorer.rope_shares import decoupled_pairs, head_shares, kept_share, measure_shares, pair_contributions
from explorer.run import run_attention
from explorer.variants import VariantSpec, convert
from tests.specs import array, figures

TEXT = "The giant ate the apple because it was hungry. Then it walked home across the hills and slept."


def test_rotary_shares_sum_to_one_and_match_q_dot_k_recomputed_for_one_head(smollm2):
    ids = torch.tensor([smollm2.tokenizer(TEXT)["input_ids"]])  # (1, T)
    shares = measure_shares(smollm2, ids, "the lab's text")
    assert shares.shares.shape == (30, 9, 32) and np.allclose(shares.shares.sum(axis=-1), 1.0)
    assert shares.wavelengths[0, 0] == pytest.approx(2 * np.pi)  # pair 0 turns once every 2π tokens

    # layer 5, head 4, from the layer's input by hand: norm, projections, rotation
    layer, head = 5, 4
    with torch.inference_mode():
        out = smollm2.model(input_ids=ids, output_hidden_states=True, output_attentions=True)
        attn = smollm2.model.model.layers[layer].self_attn
        x = smollm2.model.model.layers[layer].input_layernorm(out.hidden_states[layer])  # (1, T, D)
        T = ids.shape[1]
        q = attn.q_proj(x).view(1, T, 9, 64).transpose(1, 2)  # (1, H, T, hd)
        k = attn.k_proj(x).view(1, T, 3, 64).transpose(1, 2)  # (1, G, T, hd)
        cos, sin = smollm2.model.model.rotary_emb(x, torch.arange(T)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
    q_head, k_head = q[0, head].double(), k[0, head // 3].double()  # (T, hd): head 4 reads KV head 1
    scores = q_head @ k_head.T  # (T, T)
    assert torch.allclose(pair_contributions(q_head, k_head).sum(0), scores, atol=1e-9)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    probabilities = torch.softmax((scores * attn.scaling).masked_fill(~causal, -torch.inf), dim=-1)
    assert torch.allclose(probabilities, out.attentions[layer][0, head].double(), atol=1e-4)  # the model's own q, k
    assert np.allclose(head_shares(q_head, k_head).numpy(), shares.shares[layer, head], atol=1e-5)

    kept = decoupled_pairs(30, 32)
    assert kept[0] == list(range(16))
    assert np.allclose(kept_share(shares.shares, kept), shares.shares[:, :, :16].sum(-1).mean(-1))
    with pytest.raises(ValueError, match="30 layers"):
        kept_share(shares.shares, kept[:3])


@pytest.mark.skipif(not CATALOGUE["gemma3"].is_installed(), reason="Gemma-3-270M is an optional package")
def test_gemma3_rotary_shares_read_its_normed_keys_and_two_rope_bases():
    from explorer.loading import load_model

    gemma = load_model("gemma3", device="cpu")
    ids = torch.tensor([gemma.tokenizer(TEXT)["input_ids"]])  # (1, T)
    shares = measure_shares(gemma, ids, "the lab's text")
    assert shares.shares.shape == (18, 4, 128) and np.allclose(shares.shares.sum(axis=-1), 1.0)
    assert len({round(float(w), 3) for w in shares.wavelengths[:, -1]}) == 2  # local and global layers


def test_js_divergence_is_zero_for_equal_rows_and_one_for_disjoint():
    assert js_divergence(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == 0.0
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    rows = np.tril(np.ones((1, 1, 3, 3))) / np.arange(1, 4)[:, None]  # (1, 1, 3, 3) causal, uniform
    assert attention_shift(rows, rows).shape == (1, 1)
    with pytest.raises(ValueError, match="same tokens"):
        attention_shift(rows, rows[..., :2, :2])


def test_damage_is_zero_for_exact_conversions_positive_for_mqa_and_its_estimate_matches_patching(smollm2):
    params = {name: (p.double().sum().item(), p.double().abs().sum().item())
              for name, p in smollm2.model.named_parameters()}
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in smollm2.model.modules()]
    run = run_attention(smollm2, TEXT)
    damages = {}
    for spec in (VariantSpec("mha"), VariantSpec("mla", latent_rank=384, svd="plain"), VariantSpec("mqa")):
        converted = convert(smollm2, spec).loaded
        damages[spec.variant] = measure_damage(smollm2, converted, run.token_ids, run.attentions,
                                               run_attention(converted, TEXT).attentions)
    assert damages["mha"].js.max() == 0.0 and np.abs(damages["mha"].loss_effect).max() == 0.0  # bit-identical
    assert damages["mla"].js.max() < 1e-9 and np.abs(damages["mla"].loss_effect).max() < 1e-5  # full rank: exact
    mqa = damages["mqa"]
    assert mqa.js.shape == (30, 9) and mqa.js.min() > 0 and mqa.js.max() > 0.3  # measured 0.77
    assert mqa.loss_converted > mqa.loss_original + 1  # measured 3.9 -> 9.2 nats
    top = mqa.checks[0]  # the largest estimate, checked by replacing only that head's output in the original
    assert abs(top.estimate) == np.abs(mqa.loss_effect).max()
    assert np.sign(top.estimate) == np.sign(top.patched) and 0.5 < top.estimate / top.patched < 2  # measured 0.84
    ranked = mqa.ranked("loss", top=5)
    assert [row["rank"] for row in ranked] == [1, 2, 3, 4, 5] and ranked[0]["loss_patched_nats"] == top.patched
    # the shared model is untouched: same weights, no gradients, no hooks left behind
    assert params == {name: (p.double().sum().item(), p.double().abs().sum().item())
                      for name, p in smollm2.model.named_parameters()}
    assert all(p.grad is None for p in smollm2.model.parameters())
    assert hooks == [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in smollm2.model.modules()]


def test_charts_outline_kept_pairs_and_name_each_point_by_layer_and_head():
    shares = np.full((3, 8), 1 / 8)
    figure = pair_share_heatmap(shares, 2 * np.pi * 10 ** np.arange(8), [0, 1, 2, 6], "t")
    outlines = [(s.x0, s.x1) for s in figure.layout.shapes]
    assert outlines == [(-0.5, 2.5), (5.5, 6.5)]  # one rectangle per run of kept pairs, over the heads keeping it
    assert [(s.y0, s.y1) for s in figure.layout.shapes] == [(-0.5, 2.5)] * 2
    with pytest.raises(ValueError, match="numbered 0 to 7"):
        pair_share_heatmap(shares, np.ones(8), [9], "t")
    js, effect = np.zeros((2, 3)), np.array([[0.0, 0.2, 0.0], [-0.5, 0.0, 0.1]])
    scatter = damage_scatter(js, effect, "t", selected=(1, 0))
    assert scatter.data[0].customdata[3] == [1, 0] and scatter.layout.clickmode == "event+select"
    assert scatter.layout.annotations[0].text == "L1 H0" and scatter.data[1].name == "shown above: L1 H0"
    with pytest.raises(ValueError, match="per \\(layer, head\\)"):
        damage_scatter(js, effect[:1], "t")


def test_published_rows_name_their_source_and_ours_come_from_the_committed_results():
    assert all(row["source"] and row["checked"] and "arXiv:" in row["source"] for row in PUBLISHED)
    assert [row["figure"] for row in PUBLISHED if row["paper"] == "MHA2MLA"] == ["44.50", "43.06", "41.84"]
    report = committed_report("smollm2")
    ours = our_rows(report, uptrain_rows())
    by_label = {row["label"]: row for row in report["variants"]}
    assert ours[0]["variant"] == "original" and ours[0]["perplexity"] == by_label["original"]["perplexity"]
    mha2mla = [row for row in ours if row["compares_with"].startswith("MHA2MLA")]
    assert [row["kv_values_per_token_per_layer"] for row in mha2mla] == [128.0, 64.0]  # nearest to -68.75%, -81.25%
    assert all(row["metric"].startswith("perplexity") for row in ours)
    assert any("uptraining" in row["training"] for row in ours)
    assert our_rows(None) == [] and our_rows(committed_report("minilm")) == []


def click_point(app: AppTest, title_start: str, customdata: list[int]) -> None:
    """Click a point of a plotly chart headless: send the selection a browser sends, then rerun."""
    chart = next(el for el in app.get("plotly_chart")
                 if json.loads(el.proto.spec)["layout"]["title"]["text"].startswith(title_start))
    selection = {"selection": {"points": [{"customdata": customdata}], "point_indices": [0], "box": [], "lasso": []}}
    states = app._tree.get_widget_states()
    states.widgets.append(WidgetState(id=chart.proto.id, json_value=json.dumps(json.dumps(selection))))
    app._run(states)


def test_the_views_run_from_a_link_and_clicking_a_head_selects_it():
    app = AppTest.from_file("../app.py", default_timeout=900)
    app.query_params.update({"variant": "mqa", "layer": "3", "head": "5", "text": TEXT, "rope_text": "text",
                             "damage_rank": "loss"})
    app.run()
    app.switch_page("views/variant_lab.py").run()
    assert not app.exception, [e.value for e in app.exception]
    specs = figures(app)
    layer_shares = array(specs["Layer 3: share of |q·k| per rotary pair, by head"]["data"][0]["z"])
    assert layer_shares.shape == (9, 32) and np.allclose(layer_shares.sum(axis=1), 100, atol=1e-3)
    assert "Every layer: share of |q·k| per rotary pair, mean over heads" in specs
    assert any("the lab's text" in c.value and "would keep at 32 RoPE dims" in c.value for c in app.caption)
    damage = app.dataframe[[i for i, d in enumerate(app.dataframe) if "loss_estimate_nats" in d.value][0]].value
    assert list(damage["rank"]) == list(range(1, 11))
    effects = damage["loss_estimate_nats"].abs().to_numpy()
    assert (np.diff(effects) <= 0).all()  # ranked by |loss effect|, as the link asks
    assert any("patched" in c.value and "first-order" in c.value for c in app.caption)
    tables = [d.value for d in app.dataframe]
    assert any("44.50" in set(t.get("figure", [])) for t in tables)
    assert any("compares_with" in t and (t["perplexity"] > 0).all() for t in tables)
    assert app.query_params["rope_text"] == "text" and app.query_params["damage_rank"] == "loss"

    click_point(app, "mqa kv=1 mean: every head", [7, 2])
    assert not app.exception, [e.value for e in app.exception]
    assert app.query_params["layer"] == "7" and app.query_params["head"] == "2"
    specs = figures(app)
    assert "Before: layer 7, head 2" in specs and "After: layer 7, head 2" in specs
    assert "Original: layer 7, head 2" in specs  # the lab's own pair above follows the click too
