"""KV cache: how much memory each attention variant needs as the context grows, and what fits on a GPU."""

import pandas as pd
import streamlit as st

from explorer import deployment as serving
from explorer import export, kv, roofline, ui
from explorer.charts.kv import cache_size_figure, ceilings_figure, roofline_figure
from explorer.config import read_config, reference_models
from explorer.dtypes import DTYPE_BITS
from explorer.hardware import gpu_memory_lines
from explorer.params import estimate_parameters

state = ui.view_state()
ui.show_notices()
st.title("The KV cache: attention's memory wall")
st.caption(
    "While a decoder generates, it keeps every past token's keys and values so it never recomputes them. "
    "That cache grows with every token, for every layer and every sequence in the batch."
)
ui.explain("kv_cache")

references = reference_models()
left, right = st.columns([3, 1])
config_name, config = ui.config_picker(left, references)
batch = right.number_input("Batch (sequences)", 1, 4096, state.batch)
cache_column, weights_column = st.columns(2)
dtype = cache_column.segmented_control("Cache dtype", list(DTYPE_BITS), default=state.dtype) or state.dtype
weights_dtype = weights_column.segmented_control("Weights dtype", list(DTYPE_BITS),
                                                 default=state.weights_dtype) or state.weights_dtype
grid = roofline.context_grid(2**20, points=21)
tokens = st.select_slider("Context length", options=grid, value=min(grid, key=lambda t: abs(t - state.tokens)),
                          format_func=lambda t: f"{t:,}")
log_x = ui.switch("Logarithmic context axis", "log_context")
ui.set_view(dtype=dtype, weights_dtype=weights_dtype, batch=int(batch), tokens=int(tokens))

try:
    layout = read_config(config, config_name)
except ValueError as error:
    st.error(str(error))
    st.stop()
for note in layout.notes:
    st.caption(note)
if layout.kind == "encoder-decoder":
    st.info(f"{layout.name} is an encoder-decoder model; this calculator covers decoder-only models "
            "(and encoders, which keep no cache).")
    st.stop()
if not layout.is_decoder:
    st.info(kv.kv_cache_size(layout, tokens, batch, dtype).explanation)
    st.stop()
layouts = kv.variant_layouts(layout)
lab_layout = ui.lab_variant_layout(layout) if config_name == "smollm2-135m" else None
if lab_layout is not None and lab_layout.legend not in [each.legend for each in layouts]:
    layouts = [*layouts, lab_layout]  # the variant lab's current conversion, on the same chart
if "parameters" in layout.missing:  # the cache still answers; the weights (and so fits and speed) cannot
    st.warning(layout.missing["parameters"] + " The charts leave the weights out, and the roofline is not drawn.")
    weights, weight_bytes = None, 0
else:
    weights = estimate_parameters(layout).weights(weights_dtype)
    weight_bytes = weights.total_bytes
contexts = roofline.context_grid(max(tokens, 1024), include=[w for w in layout.layer_windows if w], min_tokens=128)
memory_lines = gpu_memory_lines()

st.subheader(f"{config_name}: weights + KV cache against context length")
curves = roofline.variant_cache_curves(layouts, contexts, batch, dtype)
fits = roofline.variant_longest_fits(layouts, memory_lines, weights or 0, batch, dtype)
fit_rows = [dict(zip(("variant", "memory", "tokens"), fit)) for fit in fits]
ui.chart(cache_size_figure(contexts, curves, weight_bytes, memory_lines, fits, log_x=log_x), key="kv-curve",
         numbers=export.series("context (tokens)", contexts, curves, unit="cache bytes", model=config_name, dtype=dtype,
                               weights_dtype=weights_dtype, batch=batch, weight_bytes=weight_bytes,
                               longest_fits=fit_rows))
st.caption(
    "Dashed red lines are the memory a framework can allocate on each GPU; × marks the longest context that fits "
    f"beside the weights ({weight_bytes / 2**30:,.1f} GiB in {weights_dtype}). "
    + kv.kv_cache_size(layout, tokens, batch, dtype).explanation
)
variant_rows = kv.variant_table(layouts, tokens, batch, dtype)
st.dataframe(pd.DataFrame(variant_rows), hide_index=True)
file_stem = "kv-cache-" + config_name.replace("/", "-").replace(" ", "-")
ui.downloads(file_stem, {
    "csv": export.table_csv(variant_rows),
    "json": export.table_json(variant_rows, model=config_name, dtype=dtype, weights_dtype=weights_dtype, batch=batch,
                              context_lengths=contexts, cache_bytes=curves, weight_bytes=weight_bytes,
                              longest_fits=fit_rows),
})

