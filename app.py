"""Attention Explorer: type a sentence, run it through small real language models, watch attention work."""

import streamlit as st

from explorer.settings import SettingsError, read_settings

st.set_page_config(page_title="Attention Explorer", page_icon="🔍", layout="wide")
try:
    read_settings()  # a misconfigured host says which variable is wrong, before anything loads
except SettingsError as error:
    st.error(str(error))
    st.stop()

pages = st.navigation(
    [
        st.Page("pages/attention.py", title="Attention", icon="🔍", default=True),
        st.Page("pages/self_vs_causal.py", title="Self vs causal", icon="↔️"),
        st.Page("pages/cross_attention.py", title="Cross-attention", icon="🔀"),
        st.Page("pages/variant_lab.py", title="Variant lab", icon="🧪"),
        st.Page("pages/kv_cache.py", title="KV cache", icon="🧮"),
        st.Page("pages/scaling.py", title="Scaling", icon="📈"),
    ]
)
st.sidebar.title("Attention Explorer")
pages.run()
