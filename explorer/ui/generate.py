"""The generate page's controls and its live run: tokens, attention rows, the weighed cache and step times drawn
as each token is made, with a stop button; the finished run is kept in the session and drawn with its exports."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import numpy as np
import streamlit as st

from explorer import divergence, export, generate, guard
from explorer.charts.generate import (
    attention_rows_figure,
    cache_growth_figure,
    context_figure,
    kl_figure,
    step_time_figure,
)
from explorer.generate import Generation, Sampling
from explorer.loading import LoadedModel
from explorer.run import fill_with_prose
from explorer.settings import read_settings
from explorer.ui.lab import get_conversion
from explorer.ui.layout import chart
from explorer.ui.url import set_view, show_notices, view_state
from explorer.variants import VariantSpec

COMPARE_CHOICES = ("none", "original", "mha", "mqa", "mla-192", "mla-128", "mla-160-rope32")
HORIZONS = (1_024, 4_096, 32_768, 131_072, 1_048_576)
MEASURE_CHOICES = (256, 512, 1_024, 2_048)  # tokens the context chart may weigh, within the memory guard
LIVE_CHART_SECONDS = 1.0  # charts are redrawn at most this often while generating (tokens: every step), so a
# browser drawing 2 x 9 heatmaps keeps up on a slow machine


@dataclass(frozen=True)
class GenerateSetup:
    """What the page's controls chose (besides the variant, which the lab's controls choose)."""

    steps: int  # tokens to generate
    compare: VariantSpec | None  # second variant on the same prompt (None: the first alone)
    sampling: Sampling  # greedy, or temperature / top-k / top-p with a seed
    layer: int  # layer whose attention rows are drawn
    horizon: int  # context length the cache chart extends to


def generate_controls(num_layers: int) -> GenerateSetup:
    """Steps, the variant to compare with, sampling, layer and horizon, each kept in the URL."""
    state = view_state()
    limit = generate.step_limit(read_settings().hosted)
    steps = state.steps
    if steps > limit:
        show_notices([f"This server makes at most {limit} tokens per generation; making {limit}."])
        steps = limit
    compare = state.compare
    try:
        generate.compare_spec(compare)
    except ValueError as error:
        show_notices([f"{error} Comparing with the original."])
        compare = "original"
    choices = list(COMPARE_CHOICES) + ([compare] if compare not in COMPARE_CHOICES else [])
    left, middle, right = st.columns(3)
    steps = left.slider("Tokens to generate", 1, limit, steps, key="gen-steps")
    compare = middle.selectbox("Compare with", choices, index=choices.index(compare), key="gen-compare",
                               format_func=_compare_label)
    layer = min(state.layer, num_layers - 1)
    layer = right.slider("Layer whose attention rows are drawn", 0, num_layers - 1, layer, key="gen-layer")
    with st.expander("Sampling (greedy by default)"):
        columns = st.columns(4)
        temperature = columns[0].number_input("Temperature (0: greedy)", 0.0, 5.0, state.temperature, 0.1,
                                              key="gen-temperature")
        top_k = columns[1].number_input("Top-k (0: all)", 0, 1000, state.top_k, key="gen-top-k")
        top_p = columns[2].number_input("Top-p (1: all)", 0.01, 1.0, state.top_p, 0.05, key="gen-top-p")
        seed = columns[3].number_input("Seed", 0, 2**31 - 1, state.seed, key="gen-seed")
    set_view(steps=steps, compare=compare, layer=layer, temperature=float(temperature), top_k=int(top_k),
             top_p=float(top_p), seed=int(seed))
    return GenerateSetup(steps, generate.compare_spec(compare), Sampling(float(temperature), int(top_k),
                                                                        float(top_p), int(seed)), layer, state.horizon)


def _compare_label(name: str) -> str:
    return {"none": "nothing (one variant)", "original": "the original model", "mha": "MHA", "mqa": "MQA (mean)",
            "mla-192": "MLA, half the cache (latent 192, naive)", "mla-128": "MLA, a third of the cache (latent 128)",
            "mla-160-rope32": "MLA DeepSeek form, half the cache (160 + 32 RoPE, absorbed)"}.get(name, name)


@dataclass
class _Side:
    """One column of the live run: a model, its generation so far and the placeholders it draws into."""

    loaded: LoadedModel
    spec: VariantSpec
    generation: Generation
    slots: dict
    column: int = 0  # 0: the chosen variant, 1: the one compared with


def run_generation(key: str, spec: VariantSpec, text: str, setup: GenerateSetup) -> list[tuple]:
    """Generate under `spec` (and `setup.compare` beside it), drawing every step as it comes; returns the finished
    runs [(loaded, generation), ...] (kept in the session: a rerun with the same settings draws them again without
    generating). The Stop button ends a run in progress; its tokens so far are kept and shown."""
    same = setup.compare is not None and setup.compare.label() == spec.label()
    if same:
        st.caption(f"The variant to compare with is {spec.label()} itself: pick another to see two continuations.")
    specs = [spec] + ([setup.compare] if setup.compare is not None and not same else [])
    conversions = [get_conversion(key, each) for each in specs]
    if any(conversion is None for conversion in conversions):
        return []
    models = [conversion.loaded for conversion in conversions]
    settings = read_settings()
    ids = generate.prompt_ids(models[0], text)
    if len(ids) > settings.max_input_tokens:
        st.warning(f"The prompt is longer than {settings.max_input_tokens} tokens; only the first ones are used.")
        ids = ids[: settings.max_input_tokens]
    run_key = (key, tuple(specs), tuple(ids), setup.steps, setup.layer, setup.sampling)
    stop_column, again_column, _ = st.columns([1, 1, 3])
    stopped = stop_column.button("Stop generating", key="gen-stop", icon=":material/stop_circle:", help="End the generation now")
    again = again_column.button("Generate again", key="gen-again", icon=":material/replay:")
    kept = st.session_state.get("generation")
    if kept is not None and kept["key"] == run_key and not again:
        if not kept["done"] and stopped:
            kept.update(done=True, stopped=True)
        if kept["done"]:
            if kept["stopped"]:
                st.info(f"Stopped after {len(kept['runs'][0][1].steps)} tokens.")
            return kept["runs"]
    live = st.empty()  # the run as it happens; emptied when it ends, and the finished run drawn with its exports
    with live.container():
        sides = []
        for column, loaded, each in zip(st.columns(len(models)), models, specs):
            with column:
                st.markdown(f"**{each.label()}**")
                slots = {name: st.empty() for name in ("text", "metrics", "attention")}
            sides.append(_Side(loaded, each, generate.start(loaded, each, ids), slots))
        below = {name: st.empty() for name in ("cache", "times")}
    original = generate.cache_formula(models[0], VariantSpec("original"))
    kept = {"key": run_key, "runs": [(side.loaded, side.generation) for side in sides], "done": False,
            "stopped": False}
    st.session_state["generation"] = kept
    try:
        with _admitted(models, len(ids) + setup.steps):
            streams = [generate.generate_steps(side.loaded, side.spec, ids, setup.steps, setup.layer, setup.sampling)
                       for side in sides]
            drawn = 0.0  # when the charts were last sent: tokens go out every step, charts at most once a second
            for steps in _together(streams):
                charts = time.monotonic() - drawn >= LIVE_CHART_SECONDS
                for side, step in zip(sides, steps):
                    if step is not None:
                        generate.add(side.generation, step, side.loaded)
                        _draw_side(side, setup.layer, live=True, charts=charts)
                if charts:
                    below["cache"].plotly_chart(_cache_figure(sides, original))
                    drawn = time.monotonic()
    except guard.MemoryLimitError as error:
        st.error(str(error))
        st.session_state.pop("generation", None)
        return []
    kept["done"] = True
    live.empty()
    return kept["runs"]


def _together(streams):
    """Steps of several generators side by side (None for one that has ended), until all have ended."""
    while True:
        steps = [next(stream, None) for stream in streams]
        if all(step is None for step in steps):
            return
        yield steps


class _admitted:
    """The memory guard for every model of a run, for `tokens` tokens each, released when the run ends."""

    def __init__(self, models: list[LoadedModel], tokens: int):
        self.contexts = [guard.admit(m.config, tokens, m.entry.label, m.dtype.itemsize, keeps="one_layer")
                         for m in models]

    def __enter__(self):
        entered = []
        try:
            for context in self.contexts:
                context.__enter__()
                entered.append(context)
        except BaseException:
            for context in reversed(entered):
                context.__exit__(None, None, None)
            raise
        self.entered = entered

    def __exit__(self, *exc):
        for context in reversed(self.entered):
            context.__exit__(*exc)
        return False


def _continuation_html(generation: Generation) -> str:
    """The prompt in grey and each generated token as a chip, numbered by step."""
    prompt = f'<span style="color:#6b7280">{html.escape(generation.prompt)}</span>'.replace(chr(10), "<br>")
    chips = "".join(
        f'<span title="step {step.index}" style="background:#dbeafe;border-radius:3px;padding:0 1px;'
        f'margin:0 1px">{html.escape(step.piece).replace(chr(10), "↵<br>")}</span>'
        for step in generation.steps
    )
    return f'<div data-testid="generated-text" style="line-height:1.9">{prompt}{chips}</div>'


def _draw_side(side: _Side, layer: int, live: bool, charts: bool = True) -> None:
    """Text, metrics and (with `charts`) the attention rows of one column; live: placeholders redrawn, no exports."""
    generation = side.generation
    side.slots["text"].markdown(_continuation_html(generation), unsafe_allow_html=True)
    last = generation.steps[-1]
    rate = generation.decode_tokens_per_second
    with side.slots["metrics"].container():
        a, b, c = st.columns(3)
        a.metric("Cache (weighed)", f"{last.cache_bytes / 2**20:,.2f} MiB",
                 f"{generation.bytes_per_token / 1024:,.1f} KiB/token", delta_color="off",
                 help="Formula: bytes one token adds to the cache, all layers")
        b.metric("Prefill", f"{generation.prefill_seconds * 1000:,.0f} ms",
                 f"{len(generation.prompt_ids)} prompt tokens", delta_color="off")
        c.metric("Decode, tokens/s", f"{rate:,.1f}" if rate else "—", f"{len(generation.steps)} tokens made",
                 delta_color="off")
    if not charts:
        return
    figure = _attention_figure(generation, layer)
    if live:
        side.slots["attention"].plotly_chart(figure)
    else:
        with side.slots["attention"].container():
            rows = _padded_rows(generation)
            chart(figure, key=f"gen-attention-{side.column}", numbers=export.LabelledArray(
                rows, {"head": [f"H{h}" for h in range(rows.shape[0])], "step": _query_labels(generation),
                       "position": _key_labels(generation)[: rows.shape[2]]},
                "attention weight", {"variant": generation.label, "layer": layer}))


def _key_labels(generation: Generation) -> list[str]:
    return list(generation.prompt_tokens) + [step.token for step in generation.steps]


def _query_labels(generation: Generation) -> list[str]:
    return [f"{step.index}: {step.token}" for step in generation.steps]


def _padded_rows(generation: Generation) -> np.ndarray:
    """(H, N, S) attention rows, NaN where a position was not cached yet (for the exports)."""
    width = max(step.attention.shape[1] for step in generation.steps)
    rows = np.full((generation.steps[0].attention.shape[0], len(generation.steps), width), np.nan, np.float32)
    for i, step in enumerate(generation.steps):
        rows[:, i, : step.attention.shape[1]] = step.attention
    return rows


def _attention_figure(generation: Generation, layer: int):
    return attention_rows_figure([step.attention for step in generation.steps], _key_labels(generation),
                                 _query_labels(generation),
                                 f"{generation.label}, layer {layer}: each new token's attention")


def _cache_figure(sides: list[_Side], original: generate.CacheFormula):
    measured = {side.generation.label: ([s.cached_tokens for s in side.generation.steps],
                                        [s.cache_bytes for s in side.generation.steps]) for side in sides}
    formulas = {side.generation.label: ([s.cached_tokens for s in side.generation.steps],
                                        [s.formula_bytes for s in side.generation.steps]) for side in sides}
    if "original" not in formulas:  # the original's line, even when only a variant runs
        tokens = measured[sides[0].generation.label][0]
        formulas["original"] = (tokens, [original.bytes_at(n) for n in tokens])
    return cache_growth_figure(measured, formulas)


def show_generation(runs: list[tuple], layer: int) -> None:
    """A finished run: both continuations with their attention rows, the cache against the formula and the
    original's, step times, and for two variants the first divergence and per-step KL."""
    columns = st.columns(len(runs))
    sides = []
    for column, (loaded, generation) in zip(columns, runs):
        with column:
            st.markdown(f"**{generation.label}**")
            slots = {name: st.empty() for name in ("text", "metrics", "attention")}
        side = _Side(loaded, VariantSpec(), generation, slots, len(sides))
        _draw_side(side, layer, live=False)
        sides.append(side)
    if len(runs) == 2:
        (first_model, first), (second_model, second) = runs
        comparison = _comparison(first_model, first, second_model, second)
        where = comparison.first_divergence
        st.markdown(
            f"The two continuations are the same all the way ({len(first.steps)} tokens)." if where is None else
            f"They part at **step {where}**: {first.label} writes “{html.escape(first.steps[where].piece)}”, "
            f"{second.label} writes “{html.escape(second.steps[where].piece)}”." if where < min(len(first.steps),
                                                                                                 len(second.steps))
            else f"One continuation stopped at step {where}."
        )
        chart(kl_figure(comparison.kl, where, (first.label, second.label)), key="gen-kl",
              numbers=export.series("step", list(range(len(comparison.kl))), {"kl_nats": comparison.kl}))
    cache = _cache_figure(sides, generate.cache_formula(runs[0][0], VariantSpec("original")))
    chart(cache, key="gen-cache", numbers=export.Table(
        [{"variant": g.label, "step": s.index, "cached_tokens": s.cached_tokens, "cache_bytes_measured": s.cache_bytes,
          "cache_bytes_formula": s.formula_bytes, "seconds": s.seconds} for _, g in runs for s in g.steps], {}))
    exact = all(s.cache_bytes == s.formula_bytes for _, g in runs for s in g.steps)
    st.caption("Weighed after every step from the cache tensors themselves: "
               + ("equal to the formula at every step." if exact else "**not** equal to the formula at every step.")
               + " Dashed: the formula, bytes per token × tokens cached.")
    times = {g.label: [s.seconds for s in g.steps if s.phase == "decode"] for _, g in runs}
    if any(times.values()):
        chart(step_time_figure(times), key="gen-times",
              numbers=export.Table([{"variant": label, "decode_step": i + 1, "seconds": value}
                                    for label, values in times.items() for i, value in enumerate(values)], {}))


