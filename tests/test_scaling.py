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
from explorer.variants.convert import convert
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


@torch.inference_mode()
def test_absorbed_mla_step_equals_the_naive_step(smollm2):
    """Both decode paths read the same cache and weights: folding W_UK and W_UV only reorders the products."""
    model = convert(scaling.first_layers(smollm2, 2), scaling.DECODE_VARIANTS["MLA naive"]).loaded.model
    attn = model.model.layers[1].self_attn
    generator = torch.Generator().manual_seed(0)
    cache = scaling._decode_caches(model, 40, 2, generator)[1]  # (2, 1, 41, 288)
    x = torch.randn(2, 1, model.config.hidden_size, generator=generator)  # (B, 1, d)
    cos, sin = model.model.rotary_emb(x, torch.full((2, 1), 40))  # (B, 1, hd)
    naive = scaling._mla_step(attn, x, cos, sin, cache, 40, absorbed=False)
    w_uk, w_uv = attn.up_weights_per_head()
    absorbed = scaling._mla_step(attn, x, cos, sin, cache, 40, absorbed=True, w_uk=w_uk, w_uv=w_uv)
    torch.testing.assert_close(absorbed, naive, rtol=1e-4, atol=1e-5)


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
