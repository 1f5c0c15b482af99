"""Scaling: the slope fit on synthetic data, the decode paths agree, the benchmark script runs at tiny sizes and
writes valid results, the charts refuse bad input, and the page draws the committed results headless."""

import json
import math

import pytest
import torch
from streamlit.testing.v1 import AppTest

from bench.scaling import main as bench_main
from explorer import scaling
from explorer.hardware import gpu_named
from explorer.charts.scaling import decode_figure, scaling_figure
from explorer.variants.gqa import GroupedQueryAttention
from explorer.variants.mla import MultiHeadLatentAttention, side_by_side
from tests.specs import array, figures


def test_the_slope_fit_recovers_known_powers():
    lengths = [128, 256, 512, 1024, 2048]
    assert scaling.fit_slope(lengths, [3e-9 * t**2 for t in lengths]) == pytest.approx(2.0)
    assert scaling.fit_slope(lengths, [5e-6 * t for t in lengths]) == pytest.approx(1.0)
    wobble = [1.05, 0.95, 1.02, 0.97, 1.01]  # ±5% timing noise moves the slope by a few hundredths only
    assert scaling.fit_slope(lengths, [w * t**2 for w, t in zip(wobble, lengths)]) == pytest.approx(2.0, abs=0.05)
    assert scaling.fit_slope(lengths, [1.0, math.nan, 4.0, math.nan, 16.0]) == pytest.approx(1.0)  # gaps skipped
    with pytest.raises(ValueError, match="one value per length"):
        scaling.fit_slope(lengths, [1.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        scaling.fit_slope(lengths, [1.0, 0.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="two different lengths"):
        scaling.fit_slope([128, 256], [1.0, math.nan])


def test_length_grid_doubles():
    assert scaling.length_grid(8192) == [128, 256, 512, 1024, 2048, 4096, 8192]
    with pytest.raises(ValueError, match="longest length"):
        scaling.length_grid(64, 128)


@pytest.fixture(scope="module")
def decode_models(smollm2):
    return scaling.decode_models(scaling.first_layers(smollm2, 2))


def timed_logits(model, context=40, batch=2, seed=0) -> torch.Tensor:
    """The logits of one timed decode step over a cache of random values (the same values for the same seed)."""
    step, _ = scaling.decode_step(model, context, batch, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return step()  # (B, 1, vocab)


def test_decode_is_timed_through_the_variant_labs_own_modules(decode_models):
    assert list(decode_models) == list(scaling.DECODE_NAMES)
    for name, model in decode_models.items():
        attn = model.model.layers[1].self_attn
        expected = MultiHeadLatentAttention if name.startswith("MLA") else GroupedQueryAttention
        assert isinstance(attn, expected) and model.config._attn_implementation == "sdpa"
    assert [decode_models[name].model.layers[0].self_attn.kv_heads for name in ("MHA", "GQA", "MQA")] == [9, 3, 1]
    naive, absorbed = (decode_models[name].model.layers[0].self_attn for name in ("MLA naive", "MLA absorbed"))
    assert (naive.mla.attn_path, absorbed.mla.attn_path) == ("naive", "absorb")
    assert absorbed.wkv_b.weight.data_ptr() == naive.wkv_b.weight.data_ptr()  # one copy of the weights
    latent, k_pe = scaling.TimingCache(decode_models["MLA absorbed"], 8, 1, torch.Generator()).layers[0]
    assert side_by_side(latent, k_pe).data_ptr() == latent.data_ptr()  # the absorbed step reads the cache in place


def test_absorbed_mla_step_equals_the_naive_step(decode_models):
    """Both decode paths read the same cache and weights: folding W_UK and W_UV only reorders the products."""
    torch.testing.assert_close(timed_logits(decode_models["MLA absorbed"]), timed_logits(decode_models["MLA naive"]),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["GQA", "MLA absorbed"])
def test_the_fused_decode_step_equals_the_materialised_one(decode_models, name):
    model = decode_models[name]
    fused = timed_logits(model)
    model.set_attn_implementation("eager")
    try:
        materialised = timed_logits(model)
    finally:
        model.set_attn_implementation("sdpa")
    torch.testing.assert_close(fused, materialised, rtol=1e-4, atol=1e-4)


def test_the_benchmark_runs_at_tiny_sizes_and_writes_valid_results(tmp_path):
    path = tmp_path / "scaling-cpu.json"
    bench_main(["--device", "cpu", "--min-tokens", "16", "--max-tokens", "64", "--contexts", "8", "16",
                "--repeats", "1", "--layers", "2", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["info"]["device"] == "cpu" and data["info"]["dtype"] == "fp32"
    assert data["info"]["torch"] == torch.__version__ and data["info"]["date"][:2] == "20"
    results = scaling.load_results(path)
    assert [p.tokens for p in results.prefill] == [16, 32, 64]
    assert all(p.attention_sdpa_s > 0 and p.layer_sdpa_s > 0 and p.rest_of_layer_s > 0 for p in results.prefill)
    assert [p.attention_materialised_bytes for p in results.prefill] == [2 * 9 * t * t * 4 for t in (16, 32, 64)]
    assert set(results.slopes) == set(scaling.PREFILL_SERIES)
    assert results.memory_slopes == {"attention, materialised": 2.0, "attention, SDPA": 1.0}
    contexts, speeds = results.decode_series()
    assert contexts == [8, 16] and list(speeds) == list(scaling.DECODE_VARIANTS)
    assert all(v > 0 for values in speeds.values() for v in values)
    cache = {(p.variant, p.context): p.cache_bytes for p in results.decode}
    assert results.shape["layers"] == 2
    assert cache[("MHA", 16)] == 2 * 2 * 9 * 64 * 16 * 4  # layers · (K, V) · heads · head dim · tokens · fp32
    assert cache[("GQA", 16)] == cache[("MHA", 16)] // 3 and cache[("MQA", 16)] == cache[("MHA", 16)] // 9
    assert cache[("MLA naive", 16)] == cache[("MLA absorbed", 16)] == 2 * (256 + 32) * 16 * 4
    assert "slopes" in scaling.summary(results).lower()


def test_the_charts_draw_slopes_and_refuse_bad_input():
    figure = scaling_figure([128, 256], {"attention, SDPA": [1e-3, 4e-3]}, {"attention, SDPA": 2.0})
    assert figure.data[0].name == "attention, SDPA · slope 2.00"
    assert figure.layout.xaxis.type == figure.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="2 lengths"):
        scaling_figure([128, 256], {"a": [1.0]}, {})
    with pytest.raises(ValueError, match="positive numbers"):
        scaling_figure([128, 256], {"a": [1.0, 0.0]}, {})
    with pytest.raises(ValueError, match="not drawn"):
        scaling_figure([128, 256], {"a": [1.0, 2.0]}, {"b": 2.0})
    decode = decode_figure([512, 1024], {"MHA": [10.0, 8.0]}, {"MHA": [900.0, math.nan]}, "H200")
    assert [trace.name for trace in decode.data] == ["MHA", "MHA bound, H200"]
    with pytest.raises(ValueError, match="Name the GPU"):
        decode_figure([512, 1024], {"MHA": [10.0, 8.0]}, {"MHA": [900.0, 800.0]})


def open_scaling_page() -> AppTest:
    app = AppTest.from_file("../app.py", default_timeout=300)
    app.run()
    app.switch_page("views/scaling.py").run()
    return app


def test_the_page_draws_the_committed_results_with_a_roofline_when_a_gpu_is_chosen():
    committed = scaling.committed_results()
    assert "scaling-cpu" in committed, "bench/results/scaling-cpu.json is committed"
    app = open_scaling_page()
    assert not app.exception
    shown = figures(app)
    time_chart = shown["Prefill time, one layer (cpu)"]
    legends = [trace["name"] for trace in time_chart["data"]]
    assert any(name.startswith("attention, materialised · slope ") for name in legends)
    decode = shown[f"Decode, batch {committed['scaling-cpu'].decode_batch} (cpu)"]
    assert [trace["name"] for trace in decode["data"]] == list(scaling.DECODE_VARIANTS)

    app.selectbox[0].set_value("H200").run()
    assert not app.exception
    decode = figures(app)[f"Decode, batch {committed['scaling-cpu'].decode_batch} (cpu)"]
    bounds = {trace["name"]: array(trace["y"]) for trace in decode["data"] if "bound" in trace["name"]}
    assert list(bounds) == [f"{name} bound, H200" for name in ("MHA", "GQA", "MQA", "MLA")]
    expected = scaling.roofline_curves(committed["scaling-cpu"], gpu_named("H200"))["MHA"]
    assert array(bounds["MHA bound, H200"]).tolist() == pytest.approx(expected)
