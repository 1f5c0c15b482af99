"""The training-free refinements of a conversion: latent ranks per layer from measured sensitivity, RoPE pairs
chosen by their q/k norms (MHA2MLA), and the least-squares refit of the output projections.

Each keeps the exactness properties (full rank stays exact; absorbed = naive), its cache equals the formula, and
the shared original is untouched. Tiny random Llamas with SmolLM2's real tokenizer read real calibration prose.
"""

import itertools
import json

import pytest
import torch

from explorer.kv import measured_cache
from explorer.variants import VariantSpec, convert
from explorer.variants.allocate import allocate, candidate_ranks, rank_step
from explorer.variants.calibrate import calibrate, calibration_inputs
from explorer.variants.refit import towards_identity
from explorer.variants.report import absorbed_vs_naive
from explorer.variants.spec import attention_shape, cache_values_per_token
from tests.tiny import tiny_llama

INPUT_IDS = torch.randint(0, 1000, (1, 24), generator=torch.Generator().manual_seed(2))  # (B, T)


@pytest.fixture(scope="module")
def tiny(smollm2):
    """4 layers, 4 query heads over 2 KV heads of 16 dims, random weights, float64; SmolLM2's tokenizer."""
    return tiny_llama(smollm2.tokenizer, "tiny-llama-methods", layers=4, dtype=torch.float64, max_positions=1024)


@pytest.fixture(scope="module")
def calibration(tiny):
    return calibrate(tiny, 512)


def weights(model) -> dict[str, torch.Tensor]:
    return {name: parameter.clone() for name, parameter in model.state_dict().items()}


def logits(loaded) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model(input_ids=INPUT_IDS).logits  # (B, T, V)


def test_allocation_is_the_exact_optimum_for_the_budget():
    generator = torch.Generator().manual_seed(0)
    ranks = candidate_ranks(64, 16)  # 16, 32, 48, 64
    assert ranks == [16, 32, 48, 64]
    for _ in range(20):
        costs = torch.rand(4, len(ranks), generator=generator).tolist()
        chosen = allocate(costs, ranks, 4 * 32)
        assert sum(chosen) == 4 * 32
        best = min((sum(costs[layer][ranks.index(rank)] for layer, rank in enumerate(choice)), choice)
                   for choice in itertools.product(ranks, repeat=4) if sum(choice) == 4 * 32)
        assert sum(costs[layer][ranks.index(rank)] for layer, rank in enumerate(chosen)) == pytest.approx(best[0])


def test_an_unreachable_budget_takes_the_largest_total_under_it_and_a_tiny_one_is_refused():
    assert sum(allocate([[0.0, 0.0]] * 3, [32, 64], 150)) == 128
    with pytest.raises(ValueError, match="choose a larger rank"):
        allocate([[0.0, 0.0]] * 3, [32, 64], 64)


