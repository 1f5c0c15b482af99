"""KV cache: how much memory each attention variant needs as the context grows, and what fits on a GPU."""

import pandas as pd
import streamlit as st

from explorer import deployment as serving
from explorer import export, kv, roofline, ui
from explorer.charts.kv import cache_size_figure, ceilings_figure
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
serving_gpu, serving_weights = serving.serving_defaults(config)  # what the model is usually served on
batch = right.number_input("Batch (sequences)", 1, 4096, state.batch)
cache_column, weights_column = st.columns(2)
dtype = cache_column.segmented_control("Cache dtype", list(DTYPE_BITS), default=state.dtype) or state.dtype
chosen_weights = serving_weights if state.weights_dtype == "auto" else state.weights_dtype
weights_dtype = weights_column.segmented_control("Weights dtype", list(DTYPE_BITS),
                                                 default=chosen_weights) or chosen_weights
grid = roofline.context_grid(2**20, points=21)
tokens = st.select_slider("Context length", options=grid, value=min(grid, key=lambda t: abs(t - state.tokens)),
                          format_func=lambda t: f"{t:,}")
log_x = ui.switch("Logarithmic context axis", "log_context")
ui.set_view(dtype=dtype, weights_dtype="auto" if weights_dtype == serving_weights else weights_dtype,
            batch=int(batch), tokens=int(tokens))

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
tallest_cache = max(max(values) for values in curves.values())
view_options = ("auto", "with-weights", "cache-only")
cache_view = st.radio("Show", view_options, index=view_options.index(state.cache_view), horizontal=True,
                      format_func={"auto": "automatic", "with-weights": "weights + cache",
                                   "cache-only": "cache only"}.get)
ui.set_view(cache_view=cache_view)
dwarfed = weight_bytes > 3 * tallest_cache
cache_only = cache_view == "cache-only" or (cache_view == "auto" and dwarfed)
if cache_only:
    # each GPU's line becomes the room its memory leaves beside the weights (GPUs the weights fill are left out)
    room = {f"{(size - weight_bytes) / 2**30:,.1f} GiB left on {label.split(': ', 1)[1]}": size - weight_bytes
            for label, size in memory_lines.items() if size > weight_bytes}
    renamed = dict(zip([label for label, size in memory_lines.items() if size > weight_bytes], room))
    fits = [(series, renamed[memory], tokens) for series, memory, tokens in fits if memory in renamed]
    chart_lines, chart_weights = room, 0
    if cache_view == "auto":
        st.caption(f"The weights ({weight_bytes / 2**30:,.1f} GiB in {weights_dtype}) dwarf the cache (at most "
                   f"{tallest_cache / 2**30:,.1f} GiB here), so the chart shows the cache alone; choose "
                   "\"weights + cache\" to see both.")
    if not room:
        st.caption(f"No single GPU holds the {weight_bytes / 2**30:,.1f} GiB of weights: see the deployment below "
                   "for the room each of several GPUs leaves for the cache.")
else:
    chart_lines, chart_weights = memory_lines, weight_bytes
fit_rows = [dict(zip(("variant", "memory", "tokens"), fit)) for fit in fits]
ui.chart(cache_size_figure(contexts, curves, chart_weights, chart_lines, fits, log_x=log_x,
                           title="KV cache alone" if cache_only else "Memory for weights and KV cache"),
         key="kv-curve",
         numbers=export.series("context (tokens)", contexts, curves, unit="cache bytes", model=config_name, dtype=dtype,
                               weights_dtype=weights_dtype, batch=batch, weight_bytes=weight_bytes,
                               longest_fits=fit_rows))
