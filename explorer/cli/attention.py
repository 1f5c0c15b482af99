"""`attention`: a text's tokens and attention summary."""

from __future__ import annotations


def add(commands) -> None:
    attention = commands.add_parser("attention", help="tokens and attention summary of a text")
    attention.add_argument("--model", default="smollm2")
    attention.add_argument("--text", default="The giant ate the apple because it was hungry")
    attention.add_argument("--json", action="store_true")
    attention.set_defaults(handler=run_attention)


def run_attention(args) -> int:
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
