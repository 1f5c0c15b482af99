"""Published conversion figures with their sources, and our committed measurements that come closest to each.

The papers measure other things than we do (task accuracy after fine-tuning or uptraining, on other models), so
the two tables never share axes: ours are perplexities on held-out news prose, without training unless a row says
how many tokens it was uptrained on. Each published figure says where it is printed and whether it was checked
against that text; one that could not be checked says so instead of being dropped or guessed.
"""

from __future__ import annotations

MHA2MLA = "Ji et al. 2025, Towards Economical Inference: Enabling DeepSeek's Multi-Head Latent Attention in Any " \
          "Transformer-based LLMs, arXiv:2502.14837"
GQA = "Ainslie et al. 2023, GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints, " \
      "arXiv:2305.13245"
DEEPSEEK_V2 = "DeepSeek-AI 2024, DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model, " \
              "arXiv:2405.04434"

NOT_CHECKED = ("Not checked here: the paper's table could not be read offline; the figure is as quoted in the "
               "project's issue 21.")
GQA_CHECKED = "Matches Table 1 as transcribed in several independent notes on the paper; the PDF itself was not read."

# One row per figure: what was measured, on what, after how much training, and where it is printed.
PUBLISHED: tuple[dict, ...] = (
    {"paper": "MHA2MLA", "setting": "SmolLM-135M, original", "kv_reduction": 0.0,
     "figure": "44.50", "metric": "mean accuracy of six commonsense tasks (%)", "training": "none",
     "source": f"{MHA2MLA}, Table 1", "checked": NOT_CHECKED},
    {"paper": "MHA2MLA", "setting": "SmolLM-135M to MLA", "kv_reduction": 0.6875,
     "figure": "43.06", "metric": "mean accuracy of six commonsense tasks (%)", "training": "2.25B tokens",
     "source": f"{MHA2MLA}, Table 1", "checked": NOT_CHECKED},
    {"paper": "MHA2MLA", "setting": "SmolLM-135M to MLA", "kv_reduction": 0.8125,
     "figure": "41.84", "metric": "mean accuracy of six commonsense tasks (%)", "training": "2.25B tokens",
     "source": f"{MHA2MLA}, Table 1", "checked": NOT_CHECKED},
    {"paper": "GQA", "setting": "T5-XXL, MHA", "kv_reduction": 0.0,
     "figure": "47.2 (1.51 s per sample)", "metric": "average of summarisation ROUGE-1, WMT BLEU, TriviaQA F1",
     "training": "none", "source": f"{GQA}, Table 1", "checked": GQA_CHECKED},
    {"paper": "GQA", "setting": "T5-XXL to MQA (mean-pooled)", "kv_reduction": None,
     "figure": "46.6 (0.24 s per sample)", "metric": "average of summarisation ROUGE-1, WMT BLEU, TriviaQA F1",
     "training": "5% of pre-training compute", "source": f"{GQA}, Table 1", "checked": GQA_CHECKED},
    {"paper": "GQA", "setting": "T5-XXL to GQA-8 (mean-pooled)", "kv_reduction": None,
     "figure": "47.1 (0.28 s per sample)", "metric": "average of summarisation ROUGE-1, WMT BLEU, TriviaQA F1",
     "training": "5% of pre-training compute", "source": f"{GQA}, Table 1", "checked": GQA_CHECKED},
    {"paper": "DeepSeek-V2", "setting": "KV cache per token, MHA / GQA / MQA", "kv_reduction": None,
     "figure": "2·n_h·d_h·l / 2·n_g·d_h·l / 2·d_h·l", "metric": "values cached per token (l layers)",
     "training": "trained from scratch", "source": f"{DEEPSEEK_V2}, Table 1 (section 2.1.4)",
     "checked": "Matches Table 1 as transcribed in several notes and the project's NOTES.md."},
    {"paper": "DeepSeek-V2", "setting": "KV cache per token, MLA", "kv_reduction": None,
     "figure": "(d_c + d_h^R)·l ≈ 4.5·d_h·l (d_c = 512, d_h^R = 64)",
     "metric": "values cached per token (l layers)",
     "training": "trained from scratch", "source": f"{DEEPSEEK_V2}, Table 1 (section 2.1.4)",
     "checked": "Matches Table 1 as transcribed in several notes and the project's NOTES.md."},
    {"paper": "DeepSeek-V2", "setting": "DeepSeek-V2 against DeepSeek 67B", "kv_reduction": 0.933,
     "figure": "93.3% smaller KV cache (5.76x maximum generation throughput)", "metric": "KV cache per token",
     "training": "trained from scratch", "source": f"{DEEPSEEK_V2}, abstract",
     "checked": "Checked against the abstract's text."},
)

