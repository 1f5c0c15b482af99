"""Command line: `python -m explorer <command> --help`.

Each command prints a report for people, or JSON with `--json`.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explorer", description=__doc__)
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

    args = parser.parse_args(argv)
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

    from explorer.kv import GPUS, attention_layout, estimate_parameters, kv_cache_size, longest_context, variant_layouts

    try:
        layout = attention_layout(args.config)
        size = kv_cache_size(layout, args.tokens, args.batch, args.dtype)
        weight_bytes = estimate_parameters(args.config).weight_bytes(args.dtype)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    variants = [kv_cache_size(each, args.tokens, args.batch, args.dtype) for each in variant_layouts(layout)]
    report = {
        "config": args.config,
        "name": layout.name,
        "variant": layout.label,
        "tokens": args.tokens,
        "batch": args.batch,
        "dtype": args.dtype,
        "bytes_per_token": size.bytes_per_token,
        "kv_cache_bytes": size.kv_cache_bytes,
        "explanation": size.explanation,
        "weight_bytes_estimate": weight_bytes,
        "longest_context": {gpu.name: longest_context(layout, gpu.memory_bytes, weight_bytes, args.batch, args.dtype)
                            for gpu in GPUS},
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
    print(f"{layout.name}: {layout.label}, {args.tokens:,} tokens x {args.batch} in {args.dtype}")
    print(f"  {size.explanation}")
    print(f"  cache: {size.kv_cache_bytes / 2**30:,.3f} GiB; weights (estimate): {weight_bytes / 2**30:,.2f} GiB")
    for each in variants:
        print(f"  {each.layout.legend:<34} {each.bytes_per_token / 1024:>10,.2f} KiB/token {each.kv_cache_bytes / 2**30:>10,.3f} GiB")
    for gpu_name, tokens in report["longest_context"].items():
        verdict = {None: "memory sets no limit (the cache stops growing)", 0: "the weights do not fit"}
        print(f"  longest context on {gpu_name}: {verdict[tokens] if tokens in verdict else f'{tokens:,} tokens'}")
    for note in layout.notes:
        print(f"  note: {note}")
    return 0


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
