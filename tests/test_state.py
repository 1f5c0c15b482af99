"""URL state: every parameter restores, every bad value gets a default and a notice, nothing raises."""

from hypothesis import given
from hypothesis import strategies as st

from explorer.state import MAX_TEXT_CHARS, ViewState, clamp_to_model, parse_query, to_query


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


@given(st.dictionaries(st.sampled_from(["text", "model", "layer", "head", "variant", "kv_heads", "tokens", "dtype", "config", "junk"]), st.text(max_size=300)))
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
