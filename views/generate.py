"""Watch it generate: the model continues your text token by token under the chosen attention variant, while the
real KV cache grows step by step beside the formula and the original's."""

import streamlit as st

from explorer import lab, ui
from explorer.variants import attention_shape

ui.text_box()
state = ui.view_state()
ui.show_notices()
st.title("Watch it generate: one token at a time, the cache growing live")
chosen = ui.lab_model()
if chosen is None:
    st.stop()
model_key, original, family = chosen
if original.kind != "decoder":
    st.info(f"{original.entry.label} is an encoder: it reads the whole text at once and never generates. "
            "Pick a decoder such as SmolLM2 in the sidebar.")
    st.stop()
shape = attention_shape(original.config, original.entry.label)
st.caption("Each step feeds the token just made, reads every cached key and value, and adds one token's worth to "
           "the cache. The cache is weighed from its tensors after every step.")

choices = lab.choices_for(family.name, original.entry.label)
settings = ui.variant_controls(shape, choices)  # (variant, kv_heads, latent_rank, rope_dims, merge, form, svd)
methods = ui.conversion_methods(settings[0], settings[5], family.name)
spec, notices = lab.spec_from_view(*settings, shape, choices, methods)
ui.show_notices(notices)
setup = ui.generate_controls(shape.num_layers)
runs = ui.run_generation(model_key, spec, state.text, setup)
if runs:
    ui.show_generation(runs, setup.layer)

st.subheader("Longer contexts: how the variants separate")
ui.context_chart(model_key, spec, setup.compare, state.text)
ui.share_link()
