"""The prepared GPU run (`python -m bench.gpu`), dry-run on the CPU at tiny sizes: every section writes its JSON with
its fields, a section out of time says so and keeps what it did, and the pages show a results folder's runs beside
the committed CPU ones, labelled with device, dtype and date."""

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from bench import gpu
from explorer import committed, scaling
from explorer.scaling import DECODE_VARIANTS


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One whole quick run on the CPU (about a minute on a quiet 2-core machine), shared by the tests below."""
    folder = tmp_path_factory.mktemp("gpu-dry-run")
    sections = gpu.main(["--device", "cpu", "--quick", "--output-dir", str(folder)])
    return folder, sections


def read(folder, stem):
    return json.loads((folder / f"{stem}-cpu-quick.json").read_text())


def test_every_section_writes_its_figures(dry_run):
    folder, sections = dry_run
    assert list(sections) == list(gpu.SECTIONS)
    for stem in ("prefill", "decode", "app", *(f"uptrain-{name}" for name in gpu.UPTRAIN_RUNS)):
        data = read(folder, stem)
        assert data["info"]["device"] == "cpu" and data["info"]["dtype"] == "fp32" and data["quick"] is True
        assert data["complete"] is True, data["notes"]
        assert data["seconds"] <= data["budget_s"] + 5  # the section checks its clock between points

    prefill = read(folder, "prefill")
    assert prefill["lengths"] == [32, 64]
    kernels = prefill["kernel_seconds"]
    assert {"eager (materialised)", "SDPA (PyTorch's choice)", "SDPA math"} <= set(kernels)
    assert all(len(times) == 2 and all(t > 0 for t in times) for times in kernels.values())
    assert "SDPA memory-efficient" in prefill["backends_refused"]  # a CPU build has no such kernel

    decode = read(folder, "decode")
    assert set(decode["batches"]) == {"1", "2"} and decode["gpu"]["name"] == "H200"
    for figures in decode["batches"].values():
        assert figures["contexts"] == [32, 64]
        assert set(figures["tokens_per_s"]) == set(DECODE_VARIANTS)
        assert all(v > 0 for values in figures["tokens_per_s"].values() for v in values)
        # on the H200's roofline a small model's decode bound lies far above what a CPU does
        assert all(bound > speed for name, values in figures["tokens_per_s"].items()
                   for speed, bound in zip(values, figures["roofline_tokens_per_s"][gpu._roofline_key(name)]))
        assert figures["cache_bytes"]["MQA"][-1] * 3 == figures["cache_bytes"]["GQA"][-1]

    for name, spec in gpu.UPTRAIN_RUNS.items():
        report = read(folder, f"uptrain-{name}")
        assert report["run"] == name and report["settings"]["tokens"] == 128
        assert report["variant"] == spec.label() and report["eval_tokens"] == 256
        assert report["after_vs_control"] == pytest.approx(
            report["variant_after"]["perplexity"] / report["control_after"]["perplexity"])

    app = read(folder, "app")
    assert set(app["pages"]) == set(gpu.APP_PAGES)
    assert app["pages"]["variant lab"]["metrics"]["KV values / token / layer"] == "1152"  # MHA: 2 x 9 x 64
    assert any(row["what"].startswith("chart: Layer 29") for row in app["comparisons"])
    assert {"metric: Perplexity", "metric: KV values / token / layer"} <= {row["what"] for row in app["comparisons"]}
    assert app["all_within"] is True  # the CPU against itself; on a GPU, bf16 against the CPU's fp32

    results = scaling.load_results(folder / "scaling-cpu-quick.json")  # what the Scaling page reads
    assert [p.tokens for p in results.prefill] == [32, 64] and results.decode_batch == 2
    assert results.decode_series()[0] == [32, 64]


def test_a_section_out_of_time_writes_what_it_did_and_says_so(tmp_path, capsys):
    gpu.main(["--device", "cpu", "--quick", "--sections", "prefill", "uptrain", "--budget-scale", "0",
              "--output-dir", str(tmp_path)])
    prefill = read(tmp_path, "prefill")
    assert prefill["complete"] is False and prefill["lengths"] == []
    stopped = [note for note in prefill["notes"] if note.startswith("Out of the 0 s budget")]
    assert len(stopped) == 1 and "lengths from 32 tokens on were not measured" in stopped[0]
    assert not (tmp_path / "scaling-cpu-quick.json").exists()  # nothing measured: no page file
    for name in gpu.UPTRAIN_RUNS:
        assert read(tmp_path, f"uptrain-{name}")["complete"] is False
    assert "(incomplete)" in capsys.readouterr().out


def test_a_failing_section_is_written_down_and_the_next_one_still_runs(tmp_path, monkeypatch):
    def broken(run):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu, "run_prefill", broken)
    sections = gpu.main(["--device", "cpu", "--quick", "--sections", "prefill", "decode",
                         "--output-dir", str(tmp_path)])
    failed = read(tmp_path, "prefill-error")
    assert failed["complete"] is False and "illegal memory access" in failed["error"]
    assert sections["decode"][0].complete and read(tmp_path, "decode")["batches"]


def test_a_cpu_run_refuses_to_overwrite_the_committed_results():
    with pytest.raises(SystemExit):
        gpu.main(["--device", "cpu", "--quick"])


def test_the_scaling_page_shows_a_results_folder_beside_the_cpu_run(dry_run, tmp_path, monkeypatch):
    folder, _ = dry_run
    shutil.copy(committed.DEFAULT_RESULTS / "scaling-cpu.json", tmp_path)
    shutil.copy(folder / "scaling-cpu-quick.json", tmp_path)
    monkeypatch.setenv(committed.RESULTS_ENV, str(tmp_path))
    quick = scaling.load_results(folder / "scaling-cpu-quick.json")
    cpu = scaling.load_results(tmp_path / "scaling-cpu.json")
    app = AppTest.from_file("../views/scaling.py", default_timeout=120)
    app.run()
    assert not app.exception
    headers = [header.value for header in app.subheader]  # device and dtype
    assert len(headers) == 2 and set(headers) == {cpu.label, quick.label} and "fp32" in quick.label
    captions = " ".join(caption.value for caption in app.caption)  # and the date of each run
    assert f"cpu-quick: torch {quick.info.torch}, transformers {quick.info.transformers}, {quick.info.date[:10]}" \
        in captions
    assert f"cpu: torch {cpu.info.torch}, transformers {cpu.info.transformers}, {cpu.info.date[:10]}" in captions
    assert len(app.get("plotly_chart")) == 6  # prefill time, memory and decode for each run


def test_the_lab_lists_uptraining_runs_of_every_device(dry_run, tmp_path):
    folder, _ = dry_run
    for path in committed.DEFAULT_RESULTS.glob("uptrain-mqa-cpu.json"):
        shutil.copy(path, tmp_path)
    shutil.copy(folder / "uptrain-mla-cpu-quick.json", tmp_path)
    rows = {row["run"]: row for row in committed.uptrain_rows(tmp_path)}
    assert set(rows) == {"mqa-cpu", "mla-cpu-quick"}
    assert rows["mqa-cpu"]["dtype"] == "fp32" and rows["mqa-cpu"]["date"] == "not recorded"
    quick = read(folder, "uptrain-mla")
    assert rows["mla-cpu-quick"]["date"] == quick["info"]["date"][:10]
    assert rows["mla-cpu-quick"]["device"] == f"CPU ({quick['info']['device_name']})"
    assert rows["mla-cpu-quick"]["after_vs_control"] == pytest.approx(quick["after_vs_control"])

    def page(folder):
        from explorer import ui

        ui.committed_uptraining(folder)

    app = AppTest.from_function(page, args=(str(tmp_path),), default_timeout=60)
    app.run()
    assert not app.exception
    assert "2, on" in app.expander[0].label
    shown = app.dataframe[0].value
    assert list(shown["run"]) == ["mla-cpu-quick", "mqa-cpu"] and shown["date"].iloc[0][:2] == "20"
