"""The committed results stay true: each variants report carries every field its writer produces today, every
figure sits inside its own interval, and a cheap row (the original model, and one exact conversion) recomputed
now lands where the committed file says."""

import json

import pytest

from explorer.lab import RESULTS
from explorer.quality import EVAL_TOKENS, better, compare, evaluation_ids, reference
from explorer.variants import VariantSpec, convert
from explorer.variants.report import variant_report

VARIANT_REPORTS = sorted(RESULTS.glob("variants-*.json"))
SCORES = {"decoder": ("perplexity", "kl", "top1_agreement", "perplexity_vs_original"),
          "encoder": ("embedding_cosine", "hidden_relative_error")}


@pytest.fixture(scope="module")
def fresh_reports(smollm2, minilm):
    """What the writer produces today, on a few tokens: one decoder report and one encoder report."""
    cheap = VariantSpec("original", calibration_tokens=256)
    return {
        "decoder": variant_report(smollm2, (cheap,), eval_tokens=256),
        "encoder": variant_report(minilm, (cheap,), eval_tokens=128),
    }


def test_there_is_a_committed_report_per_embedded_model():
    assert {path.name for path in VARIANT_REPORTS} >= {"variants-cpu.json", "variants-minilm-cpu.json",
                                                       "variants-gemma3-cpu.json"}


@pytest.mark.parametrize("path", VARIANT_REPORTS, ids=lambda path: path.name)
def test_every_committed_report_has_the_fields_its_writer_produces_today(fresh_reports, path):
    committed = json.loads(path.read_text())
    assert not committed.get("unfinished"), f"{path.name} is a run that did not finish; run it again"
    writer = fresh_reports[committed["kind"]]
    assert set(writer) <= set(committed), f"{path.name} lacks {sorted(set(writer) - set(committed))}"
    row_fields = set(writer["variants"][0])  # the original's row: fields every row carries
    for row in committed["variants"]:
        assert row_fields <= set(row), f"{path.name}, {row['label']}: lacks {sorted(row_fields - set(row))}"
        assert row["measured_equals_formula"], f"{path.name}, {row['label']}: the cache weighed is not the formula's"
        for score in SCORES[committed["kind"]]:
            low, high = row[f"{score}_ci"]
            slack = 1e-7 + 1e-9 * abs(row[score])  # the blocks behind an interval are stored to 7 decimals
            assert low - slack <= row[score] <= high + slack, (row["label"], score)
    assert committed["eval_tokens"] >= EVAL_TOKENS
    for comparison in committed["comparisons"]:
        low, high = comparison["ci"]
        by_ratio = comparison["measure"].startswith("perplexity")
        expected = better((low, high), 1.0) if by_ratio else better((low, high), 0.0, lower_is_better=False)
        assert comparison["verdict"] == expected  # from the interval, never the point estimate


def test_the_original_and_an_exact_conversion_reproduce_the_committed_numbers(smollm2):
    committed = json.loads((RESULTS / "variants-cpu.json").read_text())
    rows = {row["label"]: row for row in committed["variants"]}
    chunk_tokens = 256
    input_ids = evaluation_ids(smollm2.tokenizer, committed["eval_tokens"] // chunk_tokens, chunk_tokens)  # (N, T)
    ref = reference(smollm2.model, input_ids)
    low, high = rows["original"]["perplexity_ci"]
    assert low <= ref.perplexity <= high
    assert ref.perplexity == pytest.approx(rows["original"]["perplexity"], rel=1e-4)  # same weights, same tokens
    # MHA by repeating KV heads is exact: on the first four sequences, block for block, what the file says
    first = reference(smollm2.model, input_ids[:4])  # (4, T)
    mha = compare(convert(smollm2, VariantSpec("mha")).loaded.model, first)
    blocks = len(mha.blocks["nll"])
    assert mha.blocks["nll"] == pytest.approx(rows["mha"]["blocks"]["nll"][:blocks], rel=1e-5)
    assert mha.perplexity_ratio == pytest.approx(1.0, abs=1e-6)
    assert rows["mha"]["perplexity_vs_original_ci"] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert rows["mha"]["within_5_percent"] == "yes"