def _comparison(first_model, first: Generation, second_model, second: Generation):
    """Per-step KL and divergence, computed once per finished run (two teacher-forced passes)."""
    kept = st.session_state.get("generation") or {}
    if "comparison" not in kept:
        kept["comparison"] = divergence.compare(first, second, first_model, second_model)
    return kept["comparison"]


def context_chart(key: str, spec: VariantSpec, compare: VariantSpec | None, text: str) -> None:
    """The cache past the steps run: weighed up to a budget the memory guard accepts, the formula beyond, for
    the variants on the page and the original, out to the chosen horizon (4k, 32k and 128k marked)."""
    state = view_state()
    settings = read_settings()
    left, right = st.columns(2)
    horizon = state.horizon if state.horizon in HORIZONS else 131_072
    horizon = left.select_slider("Context length drawn", HORIZONS, horizon, key="gen-horizon",
                                 format_func=lambda n: f"{n // 1024}k" if n < 2**20 else "1M")
    set_view(horizon=horizon)
    offered = [n for n in MEASURE_CHOICES if n <= min(settings.max_input_tokens, horizon)] or [MEASURE_CHOICES[0]]
    budget = right.select_slider("Weigh real caches up to (tokens)", offered, offered[-1] if len(offered) < 3
                                 else offered[-2], key="gen-measure",
                                 help="A prefill of news prose in chunks of 256 tokens; the memory guard must admit it.")
    specs = [spec] + ([compare] if compare is not None else [])
    if all(each.variant != "original" for each in specs):
        specs.append(VariantSpec("original"))
    measured, formulas = {}, {}
    if st.button(f"Weigh the caches up to {budget:,} tokens", key="gen-weigh"):
        st.session_state["gen-weighed"] = (key, tuple(specs), text, budget)
    weighed = st.session_state.get("gen-weighed") == (key, tuple(specs), text, budget)
    for each in specs:
        conversion = get_conversion(key, each)
        if conversion is None:
            return
        formulas[each.label()] = generate.cache_formula(conversion.loaded, each)
        if weighed:
            try:
                points = _weighed(key, each, text, budget)
            except guard.MemoryLimitError as error:
                st.error(str(error))
                return
            measured[each.label()] = ([p.tokens for p in points], [p.measured_bytes for p in points])
    lengths = generate.context_lengths(horizon)
    up_to = budget if weighed else 0
    curves = {label: generate.formula_curve(formula, lengths) for label, formula in formulas.items()}
    figure = context_figure(lengths, curves, measured, up_to,
                            title=f"The cache out to {horizon:,} tokens: " + (f"weighed up to {budget:,}, "
                                  "formula beyond" if weighed else "formula (weigh real caches with the button)"))
    chart(figure, key="gen-context", numbers=export.Table(
        [{"variant": label, "tokens": n, "formula_bytes": b} for label, sizes in curves.items()
         for n, b in zip(lengths, sizes)] + [{"variant": label, "tokens": n, "measured_bytes": b}
                              for label, (ns, bs) in measured.items() for n, b in zip(ns, bs)], {}))
    lines = [f"{label}: " + ", ".join(f"{n // 1024}k → {formula.bytes_at(n) / 2**30:,.2f} GiB"
                                      for n in (4_096, 32_768, 131_072) if n <= horizon)
             for label, formula in formulas.items()]
    st.caption("By the formula, at this model's float32: " + "; ".join(lines) + ".")


@st.cache_resource(show_spinner="Prefilling news prose and weighing the cache", max_entries=8)
def _cached_weighing(key: str, spec: VariantSpec, text: str, tokens: int):
    loaded = get_conversion(key, spec).loaded
    ids = generate.prompt_ids(loaded, fill_with_prose(text, tokens))[:tokens]
    return generate.fill_cache(loaded, spec, ids)


def _weighed(key: str, spec: VariantSpec, text: str, tokens: int):
    loaded = get_conversion(key, spec).loaded
    with guard.admit(loaded.config, tokens, loaded.entry.label, loaded.dtype.itemsize, keeps="one_layer"):
        return _cached_weighing(key, spec, text, tokens)
