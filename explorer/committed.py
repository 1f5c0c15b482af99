"""Committed benchmark results, read for the pages: which folder, and the uptraining runs of every device.

The pages read `bench/results/` unless `ATTENTION_EXPLORER_RESULTS` names another folder (a results folder from
`python -m bench.gpu --output-dir ...`, say, before its files are committed). CPU and CUDA runs sit side by side,
each labelled with the device, dtype and date it ran with.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS_ENV = "ATTENTION_EXPLORER_RESULTS"
DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def results_dir() -> Path:
    """The folder the pages read committed results from: `ATTENTION_EXPLORER_RESULTS`, else bench/results."""
    named = os.environ.get(RESULTS_ENV, "").strip()
    return Path(named).expanduser() if named else DEFAULT_RESULTS


def run_label(report: dict) -> dict[str, str]:
    """Device, dtype and date of one uptraining report: from its run information (written by `bench.gpu`), else
    from the training record (written by `python -m explorer uptrain`, which records no date)."""
    info = report.get("info") or {}
    record = report.get("variant_record") or {}
    device = info.get("device_name") or record.get("device") or "unknown device"
    if info.get("device") == "cpu" and "cpu" not in device.lower():
        device = f"CPU ({device})"
    dtype = record.get("precision") or info.get("dtype") or "unknown dtype"
    date = info.get("date")
    return {"device": device, "dtype": dtype, "date": date[:10] if date else "not recorded"}


def uptrain_rows(folder: Path | str | None = None) -> list[dict]:
    """One row per uptraining report (`uptrain-*.json`) in the results folder: what was trained, on which device,
    and the perplexities after training beside the control's. Reports stopped before a finished run are left out."""
    rows = []
    for path in sorted(Path(folder or results_dir()).glob("uptrain-*.json")):
        report = json.loads(path.read_text())
        if "variant_after" not in report:
            continue
        control = (report.get("control_after") or {}).get("perplexity")
        after = report["variant_after"]["perplexity"]
        rows.append({
            "run": path.stem.removeprefix("uptrain-"),
            "model": report.get("model"),
            **run_label(report),
            "training_tokens": report.get("settings", {}).get("tokens"),
            "after": after,
            "control": control,
            "after_vs_control": after / control if control else None,
            "before": report.get("before", {}).get("perplexity"),
            "original": report.get("original", {}).get("perplexity"),
            "eval_tokens": report.get("eval_tokens"),
            "variant": report.get("variant", "?"),
        })
    return rows