def sources() -> list[tuple[str, str, str]]:
    """(paper, where the figures are printed, whether they were checked), once per paper and place."""
    return list(dict.fromkeys((row["paper"], row["source"], row["checked"]) for row in PUBLISHED))


OUR_METRIC = "perplexity on held-out news prose (lower is better)"


def _row(compares_with: str, label: str, values: float, original_values: float, perplexity: float,
         interval: list | None, tokens: int | None, training: str) -> dict:
    low, high = interval if interval else (None, None)
    return {"compares_with": compares_with, "variant": label, "kv_values_per_token_per_layer": values,
            "kv_reduction": 1 - values / original_values, "perplexity": perplexity, "perplexity_ci_low": low,
            "perplexity_ci_high": high, "eval_tokens": tokens, "training": training, "metric": OUR_METRIC}


def our_rows(report: dict | None, uptrains: list[dict] = ()) -> list[dict]:
    """Our committed rows nearest to each published setting: the original; for each MHA2MLA cache reduction, the
    best variant at the nearest cache we measured; the best training-free MQA, and MQA after uptraining (GQA paper);
    the best absorbable DeepSeek-form variant (DeepSeek-V2). `report` is a `python -m explorer variants` report,
    `uptrains` the rows of `explorer.committed.uptrain_rows` (only those of the report's model are used)."""
    if not report or report.get("kind") == "encoder":
        return []
    rows_by_label = {row["label"]: row for row in report["variants"]}
    original = rows_by_label.get("original")
    if original is None:
        return []
    def values(row: dict) -> float:
        return row["kv_values_per_token_per_layer"]["measured"]

    original_values, tokens = values(original), report.get("eval_tokens")

    def ours(compares_with: str, row: dict) -> dict:
        return _row(compares_with, row["label"], values(row), original_values,
                    row["perplexity"], row.get("perplexity_ci"), tokens, "none")

    def best(rows: list[dict]) -> dict:
        return min(rows, key=lambda row: row["perplexity"])

    rows = [ours("the original of every paper", original)]
    for reduction in (0.6875, 0.8125):
        target = (1 - reduction) * original_values
        compressed = [r for r in report["variants"] if values(r) < original_values]
        if compressed:
            nearest = min(abs(values(r) - target) for r in compressed)
            at_nearest = [r for r in compressed if abs(values(r) - target) == nearest]
            rows.append(ours(f"MHA2MLA at -{reduction:.2%} KV", best(at_nearest)))
    if mqa := [r for r in report["variants"] if r["label"].startswith("mqa")]:
        rows.append(ours("GQA paper: MQA (theirs uptrained)", best(mqa)))
    for run in uptrains:
        if run.get("model") == report.get("model") and run["variant"].startswith("mqa"):
            one_kv_head = original_values / report["shape"]["kv_heads"]  # MQA keeps one of the original's KV heads
            rows.append(_row("GQA paper: MQA after uptraining", run["variant"], one_kv_head, original_values,
                             run["after"], None, run.get("eval_tokens"), f"{run['training_tokens']:,} tokens of "
                             f"uptraining (the original, trained alike: {run['control']:.1f})"))
    absorbable = [r for r in report["variants"] if "decoupled" in r["label"] and "absorb" in r["label"]]
    if absorbable:
        for width in sorted({values(r) for r in absorbable}):
            at = [r for r in absorbable if values(r) == width]
            rows.append(ours("DeepSeek-V2: the absorbable MLA form", best(at)))
    return rows
