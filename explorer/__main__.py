"""Command line: `attention-explorer <command> --help` (or `python -m explorer <command> --help`).

Each command prints a report for people, or JSON with `--json`.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    prog = "python -m explorer" if sys.argv[0].endswith("__main__.py") else "attention-explorer"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    attention = commands.add_parser("attention", help="tokens and attention summary of a text")
    attention.add_argument("--model", default="smollm2")
    attention.add_argument("--text", default="The giant ate the apple because it was hungry")
    attention.add_argument("--json", action="store_true")
    attention.set_defaults(handler=_attention)

    kv = commands.add_parser("kv", help="KV-cache size of a model and its attention variants")
    kv.add_argument("--config", required=True, help="reference name (e.g. llama-2-7b), config.json path, or hub id")
    kv.add_argument("--tokens", type=int, default=4096, help="context length per sequence")
    kv.add_argument("--batch", type=int, default=1, help="sequences held at once")
    kv.add_argument("--dtype", default="bf16", help="cache dtype: fp32, bf16, fp16, fp8 or int4")
    kv.add_argument("--weights-dtype", default="bf16", help="weights dtype, apart from the cache's: fp32, bf16, "
                    "fp16, fp8 or int4")
    kv.add_argument("--gpu", default="H200", help="GPU model of the deployment: RTX 4090, L40S, A100 80GB SXM, "
                    "H100 SXM or H200")
    kv.add_argument("--gpus", type=int, default=1, help="GPUs in the deployment (1-8 per node, several nodes)")
    kv.add_argument("--parallel", default="tp", choices=["tp", "dp-attention"],
                    help="tensor parallel (weights and KV heads split), or data-parallel attention (each GPU keeps "
                    "its own sequences' cache; the rest split)")
    kv.add_argument("--json", action="store_true")
    kv.set_defaults(handler=_kv)

    variants = commands.add_parser("variants", help="attention variants of a model: cache size and quality")
    variants.add_argument("--model", default="smollm2")
    variants.add_argument("--tokens", type=int, default=8192,
                          help="held-out evaluation tokens (decoders: sequences of 256; encoders: whole documents, "
                               "at least 4); every figure comes with its 95%% interval")
    variants.add_argument("--output", help="also write the JSON report to this file")
    variants.add_argument("--json", action="store_true")
    variants.set_defaults(handler=_variants)

    uptrain = commands.add_parser("uptrain", help="uptrain a converted model briefly, beside the same run unconverted")
    uptrain.add_argument("--model", default="smollm2")
    uptrain.add_argument("--variant", default="mqa", choices=["gqa", "mqa", "mla", "mha"])
    uptrain.add_argument("--kv-heads", type=int, help="gqa: KV heads after conversion")
    uptrain.add_argument("--merge", default="mean", choices=["mean", "first", "aligned"])
    uptrain.add_argument("--form", default="naive", choices=["naive", "decoupled"], help="mla: RoPE form")
    uptrain.add_argument("--latent-rank", type=int, default=256, help="mla: latent width per token and layer")
    uptrain.add_argument("--rope-dims", type=int, default=32, help="mla decoupled: dims of the shared RoPE key")
    uptrain.add_argument("--svd", default="data", choices=["data", "plain"], help="mla: how the latent is found")
    uptrain.add_argument("--tokens", type=int, default=8192, help="training tokens (budget)")
    uptrain.add_argument("--scope", default="attention", choices=["attention", "all"], help="what learns")
    uptrain.add_argument("--batch", type=int, default=1, help="sequences of 256 tokens per optimiser step")
    uptrain.add_argument("--learning-rate", type=float, help="peak learning rate of AdamW")
    uptrain.add_argument("--eval-tokens", type=int, default=8192,
                         help="held-out tokens scored (in sequences of 256), with 95%% intervals")
    uptrain.add_argument("--no-control", action="store_true", help="skip the control run on the unconverted model")
    uptrain.add_argument("--output", help="also write the JSON report to this file")
    uptrain.add_argument("--json", action="store_true")
    uptrain.set_defaults(handler=_uptrain)

    cross = commands.add_parser("cross", help="cross-attention: Whisper hears a sentence (or a WAV) and finds each word")
    cross.add_argument("--text", default="The quick brown fox jumps over the lazy dog near the river bank.",
                       help="the sentence espeak-ng speaks (or, for a text encoder-decoder, the encoder's input)")
    cross.add_argument("--audio", help="a WAV file to hear instead of the spoken text")
    cross.add_argument("--model", default="whisper-tiny-en", help="whisper-tiny-en, tiny-t5-untrained or a hub id")
    cross.add_argument("--voice", default="en-gb", help="espeak-ng voice")
    cross.add_argument("--speed", type=int, default=130, help="espeak-ng speed, words per minute")
    cross.add_argument("--json", action="store_true")
    cross.set_defaults(handler=_cross)

    generate = commands.add_parser("generate", help="generate token by token under a variant, weighing the cache")
    generate.add_argument("--model", default="smollm2")
    generate.add_argument("--text", default="The giant ate the apple because it was")
    generate.add_argument("--steps", type=int, default=32, help="tokens to generate")
    generate.add_argument("--context", type=int, default=0,
                          help="fill the prompt with news prose up to this many tokens first (0: the text alone)")
    generate.add_argument("--variant", default="original", choices=["original", "mha", "gqa", "mqa", "mla"])
    generate.add_argument("--kv-heads", type=int, help="gqa: KV heads after conversion")
    generate.add_argument("--merge", default="mean", choices=["mean", "first", "aligned"])
    generate.add_argument("--form", default="naive", choices=["naive", "decoupled"], help="mla: RoPE form")
    generate.add_argument("--latent-rank", type=int, default=256, help="mla: latent width per token and layer")
    generate.add_argument("--rope-dims", type=int, default=32, help="mla decoupled: dims of the shared RoPE key")
    generate.add_argument("--svd", default="data", choices=["data", "plain"], help="mla: how the latent is found")
    generate.add_argument("--path", choices=["naive", "absorb"],
                          help="mla decoupled: attend over the expanded keys (naive) or the latent (absorb, default)")
    generate.add_argument("--compare", help="a second variant on the same prompt, e.g. original, mqa, gqa-1, "
                          "mla-192, mla-160-rope32: both continuations, first divergence, per-step KL")
    generate.add_argument("--layer", type=int, default=0, help="layer whose attention rows are kept")
    generate.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    generate.add_argument("--top-k", type=int, default=0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--output", help="also write the JSON report to this file")
    generate.add_argument("--json", action="store_true")
    generate.set_defaults(handler=_generate)

    app = commands.add_parser("app", help="start the Streamlit app; other options go to `streamlit run` "
                              "(e.g. --server.port=8502)")
    app.set_defaults(handler=_app)

    args, unknown = parser.parse_known_args(argv)
    if args.command == "app":
        args.streamlit_options = unknown  # every option `streamlit run` takes
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


def _attention(args) -> int:
    import json

    from explorer.loading import load_model
    from explorer.run import run_attention

    run = run_attention(load_model(args.model), args.text)
    report = {
        "model": args.model,
        "tokens": run.tokens,
        "layers": run.num_layers,
        "heads": run.num_heads,
        "forward_seconds": run.forward_seconds,
    }
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0



def _kv(args) -> int:
    import json
    import sys

    from explorer import deployment as serving
    from explorer.config import read_config
    from explorer.hardware import GPUS, gpu_named
    from explorer.kv import kv_cache_size, variant_layouts
    from explorer.params import estimate_parameters
    from explorer.roofline import decode_roofline, longest_context

    try:
        layout = read_config(args.config)
        if layout.kind == "encoder-decoder":
            raise ValueError(f"{layout.name} is an encoder-decoder model; this calculator covers decoder-only "
                             "models (and encoders, which keep no cache).")
        size = kv_cache_size(layout, args.tokens, args.batch, args.dtype)
        gpu = gpu_named(args.gpu)
        deployment = serving.Deployment(gpu, args.gpus, args.parallel)
        parameters = None if "parameters" in layout.missing else estimate_parameters(layout)
        weights = None if parameters is None else parameters.weights(args.weights_dtype)
        weight_bytes = None if weights is None else weights.total_bytes
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    variants = [kv_cache_size(each, args.tokens, args.batch, args.dtype) for each in variant_layouts(layout)]
    point = None if weights is None or not layout.is_decoder else decode_roofline(
        layout, gpu, args.tokens, weights, args.batch, args.dtype)
    report = {
        "config": args.config,
        "name": layout.name,
        "variant": layout.label,
        "tokens": args.tokens,
        "batch": args.batch,
        "dtype": args.dtype,
        "weights_dtype": args.weights_dtype,
        "bytes_per_token": size.bytes_per_token,
        "kv_cache_bytes": size.kv_cache_bytes,
        "explanation": size.explanation,
        "weight_bytes_estimate": weight_bytes,
        "cannot_compute": dict(layout.missing),
        "longest_context_on_one_gpu": None if weights is None else {
            gpu.name: longest_context(layout, gpu.memory_bytes, weights, args.batch, args.dtype) for gpu in GPUS},
        **_deployment_fields(serving, layout, parameters, deployment, args),
        "decode_roofline": None if point is None else {
            "gpu": gpu.name, "weight_read_bytes": point.weight_read_bytes, "kv_cache_bytes": point.kv_cache_bytes,
            "fits": point.fits, "tokens_per_second": point.tokens_per_second},
        "variants": [
            {"variant": each.layout.legend, "bytes_per_token": each.bytes_per_token, "kv_cache_bytes": each.kv_cache_bytes}
            for each in variants
        ],
        "fields_used": layout.fields_used,
        "notes": list(layout.notes),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{layout.name}: {layout.label}, {args.tokens:,} tokens x {args.batch}, cache in {args.dtype}, "
          f"weights in {args.weights_dtype}")
    print(f"  {size.explanation}")
    weights_text = "cannot be computed" if weight_bytes is None else f"{weight_bytes / 2**30:,.2f} GiB"
    print(f"  cache: {size.kv_cache_bytes / 2**30:,.3f} GiB; weights (estimate): {weights_text}")
    for each in variants:
        print(f"  {each.layout.legend:<34} {each.bytes_per_token / 1024:>10,.2f} KiB/token {each.kv_cache_bytes / 2**30:>10,.3f} GiB")
    for gpu_name, tokens in (report["longest_context_on_one_gpu"] or {}).items():
        verdict = {None: "memory sets no limit (the cache stops growing)", 0: "the weights do not fit"}
        print(f"  longest context on {gpu_name}: {verdict[tokens] if tokens in verdict else f'{tokens:,} tokens'}")
    if point is not None:
        fits = "" if point.fits else " (weights and cache do not fit on one)"
        print(f"  decode bound on one {gpu.name}: {point.tokens_per_second:,.1f} tokens/s{fits}, reading "
              f"{point.weight_read_bytes / 2**30:,.2f} GiB of weights and {point.kv_cache_bytes / 2**30:,.3f} GiB of "
              "cache per step")
    if report["per_gpu_bytes"] is not None:
        share = report["per_gpu_bytes"]
        print(f"  on {deployment.label}: per GPU {share['weights'] / 2**30:,.1f} GiB weights + "
              f"{share['kv_cache'] / 2**30:,.2f} GiB cache = {share['total'] / 2**30:,.1f} GiB of "
              f"{gpu.memory_gib:g} GiB ({'fits' if report['fits'] else 'does not fit'}); longest context "
              f"{report['longest_context']}, largest batch at {args.tokens:,} tokens {report['max_batch']:,}; "
              + (f"decode {report['decode_tokens_per_s']:,.1f} tokens/s for the batch, bound by {report['bound_by']}"
                 if report["fits"] else "no decode speed: weights and cache do not fit on these GPUs"))
    for reason in layout.missing.values():
        print(f"  cannot compute: {reason}")
    for note in layout.notes:
        print(f"  note: {note}")
    return 0


def _deployment_fields(serving, layout, parameters, deployment, args) -> dict:
    """The deployment's figures for `kv`'s JSON (None where the config cannot give the weights)."""
    names = ("per_gpu_bytes", "fits", "longest_context", "max_batch", "decode_tokens_per_s", "bound_by")
    if parameters is None or not layout.is_decoder:
        return dict.fromkeys(names)
    share = serving.per_gpu(layout, parameters, args.weights_dtype, deployment, args.tokens, args.batch, args.dtype)
    bound = serving.decode_bound(layout, parameters, args.weights_dtype, deployment, args.tokens, args.batch,
                                 args.dtype)
    return {
        "deployment": {"gpu": deployment.gpu.name, "gpus": deployment.count, "parallel": deployment.parallel},
        "per_gpu_bytes": {"weights": share.weights, "kv_cache": share.kv_cache, "total": share.total},
        "fits": share.fits,
        "longest_context": serving.longest_context(layout, parameters, args.weights_dtype, deployment, args.batch,
                                                   args.dtype),
        "max_batch": serving.max_batch(layout, parameters, args.weights_dtype, deployment, args.tokens, args.dtype),
        "decode_tokens_per_s": bound.tokens_per_s if bound.fits else None,  # null: this deployment cannot run
        "bound_by": bound.bound_by if bound.fits else None,
    }


def _variants(args) -> int:
    import sys

    from explorer.loading import load_model
    from explorer.variants.report import variant_report

    rows: list[dict] = []

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if args.output:  # a long run keeps what it has measured so far, marked unfinished
            _write_report({"model": args.model, "unfinished": True, "eval_tokens": args.tokens, "variants": rows},
                          argparse.Namespace(output=args.output, json=False))

    report = variant_report(load_model(args.model), eval_tokens=args.tokens, progress=progress, rows=rows)
    if _write_report(report, args):
        return 0
    if report.get("weights"):
        print(report["weights"])
    print(f"{report['eval_tokens']:,} held-out tokens; [low, high]: {report['intervals']}")
    if report["kind"] == "encoder":  # no LM head: sentence-embedding closeness instead of perplexity
        print(f"{'variant':<48} {'KV/token/layer':>14} {'emb. cos [95%]':>26} {'rank corr':>9} {'hidden err':>10} "
              f"{'convert s':>9}")
        for row in report["variants"]:
            values = row["kv_values_per_token_per_layer"]["measured"]
            cosine = f"{row['embedding_cosine']:.4f} {_interval(row['embedding_cosine_ci'], '.4f')}"
            print(f"{row['label']:<48} {values:>14.0f} {cosine:>26} "
                  f"{row['similarity_rank_correlation']:>9.3f} {row['hidden_relative_error']:>10.4f} "
                  f"{row['conversion_seconds']:>9.2f}")
    else:
        print(f"{'variant':<48} {'KV/token/layer':>14} {'ppl [95%]':>30} {'KL':>7} {'top-1':>6} {'within 5%':>10}")
        for row in report["variants"]:
            values = row["kv_values_per_token_per_layer"]["measured"]
            ppl = f"{row['perplexity']:.1f} {_interval(row['perplexity_ci'], ',.1f')}"
            print(f"{row['label']:<48} {values:>14.0f} {ppl:>30} {row['kl']:>7.3f} "
                  f"{row['top1_agreement']:>6.2f} {row['within_5_percent']:>10}")
    for comparison in report["comparisons"]:
        print(f"{comparison['claim']} ({comparison['a']} vs {comparison['b']}): {comparison['verdict']}, "
              f"{comparison['value']:.3f} {_interval(comparison['ci'], '.3f')}")
    return 0


def _interval(bounds, spec: str) -> str:
    return f"[{format(bounds[0], spec)}, {format(bounds[1], spec)}]"


def _uptrain(args) -> int:
    import dataclasses
    import sys

    from explorer.loading import load_model
    from explorer.uptrain import UptrainSettings, uptrain_report
    from explorer.variants import VariantSpec

    spec = VariantSpec(
        args.variant, kv_heads=args.kv_heads, merge=args.merge, form=args.form, latent_rank=args.latent_rank,
        rope_dims=args.rope_dims, svd=args.svd, attn_path="absorb" if args.form == "decoupled" else "naive",
    )
    try:
        settings = UptrainSettings(tokens=args.tokens, scope=args.scope, batch_sequences=args.batch)
        if args.learning_rate is not None:
            settings = dataclasses.replace(settings, learning_rate=args.learning_rate)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2

    def progress(run: str, step) -> None:
        if step.step == step.steps or step.step % 10 == 0:
            print(f"{run}: step {step.step}/{step.steps}, {step.tokens:,} tokens, loss {step.loss:.3f}, "
                  f"{step.seconds:.0f} s", file=sys.stderr, flush=True)

    try:
        report = uptrain_report(load_model(args.model), spec, settings, args.eval_tokens, not args.no_control, progress)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if _write_report(report, args):
        return 0
    print(f"{report['variant']} on {args.model}, {settings.tokens:,} training tokens ({settings.scope}), "
          f"{report['eval_tokens']:,} held-out tokens; original perplexity {report['original']['perplexity']:.2f} "
          f"{_interval(report['original']['perplexity_ci'], '.2f')}")
    rows = [("before uptraining", report["before"]), ("after uptraining", report["variant_after"])]
    if "control_after" in report:
        rows.append(("control (unconverted, same training)", report["control_after"]))
    for name, row in rows:
        print(f"  {name:<38} perplexity {row['perplexity']:>12,.2f} {_interval(row['perplexity_ci'], ',.2f'):>22}  "
              f"KL {row['kl']:.3f}  top-1 {row['top1_agreement']:.2f}")
    if "after_vs_control" in report:
        print(f"  after / control perplexity: {report['after_vs_control']:.2f} "
              f"{_interval(report['after_vs_control_ci'], '.2f')} (paired); recovered (within 20%): "
              f"{report['recovered']}")
    return 0


def _cross(args) -> int:
    """Whisper's transcript, token times from cross-attention and attention shapes (or a text model's shapes)."""
    import json
    import sys
    import time
    from pathlib import Path

    from explorer.audio import AudioError, read_wav, speak
    from explorer.loading import ModelLoadError, load_model

    def hear_what() -> object:
        if args.audio:
            path = Path(args.audio)
            if not path.is_file():
                raise AudioError(f"There is no file '{args.audio}'; give the path of a WAV file.")
            return read_wav(path.read_bytes(), f"file {path.name}")
        return speak(args.text, args.voice, args.speed)

    try:
        audio = hear_what() if "whisper" in args.model.lower() else None  # bad audio is told before a load
        if args.model == "tiny-t5-untrained":
            from explorer.untrained import tiny_encoder_decoder

            loaded = tiny_encoder_decoder()
        else:
            loaded = load_model(args.model)
        if loaded.config.model_type != "whisper":
            from explorer.run import run_cross_attention

            run = run_cross_attention(loaded, args.text)
            report = {"model": args.model, "source_tokens": run.source_tokens, "target_tokens": run.target_tokens,
                      "shapes": {name: list(getattr(run, name).shape) for name in ("encoder", "decoder", "cross")}}
            print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
            return 0
        audio = audio or hear_what()
    except (AudioError, ModelLoadError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    from explorer.hearing import hear, word_error_rate

    started = time.perf_counter()
    run = hear(loaded, audio)
    report = {
        "model": args.model,
        "audio": {"source": audio.source, "seconds": round(audio.seconds, 3), "frames": run.frames, "notices": list(audio.notices)},
        "transcript": run.transcript,
        "tokens": [{"token": token, "start": round(float(start), 3), "end": round(float(end), 3)}
                   for token, (start, end) in zip(run.tokens, run.token_times)],
        "words": [{"word": word.text, "start": round(word.start, 3), "end": round(word.end, 3)} for word in run.words],
        "alignment_heads": [list(pair) for pair in run.alignment_heads],
        "shapes": run.shapes(),
        "seconds": {**{name: round(value, 3) for name, value in run.seconds.items()},
                    "total": round(time.perf_counter() - started, 3)},
    }
    if not args.audio:
        report["word_error_rate"] = round(word_error_rate(args.text, run.transcript), 4)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{audio.source}, {audio.seconds:.2f} s: {run.transcript}")
    for note in audio.notices:
        print(f"  note: {note}")
    for row in report["tokens"]:
        print(f"  {row['token']!r:<16} {row['start']:6.2f} - {row['end']:6.2f} s")
    for name, shape in report["shapes"].items():
        print(f"  {name}: {shape}")
    if "word_error_rate" in report:
        print(f"  word error rate against the typed text: {report['word_error_rate']:.1%}")
    return 0


def _app(args) -> int:
    """Run the app with `streamlit run`, wherever the package is installed, with the app's own Streamlit settings
    (.streamlit/config.toml, which Streamlit itself reads only from the current folder) given as options.

    Streamlit runs in this process (as its own `streamlit` command does), so stopping this process stops it."""
    import tomllib

    from streamlit.web import cli

    from explorer.paths import APP_FILE, STREAMLIT_CONFIG

    settings = tomllib.loads(STREAMLIT_CONFIG.read_text()) if STREAMLIT_CONFIG.is_file() else {}
    options = [f"--{section}.{name}={_toml_option(value)}"
               for section, values in settings.items() for name, value in values.items()]
    try:
        cli.main(args=["run", str(APP_FILE), *options, *args.streamlit_options], prog_name="streamlit")
    except SystemExit as finished:  # click ends every command this way
        return finished.code if isinstance(finished.code, int) else 0
    return 0


def _toml_option(value) -> str:
    """A settings value as `streamlit run` reads it on its command line (true/false in lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _generate(args) -> int:
    import sys

    from explorer import generate
    from explorer.loading import load_model
    from explorer.run import fill_with_prose
    from explorer.variants import VariantSpec, convert

    path = args.path or ("absorb" if args.form == "decoupled" else "naive")
    spec = VariantSpec(args.variant, kv_heads=args.kv_heads, merge=args.merge, form=args.form,
                       latent_rank=args.latent_rank, rope_dims=args.rope_dims, svd=args.svd, attn_path=path)
    try:
        sampling = generate.Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        other = generate.compare_spec(args.compare) if args.compare else None
        if not 1 <= args.steps <= generate.MAX_STEPS:
            raise ValueError(f"Choose from 1 to {generate.MAX_STEPS} steps.")
        loaded = load_model(args.model)
        text = fill_with_prose(args.text, args.context) if args.context else args.text
        ids = generate.prompt_ids(loaded, text)[: args.context or None]
        runs = [(spec, convert(loaded, spec).loaded)]
        if other is not None:
            runs.append((other, convert(loaded, other).loaded))
        generations = [generate.generate(model, each, ids, args.steps, args.layer, sampling) for each, model in runs]
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    report = {"model": args.model, "prompt": text if not args.context else f"{args.text} (+ prose to {len(ids)} tokens)",
              "sampling": sampling.label(), **generations[0].to_json()}
    if other is not None:
        comparison = generate.compare(generations[0], generations[1], runs[0][1], runs[1][1])
        report["compare"] = generations[1].to_json()
        report["first_divergence"] = comparison.first_divergence
        report["kl_per_step"] = [float(value) for value in comparison.kl]
    if _write_report(report, args):
        return 0
    for generation in generations:
        rate = generation.decode_tokens_per_second
        print(f"{generation.label}: {generation.text!r}")
        print(f"  prefill {len(ids)} tokens in {generation.prefill_seconds:.2f} s; decode "
              f"{len(generation.steps) - 1} tokens" + (f" at {rate:.1f} tokens/s" if rate else ""))
        last = generation.steps[-1]
        print(f"  cache after {last.cached_tokens} tokens: {last.cache_bytes:,} bytes weighed, "
              f"{last.formula_bytes:,} by the formula ({generation.bytes_per_token:,} bytes per token)")
    if other is not None:
        where = report["first_divergence"]
        print(f"first divergence: {'none' if where is None else f'step {where}'}; "
              f"mean KL per step {sum(report['kl_per_step']) / len(report['kl_per_step']):.3f} nats")
    return 0


def _write_report(report: dict, args) -> bool:
    """Write the JSON report to `--output` when asked; print it and say so (True) with `--json`."""
    import json
    from pathlib import Path

    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    if args.json:
        print(text)
    return args.json


if __name__ == "__main__":
    raise SystemExit(main())
