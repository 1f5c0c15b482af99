"""Uptraining: a short fine-tune of a converted model, its control, its cache, and its data kept apart."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from explorer import uptrain as uptraining
from explorer import uptrain_report
from explorer.__main__ import main
from explorer.prose import prose
from explorer.lab import RESULTS
from explorer.quality import EVAL_TOKENS, Quality, below, blocks, evaluation_ids
from explorer.settings import SettingsError, read_settings
from explorer.uptrain import CONTROL, UptrainSettings, training_batches, trainable_parameters, uptrain
from explorer.variants import VariantSpec
from tests.tiny import tiny_llama

TINY = UptrainSettings(tokens=8 * 64, sequence_tokens=64, learning_rate=3e-3, warmup_share=0.0, scope="all")


@pytest.fixture(scope="module")
def tiny(smollm2):
    """A 2-layer Llama with random weights (GQA: 4 query heads, 2 KV heads) and SmolLM2's real tokenizer."""
    return tiny_llama(smollm2.tokenizer, "tiny-llama")


def held_out_loss(model, tokenizer, settings) -> float:
    """Mean loss on the first training batches, the same ones before and after."""
    batches = list(training_batches(tokenizer, settings))[:3]
    with torch.inference_mode():
        return sum(float(model(input_ids=b, labels=b).loss) for b in batches) / len(batches)


def test_a_tiny_budget_lowers_the_training_loss(tiny, tmp_path):
    before = held_out_loss(tiny.model, tiny.tokenizer, TINY)
    trained = uptrain(tiny, VariantSpec("mqa"), TINY, root=tmp_path)
    after = held_out_loss(trained.loaded.model, tiny.tokenizer, TINY)
    assert len(trained.record.losses) == TINY.steps == 8
    assert after < before - 0.2, (before, after)  # measured: 10.82 -> 10.43
    assert trained.record.tokens_seen == 8 * 64
    assert trained.loaded.model.config.num_key_value_heads == 1  # it trained the converted model


def test_a_saved_run_reloads_the_same_weights(tiny, tmp_path):
    settings = UptrainSettings(tokens=2 * 64, sequence_tokens=64, scope="attention")
    first = uptrain(tiny, VariantSpec("mqa"), settings, root=tmp_path)
    second = uptrain(tiny, VariantSpec("mqa"), settings, root=tmp_path)
    assert not first.from_cache and second.from_cache
    assert second.record.losses == first.record.losses
    theirs = dict(second.loaded.model.named_parameters())
    for name, parameter in first.loaded.model.named_parameters():
        assert torch.equal(parameter, theirs[name]), name
    saved = json.loads((first.path / "record.json").read_text())
    assert saved["variant"] == "mqa kv=1 mean" and saved["settings"]["tokens"] == 128
    other = uptrain(tiny, VariantSpec("mqa"), UptrainSettings(tokens=3 * 64, sequence_tokens=64), root=tmp_path)
    assert not other.from_cache and other.path != first.path  # another budget is another run


def test_attention_scope_trains_attention_weights_only_and_leaves_the_original_untouched(tiny, tmp_path):
    original = {name: tensor.clone() for name, tensor in tiny.model.state_dict().items()}
    settings = UptrainSettings(tokens=2 * 64, sequence_tokens=64, scope="attention", learning_rate=1e-2)
    trained = uptrain(tiny, CONTROL, settings, root=tmp_path).loaded.model
    for name, tensor in tiny.model.state_dict().items():
        assert torch.equal(tensor, original[name]), f"the shared model changed: {name}"
    changed = {name for name, tensor in trained.state_dict().items() if not torch.equal(tensor, original[name])}
    assert changed and all(".self_attn." in name for name in changed)
    assert set(trainable_parameters(trained, "attention")) >= changed
    assert trained.config.num_key_value_heads == 2  # the control keeps the original attention
    assert not any(p.requires_grad for p in trained.parameters()) and not trained.training


def test_the_evaluation_prose_is_never_trained_on(tiny, tmp_path):
    seen: list[torch.Tensor] = []
    embeddings = torch.nn.Embedding

    def record(module, args):
        if isinstance(module, embeddings):
            seen.append(args[0].reshape(-1))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        uptrain(tiny, VariantSpec("mqa"), UptrainSettings(tokens=4 * 64, sequence_tokens=64), root=tmp_path)
    finally:
        handle.remove()
    trained_on = torch.cat(seen).tolist()
    assert len(trained_on) >= 4 * 64
    windows = {tuple(trained_on[i : i + 8]) for i in range(len(trained_on) - 7)}
    evaluated = evaluation_ids(tiny.tokenizer, chunks=4).reshape(-1).tolist()  # every token any report scores
    assert not any(tuple(evaluated[i : i + 8]) in windows for i in range(len(evaluated) - 7))
    assert not set(prose("training").split("\n\n")) & set(prose("evaluation").split("\n\n"))


