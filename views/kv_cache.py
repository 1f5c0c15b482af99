"""KV cache: how much memory each attention variant needs as the context grows, and what fits on a GPU."""

import pandas as pd
import streamlit as st

from explorer import export, kv, ui
from explorer.charts.kv import cache_size_figure, roofline_figure

state = ui.view_state()
ui.show_notices()
st.title("The KV cache: attention's memory wall")
st.caption(
    "While a decoder generates, it keeps every past token's keys and values so it never recomputes them. "
    "That cache grows with every token, for every layer and every sequence in the batch."
)
ui.explain("kv_cache")

references = kv.reference_models()
left, middle, right = st.columns([3, 2, 2])
config_name, config = ui.config_picker(left, references)
dtype = middle.segmented_control("Cache dtype", list(kv.DTYPE_BITS), default=state.dtype) or state.dtype
batch = right.number_input("Batch (sequences)", 1, 4096, state.batch)
tokens = st.select_slider(
    "Context length", options=kv.context_grid(2**20, points=21), value=min(kv.context_grid(2**20, points=21),
                                                                            key=lambda t: abs(t - state.tokens)),
    format_func=lambda t: f"{t:,}",
)
log_x = ui.switch("Logarithmic context axis", "log_context")
ui.set_view(dtype=dtype, batch=int(batch), tokens=int(tokens))

layout = kv.attention_layout(config, config_name)
for note in layout.notes:
    st.caption(note)
if not layout.is_decoder:
    st.info(kv.kv_cache_size(layout, tokens, batch, dtype).explanation)
    st.stop()
layouts = kv.variant_layouts(layout)
lab_layout = ui.lab_variant_layout(layout) if config_name == "smollm2-135m" else None
if lab_layout is not None and lab_layout.legend not in [each.legend for each in layouts]:
    layouts = [*layouts, lab_layout]  # the variant lab's current conversion, on the same chart
weights = kv.estimate_parameters(config).weight_bytes(dtype)
contexts = kv.context_grid(max(tokens, 1024), include=[w for w in layout.layer_windows if w], min_tokens=128)
memory_lines = kv.gpu_memory_lines()

st.subheader(f"{config_name}: weights + KV cache against context length")
curves = kv.variant_cache_curves(layouts, contexts, batch, dtype)
fits = kv.variant_longest_fits(layouts, memory_lines, weights, batch, dtype)
fit_rows = [dict(zip(("variant", "memory", "tokens"), fit)) for fit in fits]
ui.chart(cache_size_figure(contexts, curves, weights, memory_lines, fits, log_x=log_x), key="kv-curve",
         numbers=export.series("context (tokens)", contexts, curves, unit="cache bytes", model=config_name, dtype=dtype,
                               batch=batch, weight_bytes=weights, longest_fits=fit_rows))
st.caption(
    "Dashed red lines are GPU memory sizes; × marks the longest context that fits beside the weights "
    f"({weights / 2**30:,.1f} GiB in {dtype}). " + kv.kv_cache_size(layout, tokens, batch, dtype).explanation
)
variant_rows = kv.variant_table(layouts, tokens, batch, dtype)
st.dataframe(pd.DataFrame(variant_rows), hide_index=True)
file_stem = "kv-cache-" + config_name.replace("/", "-").replace(" ", "-")
ui.downloads(file_stem, {
    "csv": export.table_csv(variant_rows),
    "json": export.table_json(variant_rows, model=config_name, dtype=dtype, batch=batch, context_lengths=contexts,
                              cache_bytes=curves, weight_bytes=weights, longest_fits=fit_rows),
})

st.subheader("Decode speed limit: the memory roofline")
gpu = ui.gpu_picker("GPU")
speeds = kv.variant_roofline_curves(layouts, gpu, contexts, weights, batch, dtype)
ui.chart(roofline_figure(contexts, speeds, gpu.name, log_x=log_x), key="kv-roofline",
         numbers=export.series("context (tokens)", contexts, speeds, unit="decode tokens/s at most", model=config_name,
                               gpu=gpu.name, dtype=dtype, batch=batch))
st.caption(
    f"Each decode step reads all weights and the whole cache: tokens/s ≤ {gpu.bandwidth_gb_per_s:,.0f} GB/s ÷ "
    f"(weights + cache) × batch. Lines stop where the model no longer fits in {gpu.memory_gb:g} GB. "
    f"Source: {gpu.source}."
)

st.subheader("Measured on the loaded model")
st.caption(
    "Converts SmolLM2 into each variant, runs it for real, and adds up the bytes of the cache tensors it returns, "
    "beside the formula (fp32 on a CPU)."
)
measure_tokens = ui.number_slider("Tokens to run", "measure_tokens", 16, 512, step=16)
if st.button("Measure the real caches", key="measure"):
    st.dataframe(pd.DataFrame(ui.measured_caches(measure_tokens)), hide_index=True)

st.subheader("Bytes per token of well-known models")
reference_rows = kv.reference_table(dtype)
st.dataframe(pd.DataFrame(reference_rows), hide_index=True)
ui.downloads(f"kv-per-token-{dtype}", {"csv": export.table_csv(reference_rows)})
with st.expander("Which config fields were used"):
    st.json(layout.fields_used)
    for note in layout.notes:
        st.markdown(f"- {note}")
ui.share_link()
