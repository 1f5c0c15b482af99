"""Attention Explorer: type a sentence, run it through small real language models, watch attention work."""

import streamlit as st

from explorer.settings import SettingsError, read_settings

st.set_page_config(page_title="Attention Explorer", page_icon=":material/visibility:", layout="wide")
try:
    read_settings()  # a misconfigured host says which variable is wrong, before anything loads
except SettingsError as error:
    st.error(str(error))
    st.stop()

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
pages.run()