st.subheader("Decode speed limit: the memory roofline")
gpu = ui.gpu_picker("GPU")
if weights is None:
    st.info("The roofline needs the weights a decode step reads, which this config cannot give.")
else:
    speeds = roofline.variant_roofline_curves(layouts, gpu, contexts, weights, batch, dtype)
    ui.chart(roofline_figure(contexts, speeds, gpu.name, log_x=log_x), key="kv-roofline",
             numbers=export.series("context (tokens)", contexts, speeds, unit="decode tokens/s at most",
                                   model=config_name, gpu=gpu.name, dtype=dtype, weights_dtype=weights_dtype,
                                   batch=batch))
    if weight_bytes > gpu.memory_bytes:
        st.info(f"The weights alone ({weight_bytes / 2**30:,.1f} GiB in {weights_dtype}) do not fit in the "
                f"{gpu.memory_gib:g} GiB of one {gpu.name}, so no line is drawn: such a model is served split over "
                "several GPUs.")
    read = weights.read_bytes(int(batch))
    moe = (f" An MoE step reads only the experts its tokens picked: {read / 2**30:,.1f} of "
           f"{weight_bytes / 2**30:,.1f} GiB of weights at batch {batch}." if read < weight_bytes else "")
    st.caption(
        f"Each decode step reads the weights it uses and the whole cache: tokens/s ≤ {gpu.bandwidth_gb_per_s:,.0f} "
        f"GB/s ÷ (weights read + cache) × batch.{moe} Lines stop where all the weights and the cache no longer fit "
        f"in the {gpu.memory_gib:g} GiB a framework can allocate on a {gpu.memory_gb:g} GB {gpu.name}. "
        f"Sources: {gpu.source}; {gpu.memory_source}."
    )

st.subheader("Serving it: memory per GPU, capacity and both ceilings")
if weights is None:
    st.info("A deployment needs the weights, which this config cannot give.")
else:
    parameters = estimate_parameters(layout)
    default = serving.default_deployment(layout, parameters, weights_dtype, gpu)
    count_column, parallel_column = st.columns(2)
    count = count_column.number_input(f"{gpu.name} GPUs", 1, 64, state.gpus or default.count)
    parallel = parallel_column.radio(
        "Split", serving.PARALLELS, index=serving.PARALLELS.index(default.parallel if state.parallel == "auto" else state.parallel), horizontal=True,
        format_func={"tp": "tensor parallel", "dp-attention": "data-parallel attention"}.get)
    ui.set_view(gpus=None if count == default.count else int(count),
                parallel="auto" if parallel == default.parallel else parallel)
    deployment = serving.Deployment(gpu, int(count), parallel)
    share = serving.per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, dtype)
    bound = serving.decode_bound(layout, parameters, weights_dtype, deployment, tokens, batch, dtype)
    held, cache, room = st.columns(3)
    held.metric("Weights per GPU", f"{share.weights / 2**30:,.1f} GiB")
    cache.metric("Cache per GPU", f"{share.kv_cache / 2**30:,.2f} GiB")
    room.metric("Headroom per GPU", f"{(gpu.memory_bytes - share.total) / 2**30:,.1f} GiB")
    capacity_rows = serving.capacity_table(layouts, parameters, weights_dtype, deployment, tokens, batch, dtype)
    st.dataframe(pd.DataFrame(capacity_rows), hide_index=True)
    st.caption(
        f"{deployment.label}, {weights_dtype} weights, {dtype} cache, {batch} sequences of {tokens:,} tokens. Tensor "
        "parallelism splits the weights and the KV heads (past the KV-head count, heads are replicated; an MLA "
        "latent is kept whole on every rank); data-parallel attention keeps each GPU's own sequences' cache and a "
        f"whole copy of the attention weights. Decode is bound by {bound.bound_by} here: memory allows "
        f"{bound.memory_tokens_per_s:,.0f} tokens/s, compute {bound.compute_tokens_per_s:,.0f} "
        f"({gpu.peak_flops(weights_dtype) / 1e12:,.0f} dense TFLOP/s per GPU)."
    )
    batches = serving.batch_grid(4096)
    memory_ceiling, compute_ceiling = serving.ceiling_curves(layouts, parameters, weights_dtype, deployment, tokens,
                                                             batches, dtype)
    ui.chart(ceilings_figure(batches, memory_ceiling, compute_ceiling, deployment.label), key="kv-ceilings",
             numbers=export.series("batch", batches, {
                 **{f"{name}: memory": values for name, values in memory_ceiling.items()},
                 **{f"{name}: compute": values for name, values in compute_ceiling.items()}},
                 unit="decode tokens/s, whole batch", model=config_name, deployment=deployment.label, tokens=tokens))

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
