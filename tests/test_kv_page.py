"""The KV-cache page headless: curves per variant, tables, a shared link, and measured equals formula."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from tests.specs import figures

APP = "../app.py"


def open_kv_page(query: dict[str, str] | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=300)
    app.query_params.update(query or {})
    app.run()  # the home page reads the link on the session's first run
    app.switch_page("views/kv_cache.py")
    return app


@pytest.fixture
def kv_page():
    return open_kv_page()


def test_the_page_draws_every_variant_of_the_default_model(kv_page):
    kv_page.run()
    assert not kv_page.exception
    curve = figures(kv_page)["Memory for weights and KV cache"]
    names = [trace["name"] for trace in curve["data"] if trace.get("showlegend", True)]
    assert names == ["MHA (9 KV heads)", "GQA (3 KV heads), as built", "MLA (256 + 32)", "MQA (1 KV head)"]
    variants = kv_page.dataframe[0].value
    assert list(variants["KiB / token"]) == [67.5, 22.5, 16.875, 7.5]  # bf16, 30 layers, head_dim 64


def test_a_shared_link_restores_model_dtype_batch_and_context():
    kv_page = open_kv_page({"config": "llama-3-8b", "dtype": "fp8", "weights_dtype": "bf16", "batch": "4",
                            "tokens": "131072"})
    kv_page.run()
    assert not kv_page.exception
    variants = kv_page.dataframe[0].value
    as_built = variants[variants["variant"] == "GQA (8 KV heads), as built"].iloc[0]
    assert as_built["KiB / token"] == 64.0  # 32 layers × 2 × 8 × 128 × 1 byte
    assert as_built["cache at 131,072 tokens (GiB)"] == 32.0  # × 131,072 tokens × 4 sequences
    # the weights keep their own dtype: bf16 weights beside the fp8 cache
    assert any("(15.0 GiB in bf16)" in caption.value for caption in kv_page.caption)
    assert kv_page.segmented_control[1].value == "bf16" and kv_page.segmented_control[0].value == "fp8"


def test_measured_cache_equals_the_formula_in_every_variant(kv_page):
    kv_page.run()
    kv_page.button(key="measure").click().run()
    assert not kv_page.exception
    measured = kv_page.dataframe[2].value  # after the variants and the deployment tables
    assert len(measured) == 4
    assert (measured["measured bytes"] == measured["formula bytes"]).all()
    assert list(measured["values / token / layer"]) == [384, 1152, 128, 128]


def test_a_pasted_config_is_read_and_its_traps_explained(kv_page):
    kv_page.run()
    kv_page.selectbox[0].set_value("your own config").run()
    falcon = {"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71, "num_hidden_layers": 32,
              "multi_query": True, "num_kv_heads": 71}
    kv_page.text_area[0].set_value(json.dumps(falcon)).run()
    assert not kv_page.exception
    variants = kv_page.dataframe[0].value
    as_built = variants[variants["variant"].str.endswith("as built")].iloc[0]
    assert as_built["KiB / token"] == 8.0  # multi_query wins over num_kv_heads: 32 × 2 × 64 × 2 bytes
    # a partial config (DeepSeek-V2-Lite's attention without its MoE fields) still gives the cache
    lite = {"model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 27,
            "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
            "v_head_dim": 128}
    kv_page.text_area[0].set_value(json.dumps(lite)).run()
    assert not kv_page.exception
    variants = kv_page.dataframe[0].value
    assert variants[variants["variant"] == "MLA (512 + 64), as built"].iloc[0]["KiB / token"] == 30.375  # 27×576×2
    assert any("num_experts_per_tok" in warning.value for warning in kv_page.warning)


def test_the_variant_lab_choice_joins_the_chart():
    kv_page = open_kv_page({"variant": "mla", "latent_rank": "96"})
    kv_page.run()
    curve = figures(kv_page)["Memory for weights and KV cache"]
    assert "MLA (96 + 0)" in [trace["name"] for trace in curve["data"]]


def test_a_link_restores_a_deployment_and_its_capacity():
    from explorer.config import read_config
    from explorer.deployment import Deployment, capacity_table, decode_bound
    from explorer.hardware import gpu_named
    from explorer.kv import variant_layouts
    from explorer.params import estimate_parameters

    kv_page = open_kv_page({"config": "deepseek-v3", "weights_dtype": "fp8", "gpus": "8", "parallel": "dp-attention",
                            "tokens": "32768", "batch": "64"})
    kv_page.run()
    assert not kv_page.exception
    capacity = kv_page.dataframe[1].value
    layout = read_config("deepseek-v3")
    expected = capacity_table(variant_layouts(layout), estimate_parameters(layout), "fp8",
                              Deployment(gpu_named("H200"), 8, "dp-attention"), 32768, 64, "bf16")
    mla = capacity.iloc[[row["variant"] for row in expected].index("MLA (512 + 64), as built")]
    assert mla["largest batch at 32,768 tokens"] == expected[2]["largest batch at 32,768 tokens"] > 64
    assert mla["fits"] and mla["bound by"] == "memory"
    assert any("8×H200 (dp-attention)" in caption.value for caption in kv_page.caption)
    drawn = figures(kv_page)
    context = drawn["Decode ceilings on 8×H200 (dp-attention) against context: memory (solid) and compute (dotted)"]
    mla_memory = next(trace for trace in context["data"] if trace["name"] == "MLA (512 + 64), as built: memory")
    at_32k = decode_bound(layout, estimate_parameters(layout), "fp8", Deployment(gpu_named("H200"), 8, "dp-attention"),
                          32768, 64, "bf16")
    assert 32768 in mla_memory["x"]
    assert mla_memory["y"][list(mla_memory["x"]).index(32768)] == pytest.approx(at_32k.memory_tokens_per_s)


@pytest.mark.parametrize("config, opened, weights, chart", [
    ("deepseek-v3", "8×H200 (dp-attention)", "fp8", "KV cache alone"),  # 625 GiB of weights dwarf the cache
    ("llama-3-70b", "2×H100 SXM (tp)", "bf16", "Memory for weights and KV cache"),
    ("smollm2-135m", "1×H200 (tp)", "bf16", "Memory for weights and KV cache"),
])
def test_each_reference_model_opens_on_a_deployment_that_serves_it(config, opened, weights, chart):
    kv_page = open_kv_page({"config": config})
    kv_page.run()
    assert not kv_page.exception
    assert kv_page.segmented_control[1].value == weights
    drawn = figures(kv_page)
    assert chart in drawn
    context = next(figure for title, figure in drawn.items() if title.startswith(f"Decode ceilings on {opened} "
                                                                                 "against context"))
    as_built = next(trace for trace in context["data"] if trace["name"].endswith("as built: memory"))
    assert any(y is not None for y in as_built["y"])  # the deployment serves the model: the ceilings are drawn
    assert any(f"Each {opened.split('×')[1].split(' (')[0]}:" in caption.value for caption in kv_page.caption)
    capacity = kv_page.dataframe[1].value
    assert capacity[capacity["variant"].str.endswith("as built")].iloc[0]["fits"]
    assert not kv_page.warning  # nothing on this deployment fails to fit


def test_a_link_chooses_the_cache_view():
    kv_page = open_kv_page({"config": "deepseek-v3", "cache_view": "with-weights"})
    kv_page.run()
    assert "Memory for weights and KV cache" in figures(kv_page)
    kv_page.radio[0].set_value("cache-only").run()
    assert "KV cache alone" in figures(kv_page) and kv_page.query_params["cache_view"] == "cache-only"