def test_a_budget_beyond_the_text_repeats_it_in_a_new_order(tiny):
    settings = UptrainSettings(tokens=10**6, sequence_tokens=256, batch_sequences=8)
    batches = training_batches(tiny.tokenizer, settings)
    sequences = uptraining.training_sequences(tiny.tokenizer, 256)
    first_pass = [next(batches) for _ in range(len(sequences) // 8)]
    rows = torch.cat(first_pass)
    assert len({tuple(r.tolist()) for r in rows}) == len(rows)  # no repeats within a pass
    assert all(b.shape == (8, 256) for b in first_pass)


def test_the_learning_rate_warms_up_then_decays():
    settings = UptrainSettings(tokens=100 * 256, learning_rate=1e-3, warmup_share=0.1, final_share=0.1)
    rates = [settings.learning_rate_at(step) for step in range(settings.steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] == pytest.approx(1e-4, rel=0.05)


def test_the_time_estimate_grows_with_the_budget(tiny):
    short = uptraining.estimate_seconds(tiny, UptrainSettings(tokens=1024, sequence_tokens=64), runs=1)
    long = uptraining.estimate_seconds(tiny, UptrainSettings(tokens=64 * 1024, sequence_tokens=64), runs=2)
    assert 0 < short < long


def test_an_encoder_is_refused_with_a_sentence(minilm, tmp_path):
    with pytest.raises(ValueError, match="Pick a decoder"):
        uptrain(minilm, VariantSpec("mqa"), TINY, root=tmp_path)


def test_the_reading_judges_against_the_control_from_the_paired_interval():
    difficulty = np.random.default_rng(0).normal(0.0, 1.0, size=(32, 256))  # (N, P) what every model finds hard

    def measured(perplexity, noise=0.05, seed=1):
        # per-token losses around log(perplexity), sharing the passages' difficulty as real models do
        per_token = np.log(perplexity) + difficulty + np.random.default_rng(seed).normal(0, noise, size=(32, 256))
        stats = blocks({"nll": torch.tensor(per_token)})
        return Quality(perplexity, 0.1, 0.5, 1.0, 100, 0.1, (0.9 * perplexity, 1.1 * perplexity), (0.05, 0.15),
                       (0.4, 0.6), float("nan"), (float("nan"),) * 2, stats)

    settings = UptrainSettings(tokens=8192)
    recovered = uptrain_report.reading(VariantSpec("mqa"), settings, measured(9000), measured(44), measured(40, seed=2))
    assert "recovered" in recovered and "not recovered" not in recovered and "9,000.0" in recovered
    behind = uptrain_report.reading(VariantSpec("mqa"), settings, measured(9000), measured(60), measured(40, seed=2))
    assert "x the control" in behind and "not recovered" in behind
    # on the line: 1.2x the control, with an interval either side of it
    unsure = uptrain_report.reading(VariantSpec("mqa"), settings, measured(9000), measured(48, noise=1.0),
                                measured(40, seed=2))
    assert "can't tell at this size" in unsure and "not recovered" not in unsure
    rows = uptrain_report.quality_rows(measured(42), measured(9000), measured(60), measured(40))
    assert [r["perplexity"] for r in rows] == [42, 9000, 60, 40]
    assert rows[2]["perplexity_ci_low"] == 54 and rows[2]["perplexity_ci_high"] == pytest.approx(66)


def test_hosted_mode_caps_the_training_budget():
    assert read_settings({}).max_uptrain_tokens == 2_097_152
    assert read_settings({"ATTENTION_EXPLORER_HOSTED": "1"}).max_uptrain_tokens == 2048
    assert read_settings({"ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS": "8192"}).max_uptrain_tokens == 8192
    with pytest.raises(SettingsError, match="ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS"):
        read_settings({"ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS": "lots"})


@pytest.fixture(scope="module")
def command_line_report(tmp_path_factory):
    """`python -m explorer uptrain` on a tiny budget: the report it prints and writes, and where it saved runs."""
    folder = tmp_path_factory.mktemp("uptrain-cli")
    output = folder / "report.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uptraining, "cache_dir", lambda: folder)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["uptrain", "--model", "smollm2", "--variant", "mqa", "--tokens", "256", "--eval-tokens",
                         "256", "--json", "--output", str(output)])
    return code, json.loads(printed.getvalue()), json.loads(output.read_text()), folder


def test_the_command_line_reports_before_after_and_control(command_line_report):
    code, report, written, folder = command_line_report
    assert code == 0 and report == written
    assert report["variant"] == "mqa kv=1 mean" and report["eval_tokens"] == 256
    assert report["variant_record"]["tokens_seen"] == 256 and len(report["variant_record"]["losses"]) == 1
    assert report["before"]["perplexity"] > 10 * report["original"]["perplexity"]  # training-free MQA collapses
    assert report["control_after"]["perplexity"] < 2 * report["original"]["perplexity"]
    assert report["after_vs_control"] == pytest.approx(
        report["variant_after"]["perplexity"] / report["control_after"]["perplexity"])
    low, high = report["after_vs_control_ci"]
    assert low < report["after_vs_control"] < high and report["recovered"] in ("yes", "no", "can't tell at this size")
    assert report["original"]["perplexity_ci"][0] < report["original"]["perplexity"] < report["original"]["perplexity_ci"][1]
    assert "dequantised from a 4-bit GGUF (Q4_1)" in report["weights"]
    assert (folder / "uptrained").is_dir()


@pytest.mark.parametrize("path", sorted(RESULTS.glob("uptrain-*.json")), ids=lambda path: path.name)
def test_every_committed_uptraining_result_has_the_fields_its_writer_produces_today(command_line_report, path):
    report = command_line_report[1]
    committed = json.loads(path.read_text())
    assert set(report) <= set(committed), f"{path.name} lacks {sorted(set(report) - set(committed))}; run it again"
    for run in ("original", "before", "variant_after", "control_after"):
        assert set(report[run]) <= set(committed[run]), f"{path.name}: {run} lacks fields; run it again"
    assert committed["eval_tokens"] >= EVAL_TOKENS
    low, high = committed["after_vs_control_ci"]
    assert low <= committed["after_vs_control"] <= high
    assert committed["recovered"] == below((low, high), uptraining.RECOVERED_WITHIN)  # read from the interval


def test_the_lab_uptrains_beside_the_control(monkeypatch, tmp_path):
    monkeypatch.setattr(uptraining, "cache_dir", lambda: tmp_path)
    at = AppTest.from_file("../app.py", default_timeout=600)
    at.query_params["variant"] = "mqa"
    at.run()
    at.switch_page("views/variant_lab.py").run()
    assert not at.exception
    assert any("Estimated" in c.value for c in at.caption)  # the time estimate shows before anything runs
    at.select_slider(key="uptrain-tokens").set_value(2048)
    at.run()
    at.button(key="uptrain-start").click()
    at.run()
    assert not at.exception
    table = next(frame.value for frame in at.dataframe if "converted + uptraining" in list(frame.value.get("model", [])))
    assert list(table["model"]) == ["original", "converted, no training", "converted + uptraining",
                                    "control: unconverted + the same training"]
    assert table["perplexity"][2] < table["perplexity"][1]  # 2,048 tokens already help the collapsed MQA
    assert any("of uptraining" in m.value and "control" in m.value for m in at.markdown)
    assert len(list((tmp_path / "uptrained").glob("smollm2-*/weights.safetensors"))) == 2


def test_a_link_restores_the_uptraining_choices_and_corrects_a_budget_not_offered():
    at = AppTest.from_file("../app.py", default_timeout=600)
    at.query_params.update({"variant": "mqa", "uptrain_tokens": "32768", "uptrain_scope": "all"})
    at.run()
    at.switch_page("views/variant_lab.py").run()
    assert not at.exception
    assert at.select_slider(key="uptrain-tokens").value == 32768
    assert at.radio(key="uptrain-scope").value == "all"
    assert at.query_params["uptrain_tokens"] == "32768" and at.query_params["uptrain_scope"] == "all"

    odd = AppTest.from_file("../app.py", default_timeout=600)
    odd.query_params.update({"variant": "mqa", "uptrain_tokens": "5000"})
    odd.run()
    odd.switch_page("views/variant_lab.py").run()
    assert not odd.exception
    assert any("5,000 training tokens" in i.value for i in odd.info)
    assert odd.select_slider(key="uptrain-tokens").value == 8192
    assert "uptrain_tokens" not in odd.query_params


def test_a_run_that_would_not_fit_in_memory_is_refused_with_what_to_do(tiny, tmp_path, monkeypatch):
    model = tiny.model
    attention_only = uptraining.training_bytes(model, tiny.config, UptrainSettings(scope="attention"))
    whole = uptraining.training_bytes(model, tiny.config, UptrainSettings(scope="all"))
    longer = uptraining.training_bytes(model, tiny.config, UptrainSettings(scope="all", sequence_tokens=512))
    assert attention_only < whole < longer
    small = UptrainSettings(tokens=64, sequence_tokens=64, scope="all")
    monkeypatch.setenv("ATTENTION_EXPLORER_MEMORY_LIMIT", str(uptraining.training_bytes(model, tiny.config, small) // 2))
    with pytest.raises(ValueError, match="train the attention weights only"):
        uptrain(tiny, VariantSpec("mqa"), small, root=tmp_path)
    assert not list(tmp_path.glob("*/weights.safetensors"))


@pytest.mark.parametrize("settings, sentence", [
    (dict(tokens=0), "give at least 256"),
    (dict(tokens=1024, batch_sequences=0), "at least one sequence"),
    (dict(learning_rate=-1.0), "learning rate between 0 and 1"),
])
def test_impossible_training_settings_are_refused_with_a_sentence(settings, sentence):
    with pytest.raises(ValueError, match=sentence):
        UptrainSettings(**settings)


def test_the_command_line_refuses_an_empty_budget_without_a_traceback(capsys):
    assert main(["uptrain", "--tokens", "0"]) == 2
    assert "give at least 256" in capsys.readouterr().err
