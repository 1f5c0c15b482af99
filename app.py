"""Attention Explorer: type a sentence, run it through small real language models, watch attention work."""

import streamlit as st

from explorer.settings import SettingsError, read_settings

st.set_page_config(page_title="Attention Explorer", page_icon=":material/visibility:", layout="wide")
try:
    read_settings()  # a misconfigured host says which variable is wrong, before anything loads
except SettingsError as error:
    st.error(str(error))
    st.stop()

# On a session's first run, an empty chart before the page runs, removed when the page draws its first chart
# (`ui.chart`): the browser loads its charting library (plotly.js, megabytes to parse) when it meets a chart, so it
# does so while the model loads and runs, not after the page's charts arrive (the first heatmap ~3 s sooner on a
# 2-core machine: bench/cold_start.py).
if not st.session_state.get("chart_library_requested"):
    import pandas  # noqa: F401  plotly reads pandas from sys.modules: wait here while the launcher's preload imports it
    st.session_state["chart_library_requested"] = True
    st.session_state["chart_library_loader"] = st.sidebar.empty()
    st.session_state["chart_library_loader"].plotly_chart(
        {"data": [{"type": "scatter", "x": [], "y": []}],
         "layout": {"height": 10, "margin": {"l": 0, "r": 0, "t": 0, "b": 0}, "xaxis": {"visible": False},
                    "yaxis": {"visible": False}, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)"}},
        config={"staticPlot": True, "displayModeBar": False}, key="chart_library")

pages = st.navigation(
    [
        st.Page("views/attention.py", title="Attention", icon=":material/visibility:", default=True),
        st.Page("views/self_vs_causal.py", title="Self vs causal", icon=":material/compare_arrows:"),
        st.Page("views/cross_attention.py", title="Cross-attention", icon=":material/call_split:"),
        st.Page("views/variant_lab.py", title="Variant lab", icon=":material/science:"),
        st.Page("views/kv_cache.py", title="KV cache", icon=":material/memory:"),
        st.Page("views/generate.py", title="Generate", icon=":material/edit_note:"),
        st.Page("views/scaling.py", title="Scaling", icon=":material/show_chart:"),
    ]
)
st.sidebar.title("Attention Explorer")
try:
    pages.run()
finally:
    loader = st.session_state.pop("chart_library_loader", None)
    if loader is not None:  # a page that drew no chart (one that stops early keeps it, 10 px of nothing, a run)
        loader.empty()