st.caption(
    ("Dashed red lines are the memory each GPU leaves beside the weights; × marks the longest context that fits "
     if cache_only else
     "Dashed red lines are the memory a framework can allocate on each GPU; × marks the longest context that fits "
     f"beside the weights ({weight_bytes / 2**30:,.1f} GiB in {weights_dtype}). ")
    + ("there. " if cache_only else "") + kv.kv_cache_size(layout, tokens, batch, dtype).explanation
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

st.subheader("Serving it: memory per GPU, capacity and both ceilings")
if weights is None:
    st.info("A deployment needs the weights a decode step reads, which this config cannot give.")
else:
    parameters = estimate_parameters(layout)
    gpu_column, count_column, parallel_column = st.columns([2, 1, 2])
    with gpu_column:
        gpu = ui.gpu_picker("GPU", default=serving_gpu)
    default = serving.default_deployment(layout, parameters, weights_dtype, gpu, tokens, dtype)
    count = count_column.number_input(f"{gpu.name} GPUs", 1, 64, state.gpus or default.count)
    parallel = parallel_column.radio(
        "Split", serving.PARALLELS,
        index=serving.PARALLELS.index(default.parallel if state.parallel == "auto" else state.parallel),
        horizontal=True, format_func={"tp": "tensor parallel", "dp-attention": "data-parallel attention"}.get)
    ui.set_view(gpus=None if count == default.count else int(count),
                parallel="auto" if parallel == default.parallel else parallel)
    deployment = serving.Deployment(gpu, int(count), parallel)
    share = serving.per_gpu(layout, parameters, weights_dtype, deployment, tokens, batch, dtype)
    bound = serving.decode_bound(layout, parameters, weights_dtype, deployment, tokens, batch, dtype)
    held, cache, room = st.columns(3)
    held.metric("Weights per GPU", f"{share.weights / 2**30:,.1f} GiB")
    cache.metric("Cache per GPU", f"{share.kv_cache / 2**30:,.2f} GiB")
    room.metric("Headroom per GPU", f"{(gpu.memory_bytes - share.total) / 2**30:,.1f} GiB")
    if not share.fits:
        st.warning(f"{batch} sequences of {tokens:,} tokens do not fit on {deployment.label} beside the weights: "
                   f"add GPUs (the page opens on {default.count}), or lower the batch or the context. Such a "
                   "deployment has no decode speed; the charts stop where it no longer fits.")
    capacity_rows = serving.capacity_table(layouts, parameters, weights_dtype, deployment, tokens, batch, dtype)
    st.dataframe(pd.DataFrame(capacity_rows), hide_index=True)
    dp_text = (" Data-parallel attention keeps each GPU's own sequences' cache and a whole copy of the attention "
               "weights, with the routed experts expert-parallel (each GPU holds its share) and the rest tensor-"
               "parallel. At batch 1 only one GPU then has a sequence: it reads and computes all of its attention and "
               "its share of the experts the token picked (taken as spread evenly), and every step waits for it."
               if parallel == "dp-attention" or parameters.routed_experts else "")
    speed = (f"Decode is bound by {bound.bound_by} here: memory allows {bound.memory_tokens_per_s:,.0f} tokens/s, "
             f"compute {bound.compute_tokens_per_s:,.0f}." if bound.fits else "")
    st.caption(
        f"{deployment.label}, {weights_dtype} weights, {dtype} cache, {batch} sequences of {tokens:,} tokens. Tensor "
        "parallelism splits the weights and the KV heads (past the KV-head count, heads are replicated; an MLA "
        f"latent is kept whole on every rank).{dp_text} {speed}"
    )
    memory_ceiling, compute_ceiling = serving.context_ceiling_curves(layouts, parameters, weights_dtype, deployment,
                                                                     contexts, batch, dtype)
    ui.chart(ceilings_figure(contexts, memory_ceiling, compute_ceiling, deployment.label, against="context",
                             log_x=log_x), key="kv-roofline",
             numbers=export.series("context (tokens)", contexts, {
                 **{f"{name}: memory": values for name, values in memory_ceiling.items()},
                 **{f"{name}: compute": values for name, values in compute_ceiling.items()}},
                 unit="decode tokens/s, whole batch", model=config_name, deployment=deployment.label, batch=batch,
                 dtype=dtype, weights_dtype=weights_dtype))
    batches = serving.batch_grid(4096)
    memory_ceiling, compute_ceiling = serving.ceiling_curves(layouts, parameters, weights_dtype, deployment, tokens,
                                                             batches, dtype)
    ui.chart(ceilings_figure(batches, memory_ceiling, compute_ceiling, deployment.label), key="kv-ceilings",
             numbers=export.series("batch", batches, {
                 **{f"{name}: memory": values for name, values in memory_ceiling.items()},
                 **{f"{name}: compute": values for name, values in compute_ceiling.items()}},
                 unit="decode tokens/s, whole batch", model=config_name, deployment=deployment.label, tokens=tokens))
    read = parameters.weights(weights_dtype).read_bytes(int(batch))
    moe = (f" An MoE step reads only the experts its tokens picked: {read / 2**30:,.1f} of {weight_bytes / 2**30:,.1f}"
           f" GiB of weights at batch {batch}." if read < weight_bytes else "")
    st.caption(
        "Memory ceiling: batch × bandwidth ÷ (weight bytes + cache bytes one GPU reads per step). Compute ceiling: "
        "batch × peak ÷ (FLOPs one GPU does per step: 2 × active parameters plus attention over the context, per "
        f"token). The lower one bounds decode; a diamond marks where the bound changes.{moe} Lines stop where "
        f"weights and cache no longer fit. {serving.gpu_figures(gpu, weights_dtype)}"
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
