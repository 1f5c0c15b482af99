"""The only code that talks to streamlit, one job per module; pages call these helpers and stay thin.

- `url`: the view state, read from a link and mirrored back into the address;
- `models`: cached models and runs, shared read-only by every session;
- `widgets`: the shared pickers, sliders and toggles, each kept in the URL;
- `layout`: a chart with its exports beneath it, explanations beside it;
- `lab`: the variant lab's conversions, quality and controls;
- `uptraining`: the lab's uptraining section;
- `lab_views`: the lab's views of what a conversion hurts: rotary frequencies and damaged heads;
- `committed`: committed uptraining runs of every device, side by side.
- `hearing`: what Whisper hears: the clip, the cached run, words that play their span.
- `generate`: the generate page's controls, live run and context chart.
- `attention`: the attention page's clicks, query tokens, special tokens, rollout, flow and head ablation.
"""

from explorer.ui.attention import (
    get_ablation,
    get_flow,
    get_rollout,
    heads_to_switch_off,
    hide_special_switch,
    query_tokens,
    select_head_on_click,
    special_tokens,
    unchanging_figure,
)
from explorer.ui.layout import beside, chart, downloads, explain, token_strip
from explorer.ui.models import (
    get_cross_run,
    get_encoder_decoder,
    get_layer,
    get_model,
    get_overview,
    get_run,
)
from explorer.ui.url import keep_widget, set_view, share_link, share_link_slot, show_notices, view_state
from explorer.ui.widgets import (
    config_picker,
    context_length,
    decoder_text,
    encoder_decoder_picker,
    gpu_picker,
    head_picker,
    layer_and_head,
    layer_slider,
    log_scale,
    model_picker,
    number_slider,
    switch,
    text_box,
    token_to_follow,
    zoom_region,
)

# The lab's, the generate page's and Whisper's helpers import every variant family's code (and transformers' BERT,
# GPT-2, Llama and Whisper modules): load them on first use, so the attention page, which most visitors see first,
# does not wait for them.
_LAZY = {
    **dict.fromkeys(["absorb_gap", "conversion_methods", "get_conversion", "lab_model", "lab_variant_layout",
                     "measured_caches", "measured_kv", "variant_controls", "variant_quality", "variant_run"], "explorer.ui.lab"),
    **dict.fromkeys(["uptrain_controls", "uptrained_pair", "uptrained_quality", "uptrained_run"],
                    "explorer.ui.uptraining"),
    "committed_uptraining": "explorer.ui.committed",
    **dict.fromkeys(["damage", "damage_order", "rope_shares", "rope_source"], "explorer.ui.lab_views"),
    **dict.fromkeys(["context_chart", "generate_controls", "run_generation", "show_generation"], "explorer.ui.generate"),
    **dict.fromkeys(["audio_for", "get_hearing", "is_whisper", "word_player"], "explorer.ui.hearing"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'explorer.ui' has no attribute '{name}'")
