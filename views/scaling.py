"""Scaling: attention's quadratic cost and decode speed per variant, measured on real hardware, side by side."""

import streamlit as st

from explorer import committed, export, scaling, ui
from explorer.charts.scaling import decode_figure, scaling_figure

ui.view_state()
ui.show_notices()
st.title("Scaling: what attention costs as the text grows")
st.caption(
    "Every token compares itself with every earlier token, so one layer's attention does about T² comparisons "
    "for T tokens: twice the text, four times the work. The rest of the layer (projections, MLP) handles each "
    "token on its own: twice the text, twice the work. On the log-log charts below a cost ∝ Tᵏ is a line of "
    "slope k. Fused kernels (FlashAttention, PyTorch's SDPA) still do the T² work but never store the T×T "
    "scores, so their memory grows only linearly. Sources: Vaswani et al. 2017, *Attention Is All You Need*, "
    "Table 1 (self-attention costs O(n²·d) per layer); Dao et al. 2022, *FlashAttention* (memory linear in n)."
)

runs = {name.removeprefix("scaling-"): results
        for name, results in scaling.committed_results(committed.results_dir()).items()}
left, right = st.columns([2, 1])
with left:
    gpu = ui.gpu_picker("Roofline of a GPU on the decode charts", default="none")
if right.button("Run a small benchmark here", help="128–1,024 tokens, about a minute on a laptop CPU"):
    loaded = ui.get_model("smollm2")
    if loaded is not None:
        bar = st.progress(0.0, text="Starting")
        st.session_state["scaling_live"] = scaling.run_scaling(
            loaded, scaling.length_grid(1024, 128), [256, 512, 1024], repeats=2,
            progress=lambda fraction, message: bar.progress(fraction, text=message),
        )
if "scaling_live" in st.session_state:
    runs["this device, now"] = st.session_state["scaling_live"]
if not runs:
    st.info("No committed results yet: run `python -m bench.scaling --json bench/results/scaling-cpu.json`.")
    st.stop()

for column, (name, results) in zip(st.columns(len(runs)), runs.items()):
    with column:
        st.subheader(results.label)
        info = results.info
        st.caption(f"{name}: torch {info.torch}, transformers {info.transformers}, {info.date[:10]}, "
                   f"load average {info.load_average}")
        about = {"device": name, "label": results.label, "date": info.date}
        lengths, times = results.prefill_series("time")
        ui.chart(scaling_figure(lengths, times, results.slopes, "time", f"Prefill time, one layer ({name})"),
                 key=f"scaling-time-{name}",
                 numbers=export.series("tokens", lengths, times, unit="seconds", slopes=results.slopes, **about))
        lengths, memory = results.prefill_series("memory")
        ui.chart(scaling_figure(lengths, memory, results.memory_slopes, "memory",
                                f"Attention memory, {results.memory_method} ({name})"),
                 key=f"scaling-memory-{name}",
                 numbers=export.series("tokens", lengths, memory, unit="bytes", slopes=results.memory_slopes, **about))
        contexts, speeds = results.decode_series()
        roofline = scaling.roofline_curves(results, gpu) if gpu else None
        curves = {**speeds, **{f"{variant} bound, {gpu.name}": bound for variant, bound in (roofline or {}).items()}}
        ui.chart(decode_figure(contexts, speeds, roofline, gpu.name if gpu else None,
                               f"Decode, batch {results.decode_batch} ({name})"), key=f"scaling-decode-{name}",
                 numbers=export.series("context (tokens)", contexts, curves, unit="decode tokens/s",
                                       batch=results.decode_batch, **about))
        st.caption(scaling.summary(results))
        with st.expander("How it was measured"):
            for note in results.notes:
                st.markdown(f"- {note}")
ui.share_link()
