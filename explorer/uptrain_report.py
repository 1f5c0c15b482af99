"""What an uptraining run reports: quality before and after, beside the control, with paired intervals, and
the reading in plain words."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from explorer.loading import LoadedModel
from explorer.uptrain import (
    CONTROL,
    RECOVERED_WITHIN,
    Step,
    UptrainSettings,
    uptrain,
)
from explorer.variants import VariantSpec, convert


def uptrain_report(
    loaded: LoadedModel,
    spec: VariantSpec,
    settings: UptrainSettings,
    eval_tokens: int = 8192,
    control: bool = True,
    progress: Callable[[str, Step], None] | None = None,
    root: Path | None = None,
) -> dict:
    """Quality of `spec` before and after uptraining, and of the control trained the same way, on held-out prose.

    Every perplexity, KL and top-1 agreement is against the original model on the same evaluation tokens, with
    its 95% interval; "after vs control" is paired (both scored on the same blocks) and the verdict "recovered"
    (within 20% of the control) is read from its interval.
    """
    from explorer import quality
    from explorer.variants import calibrate

    ids = quality.evaluation_ids(loaded.tokenizer, max(1, eval_tokens // 256), 256)  # (N, 256)
    ref = quality.reference(loaded.model, ids)
    calibration = calibrate(loaded, spec.calibration_tokens) if spec.uses_calibration() else None
    before = quality.compare(convert(loaded, spec, calibration).loaded.model, ref)
    runs = {"variant": spec, **({"control": CONTROL} if control else {})}
    report = {
        "model": loaded.entry.key,
        "variant": spec.label(),
        "spec": dataclasses.asdict(spec),
        "settings": dataclasses.asdict(settings),
        "eval_tokens": int(ids.numel()),
        "eval_prose": "second half of gensim lee_background.cor",
        "weights": quality.precision_note(loaded.entry),
        "original": {"perplexity": ref.perplexity, "perplexity_ci": list(ref.perplexity_ci), "blocks": ref.blocks},
        "before": dataclasses.asdict(before),
    }
    for name, run_spec in runs.items():
        trained = uptrain(
            loaded, run_spec, settings, calibration if name == "variant" else None,
            (lambda step, name=name: progress(name, step)) if progress else None, root,
        )
        report[f"{name}_after"] = dataclasses.asdict(quality.compare(trained.loaded.model, ref))
        report[f"{name}_record"] = dataclasses.asdict(trained.record) | {"from_cache": trained.from_cache}
    if control:
        after, trained_control = report["variant_after"]["blocks"], report["control_after"]["blocks"]
        report["after_vs_control"] = quality.ratio(after, trained_control)
        report["after_vs_control_ci"] = list(quality.ratio_interval(after, trained_control))
        report["recovered"] = quality.below(report["after_vs_control_ci"], RECOVERED_WITHIN)
    return report


def quality_rows(original, before, after, control) -> list[dict]:
    """The table beside the control: original, converted, converted + uptraining, control (all vs the original,
    on the same held-out tokens), each figure with the bounds of its 95% interval. `original` is the original
    scored against itself (`explorer.quality.identity`)."""
    rows = []
    for name, measured in (
        ("original", original),
        ("converted, no training", before),
        ("converted + uptraining", after),
        ("control: unconverted + the same training", control),
    ):
        rows.append({
            "model": name,
            "perplexity": measured.perplexity,
            "perplexity_ci_low": measured.perplexity_ci[0], "perplexity_ci_high": measured.perplexity_ci[1],
            "kl_nats": measured.kl, "kl_ci_low": measured.kl_ci[0], "kl_ci_high": measured.kl_ci[1],
            "top1_agreement": measured.top1_agreement,
            "top1_agreement_ci_low": measured.top1_agreement_ci[0],
            "top1_agreement_ci_high": measured.top1_agreement_ci[1],
            "eval_tokens": measured.tokens,
        })
    return rows


def reading(spec: VariantSpec, settings: UptrainSettings, before, after, control) -> str:
    """What the uptraining did, in plain words, judged against the control from the paired interval of
    after / control (never from the point estimate alone)."""
    from explorer import quality

    ratio = quality.ratio(after.blocks, control.blocks)
    low, high = quality.ratio_interval(after.blocks, control.blocks)
    measured = f"{ratio:.2f}x the control's perplexity (95% interval {low:.2f}–{high:.2f}, paired)"
    verdict = quality.below((low, high), RECOVERED_WITHIN)
    judged = {
        "yes": f"{measured}: within {RECOVERED_WITHIN - 1:.0%} of the control, recovered",
        "no": f"{measured}: not recovered yet; a larger budget would go further",
    }.get(verdict, f"{measured}: whether it is within {RECOVERED_WITHIN - 1:.0%} of the control, we can't tell "
                   f"at this size; score more held-out tokens")
    return (
        f"{settings.tokens:,} tokens of uptraining ({settings.scope} weights) took **{spec.label()}** from perplexity "
        f"{before.perplexity:,.1f} to **{after.perplexity:,.1f}** "
        f"({after.perplexity_ci[0]:,.1f}–{after.perplexity_ci[1]:,.1f}). The same training on the unconverted "
        f"model gives {control.perplexity:,.1f} ({control.perplexity_ci[0]:,.1f}–{control.perplexity_ci[1]:,.1f}), "
        f"so the variant is at {judged}."
    )
