"""Where a model's config comes from: a dict, pasted config.json text, a transformers config object, a reference
config shipped in assets/configs (with its source), a config.json path or folder, or (online only) a hub id.
Remote code never runs. `explorer.config.read_config` turns any of them into the one model description.
"""

from __future__ import annotations

import json
import os

from explorer.catalogue import local_path
from explorer.paths import ASSETS_DIR

REFERENCE_DIR = ASSETS_DIR / "configs"


def reference_models() -> dict[str, dict]:
    """The reference configs shipped in assets/configs, by file stem ("llama-2-7b"), each with its "_source"."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(REFERENCE_DIR.glob("*.json"))}


def load_config(source) -> dict:
    """A config as a plain dict, from a dict, pasted config.json text, a transformers config object, a reference
    name, a config.json path or folder, or (online only) a hub id."""
    if isinstance(source, dict):
        return source
    if hasattr(source, "to_dict"):  # a transformers config object
        return source.to_dict()
    text = str(source).strip()
    if text.startswith("{"):  # pasted config.json
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"The pasted config is not valid JSON ({error}); paste the whole config.json.")
    references = reference_models()
    if text in references:
        return references[text]
    for reference in references.values():  # a hub id we ship a reference copy of: no network needed
        if reference["_source"].split(" ")[0].lower() == text.lower():
            return reference
    path = local_path(text)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); paste the model's config.json as it is.")
    return _config_from_hub(text, sorted(references))


def _config_from_hub(model_id: str, reference_names: list[str]) -> dict:
    """Fetch a hub id's config (no remote code); say in a sentence what to do when that is impossible."""
    offline_hint = (
        f"Paste its config.json, give a path to one, or pick a reference model: {', '.join(reference_names)}."
    )
    if "/" not in model_id:
        raise ValueError(f"'{model_id}' is neither a reference model, a file nor a hub id. {offline_hint}")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise ValueError(f"Cannot fetch the config of '{model_id}': this machine is offline. {offline_hint}")
    from transformers import AutoConfig  # only when a hub id is asked for: importing it costs seconds

    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=False).to_dict()
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0][:200]
        raise ValueError(
            f"Could not fetch the config of '{model_id}' ({reason}). Check the id; configs that need remote "
            f"code are not read. {offline_hint}"
        ) from error


def _hub_reachable(timeout_seconds: float = 3.0) -> bool:
    """Can this machine open a connection to the hub? (Saves the hub client's half-minute of retries.)"""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout_seconds).close()
        return True
    except OSError:
        return False
