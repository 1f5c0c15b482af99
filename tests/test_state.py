"""URL state: every parameter restores, every bad value gets a default and a notice, nothing raises."""

from hypothesis import given
from hypothesis import strategies as st

from explorer.state import (
    MAX_TEXT_CHARS, ViewState, choose_token, clamp_head, clamp_layer, clamp_to_model, parse_query, to_query,
)


def test_a_full_link_round_trips():
    state = ViewState(text="the cat saw the dog", model="minilm", layer=3, head=7)
    parsed, notices = parse_query(to_query(state))
    assert parsed == state and notices == []


def test_defaults_make_a_short_link():
    assert to_query(ViewState()) == {}


def test_bad_values_fall_back_with_notices():
    state, notices = parse_query({"text": "  ", "model": "no model here", "layer": "-2", "head": "x"})
    assert state == ViewState()
    assert len(notices) == 4
    assert any("Unknown model" in n for n in notices)


def test_every_field_round_trips():
    state = ViewState(variant="mla", kv_heads=3, latent_rank=128, rope_dims=16, config="llama-3-8b",
                      tokens=131072, batch=8, dtype="fp8")
    assert parse_query(to_query(state)) == (state, [])


def test_bad_variant_settings_fall_back_with_notices():
    state, notices = parse_query({"variant": "sparse", "kv_heads": "0", "dtype": "fp3", "tokens": "1e9"})
    assert state == ViewState() and len(notices) == 4
    assert "not one of original, mha, gqa, mqa, mla" in notices[0]


def test_huge_text_is_cut_with_a_notice():
    state, notices = parse_query({"text": "a" * (MAX_TEXT_CHARS + 10)})
    assert len(state.text) == MAX_TEXT_CHARS and "cut" in notices[0]


def test_out_of_range_layer_and_head_are_clamped():
    state, notices = clamp_to_model(ViewState(layer=40, head=12), num_layers=30, num_heads=9)
    assert (state.layer, state.head) == (29, 0) and len(notices) == 2


@given(st.dictionaries(st.sampled_from(["text", "model", "layer", "head", "variant", "kv_heads", "tokens", "dtype", "config", "target", "follow", "measure_tokens", "log_context", "encoder_decoder", "junk"]), st.text(max_size=300)))
def test_parsing_never_raises(params):
    state, notices = parse_query(params)
    assert isinstance(state, ViewState) and state.layer >= 0 and state.head >= 0
    assert all(isinstance(n, str) for n in notices)


def test_long_input_view_round_trips():
    state = ViewState(context=1024, zoom=(128, 192), log_colours=True)
    assert to_query(state) == {"context": "1024", "zoom": "128-192", "log_colours": "1"}
    assert parse_query(to_query(state)) == (state, [])


def test_bad_zoom_and_log_values_fall_back():
    state, notices = parse_query({"zoom": "90-10", "log_colours": "maybe", "context": "99999"})
    assert state == ViewState() and len(notices) == 3


def test_every_page_widget_round_trips():
    state = ViewState(minilm_layer=2, minilm_head=11, smollm2_layer=7, smollm2_head=8, follow="apple",
                      encoder_decoder="google-t5/t5-small", target="", encoder_layer=1, decoder_layer=0, cross_head=3,
                      log_context=False, measure_tokens=256, uptrain_tokens=65_536, uptrain_scope="all",
                      audio="upload", voice="en-us", speed=160, under="spectrogram")
    query = to_query(state)
    assert query["target"] == "" and query["log_context"] == "0"  # an empty decoder text is a choice too
    assert parse_query(query) == (state, [])


def test_bad_page_widget_values_fall_back_with_notices():
    state, notices = parse_query({"minilm_layer": "-1", "cross_head": "h3", "measure_tokens": "100",
                                  "log_context": "yes", "encoder_decoder": "<t5>", "follow": "\x00",
                                  "uptrain_tokens": "0", "uptrain_scope": "lm_head"})
    assert state == ViewState() and len(notices) == 8
    assert any("in steps of 16" in n for n in notices)


def test_layers_and_heads_are_clamped_per_model():
    assert clamp_layer(None, 6) == (5, [])  # no choice: the last layer
    layer, notices = clamp_layer(9, 6, "all-MiniLM-L6-v2")
    assert layer == 5 and notices == ["all-MiniLM-L6-v2 has 6 layers (0-5); showing layer 5."]
    assert clamp_head(12, 12)[0] == 0 and clamp_head(11, 12) == (11, [])


def test_the_followed_token_must_be_in_the_text():
    assert choose_token(None, ["the", "it", "was"]) == ("it", [])
    assert choose_token("was", ["the", "it", "was"]) == ("was", [])
    token, notices = choose_token("dog", ["the", "cat"])
    assert token == "cat" and "following 'cat'" in notices[0]


def test_the_untrained_key_is_the_one_the_model_uses():
    from explorer.catalogue import WHISPER_MODEL
    from explorer.state import UNTRAINED_KEY
    from explorer.untrained import UNTRAINED_KEY as MODEL_KEY

    assert UNTRAINED_KEY == MODEL_KEY and ViewState().encoder_decoder == WHISPER_MODEL