def test_sensitivity_ranks_spend_the_budget_and_the_cache_equals_the_formula(tiny, calibration, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_EXPLORER_CACHE", str(tmp_path))
    before = weights(tiny.model)
    spec = VariantSpec("mla", latent_rank=32, svd="data", rank_allocation="sensitivity")
    assert rank_step(spec) == 16
    conversion = convert(tiny, spec, calibration)
    chosen = conversion.spec.layer_ranks
    assert len(chosen) == 4 and sum(chosen) == 4 * 32 and set(chosen) <= {16, 32, 48, 64}
    assert conversion.latent_ranks == list(chosen)
    measured, _ = measured_cache(conversion.loaded.model, INPUT_IDS[:, :8])
    assert measured == cache_values_per_token(conversion.spec, attention_shape(tiny.config)) == list(chosen)
    assert "sensitivity-ranks" in conversion.spec.label()
    # measured once, then read from disk: the same ranks
    saved = list((tmp_path / "sensitivity").glob("*.json"))
    assert len(saved) == 1 and len(json.loads(saved[0].read_text())["kl"]) == 4
    assert convert(tiny, spec, calibration).spec.layer_ranks == chosen
    for name, value in weights(tiny.model).items():
        assert torch.equal(value, before[name]), f"{name} of the shared original changed"


def test_rope_pairs_by_norm_are_the_largest_products_and_stay_exact_where_they_must(tiny, calibration):
    spec = VariantSpec("mla", form="decoupled", latent_rank=40, rope_dims=8, merge="aligned", attn_path="absorb",
                       rope_pairs="norm", svd="data")
    conversion = convert(tiny, spec, calibration)
    assert len(conversion.rope_pairs) == 4 and all(len(pairs) == 4 for pairs in conversion.rope_pairs)
    assert any(pairs != [0, 1, 2, 3] for pairs in conversion.rope_pairs), "the norm rule chose only the highest"
    # the rule, recomputed from real q and k on the calibration text: pair p scores Σ_h √E‖q_h,p‖² √E‖k_g(h),p‖²
    seen = {}
    layer = tiny.model.model.layers[1].self_attn
    handles = [projection.register_forward_hook(lambda m, a, out, name=name: seen.setdefault(name, out))
               for name, projection in (("q", layer.q_proj), ("k", layer.k_proj))]
    try:
        with torch.inference_mode():
            for row in calibration_inputs(tiny, 512):
                tiny.model(input_ids=row)
    finally:
        for handle in handles:
            handle.remove()
    q = seen["q"].reshape(-1, 4, 2, 8).pow(2).sum(2).mean(0).sqrt()  # (H, 8 pairs): [first half | second half]
    k = seen["k"].reshape(-1, 2, 2, 8).pow(2).sum(2).mean(0).sqrt()  # (G, 8)
    score = (q * k.repeat_interleave(2, dim=0)).sum(0)  # (8,)
    assert sorted(score.topk(4).indices.tolist()) == conversion.rope_pairs[1]
    # absorbed = naive with the chosen pairs (the shared RoPE key of 2 KV heads is lossy at any rank)
    assert absorbed_vs_naive(conversion.loaded.model, INPUT_IDS) <= 1e-10
    measured, _ = measured_cache(conversion.loaded.model, INPUT_IDS[:, :8])
    assert measured == cache_values_per_token(spec, attention_shape(tiny.config)) == [40 + 8] * 4


def test_the_refit_identity_ridge_keeps_an_exact_map_and_recovers_a_mixed_one():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4000, 6, generator=generator, dtype=torch.float64)  # (N, d)
    assert torch.allclose(towards_identity(inputs, inputs), torch.eye(6, dtype=torch.float64), atol=1e-12)
    mixing = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    fitted = towards_identity(inputs, inputs @ mixing.T, ridge=1e-6)
    assert torch.allclose(fitted, mixing, atol=1e-4)


def test_refit_keeps_full_rank_exact_and_brings_a_lossy_layer_closer(tiny, calibration):
    before = weights(tiny.model)
    exact = convert(tiny, VariantSpec("mla", latent_rank=64, svd="data", refit="output"), calibration)
    assert exact.refit_seconds > 0
    # the map M_h is solved from E[ô ôᵀ], whose small directions amplify float64 rounding: 1e-7, not 1e-12
    torch.testing.assert_close(logits(exact.loaded), logits(tiny), rtol=0, atol=1e-6)
    plain = convert(tiny, VariantSpec("mqa"), calibration)
    refitted = convert(tiny, VariantSpec("mqa", refit="output"), calibration)
    ids = calibration_inputs(tiny, 512)[0]  # (1, T): the text the refit read

    def gap(loaded) -> float:
        with torch.inference_mode():
            return float((loaded.model(input_ids=ids).logits - tiny.model(input_ids=ids).logits).pow(2).mean())

    assert gap(refitted.loaded) < gap(plain.loaded)
    measured, _ = measured_cache(refitted.loaded.model, INPUT_IDS[:, :8])
    assert measured == cache_values_per_token(refitted.spec, attention_shape(tiny.config))
    for name, value in weights(tiny.model).items():
        assert torch.equal(value, before[name]), f"{name} of the shared original changed"


def test_bert_refuses_a_refit_with_a_sentence(minilm):
    with pytest.raises(ValueError, match="outside the attention layer"):
        convert(minilm, VariantSpec("mla", latent_rank=192, refit="output"))


