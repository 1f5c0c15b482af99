"""`python -m explorer kv`: its JSON parses and matches the functions behind it."""

import json
import subprocess
import sys

from explorer.__main__ import main
from explorer.config import read_config
from explorer.kv import kv_cache_size


def test_kv_json_matches_the_formula(capsys):
    assert main(["kv", "--config", "llama-3-8b", "--tokens", "8192", "--batch", "2", "--dtype", "bf16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes_per_token"] == 128 * 1024
    assert report["kv_cache_bytes"] == kv_cache_size(read_config("llama-3-8b"), 8192, 2).kv_cache_bytes
    assert report["kv_cache_bytes"] == 2 * 8192 * 128 * 1024
    assert report["fields_used"]["num_key_value_heads"] == 8
    variants = {each["variant"]: each["bytes_per_token"] for each in report["variants"]}
    assert variants["MHA (32 KV heads)"] == 512 * 1024 and variants["MQA (1 KV head)"] == 16 * 1024
    assert variants["GQA (8 KV heads), as built"] == 128 * 1024
    assert report["longest_context_on_one_gpu"]["RTX 4090"] > 0


def test_kv_traps_reach_the_json(capsys):
    assert main(["kv", "--config", "falcon-7b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "MQA (1 KV head)" and report["bytes_per_token"] == 8 * 1024
    assert any("num_kv_heads: 71 is ignored" in note for note in report["notes"])


def test_kv_reads_a_config_file(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4,
                                "num_key_value_heads": 2, "hidden_size": 64, "intermediate_size": 128,
                                "vocab_size": 100}))
    assert main(["kv", "--config", str(path), "--tokens", "10", "--dtype", "fp32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kv_cache_bytes"] == 10 * 2 * 2 * 2 * 16 * 4


def test_kv_unknown_config_is_a_sentence(capsys):
    assert main(["kv", "--config", "no-such-model"]) == 2
    assert "pick a reference model" in capsys.readouterr().err


def test_kv_as_a_process():
    result = subprocess.run(
        [sys.executable, "-m", "explorer", "kv", "--config", "deepseek-v3", "--tokens", "1", "--json"],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(result.stdout)["bytes_per_token"] == 61 * 576 * 2  # 70,272 B = 68.625 KiB


def test_kv_report_for_people_on_an_encoder_and_a_folder(tmp_path, capsys):
    assert main(["kv", "--config", "all-minilm-l6-v2"]) == 0
    out = capsys.readouterr().out
    assert "is an encoder" in out and "memory sets no limit" in out
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "hidden_size": 64,
                                                      "intermediate_size": 128, "vocab_size": 100}))
    assert main(["kv", "--config", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path}: MHA (4 KV heads)")