def test_truncation_aware_whitening_is_the_data_aware_latent(smollm2):
    """SVD-LLM's truncation-aware whitening (SVD of W·S with S Sᵀ = E[x xᵀ], truncated, then ·S⁻¹) gives the same
    rank-r K/V projection as the data-aware PCA this project uses (top eigenvectors of W E[x xᵀ] Wᵀ): both minimise
    E‖(W − Ŵ) x‖². So it is not a separate option; checked here on a real SmolLM2 layer's keys and values."""
    from explorer.variants.calibrate import calibrate as run_calibration
    from explorer.variants.convert import _nope_index, latent_spectrum
    from explorer.variants.families import family_of

    moment = run_calibration(smollm2, 512).input_moments[3]  # (D, D)
    family = family_of(smollm2.config)
    shape = attention_shape(smollm2.config)
    w = family.read(family.attention_modules(smollm2.model)[3], shape)
    spec = VariantSpec("mla", latent_rank=96, svd="data", balance_kv=False)
    nope = _nope_index(shape.head_dim, torch.zeros(0, dtype=torch.long))
    weighted, _, _, eigenvectors = latent_spectrum(w.wq, w.wk, w.wv, w.wo, spec, shape.kv_heads, nope, moment)
    top = eigenvectors[:, :96]  # (n, r)
    ours = top @ top.T @ weighted  # (n, D): the rank-r K/V map the latent keeps
    whitening = torch.linalg.cholesky(moment + 1e-10 * torch.eye(len(moment), dtype=moment.dtype))  # (D, D)
    u, s, vh = torch.linalg.svd(weighted @ whitening, full_matrices=False)
    theirs = (u[:, :96] * s[:96]) @ vh[:96] @ torch.linalg.inv(whitening)  # (n, D)
    error = lambda approx: torch.einsum("nd,de,ne->", weighted - approx, moment, weighted - approx)
    assert float(error(ours)) == pytest.approx(float(error(theirs)), rel=1e-6)
    assert torch.allclose(ours, theirs, atol=1e-6 * float(weighted.abs().max()))


def test_a_lab_link_with_refinements_converts_with_them_and_keeps_them():
    from streamlit.testing.v1 import AppTest

    from tests.specs import figures

    app = AppTest.from_file("../app.py", default_timeout=900)
    app.query_params.update({"text": "The giant ate the apple because it was hungry.", "variant": "mla",
                             "form": "decoupled", "latent_rank": "160", "rope_dims": "32", "merge": "aligned",
                             "rope_pairs": "rotation", "refit": "output", "ranks": "sideways"})
    app.run()
    assert any("sideways" in warning.value for warning in app.warning)  # an unknown value is named, then replaced
    app.switch_page("views/variant_lab.py").run()
    assert not app.exception, [e.value for e in app.exception]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["KV values / token / layer"] == "192"  # latent 160 + shared RoPE key 32: half of 384
    shown = " ".join(figures(app))
    assert "by-rotation" in shown and "refit" in shown  # the converted head's title names the recipe
    assert app.query_params["rope_pairs"] == "rotation" and app.query_params["refit"] == "output"


@pytest.mark.parametrize("value_weight", [0.25, 4.0])
def test_any_value_weight_is_exact_at_full_rank_and_moves_the_latent_below_it(tiny, calibration, value_weight):
    full = VariantSpec("mla", latent_rank=64, svd="data", weighting="query-output", value_weight=value_weight)
    # the weighted space is undone by solving with A (query energies, W_O): its conditioning leaves ~1e-7
    torch.testing.assert_close(logits(convert(tiny, full, calibration).loaded), logits(tiny), rtol=0, atol=1e-6)
    lossy = {weight: convert(tiny, VariantSpec("mla", latent_rank=24, svd="data", value_weight=weight), calibration)
             for weight in (1.0, value_weight)}
    assert "v×" in lossy[value_weight].spec.label() and "v×" not in lossy[1.0].spec.label()
    assert not torch.allclose(logits(lossy[1.0].loaded), logits(lossy[value_weight].loaded))
