"""What a server can do before its first visitor: import the heavy libraries, load the default model and run the
default text through it, once per process, in a background thread.

Streamlit runs the app's script only when a visitor connects, so a server started with `streamlit run app.py`
does all of this on the first visit. The launcher (`python -m explorer app`, which `make app` runs) calls
`start()` and then starts Streamlit in the same process; the page's caches take the model and the run from here
(`model`, `overview`) instead of loading and running them again. Without `start()` both return None at once.
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the thread imports them: the launcher starts Streamlit without waiting for torch
    from explorer.loading import LoadedModel
    from explorer.run import AttentionOverview


@dataclass
class Preloaded:
    """What the background thread made ready; filled in as it goes."""

    models: dict[str, LoadedModel] = field(default_factory=dict)  # by model key
    overviews: dict[tuple[str, str, int], AttentionOverview] = field(default_factory=dict)  # by (key, text, tokens)
    seconds: float | None = None  # wall time of the whole preload, once finished
    skipped: str | None = None  # why the model was not loaded (the page then loads it, and says what is wrong)


_ready = Preloaded()
_thread: threading.Thread | None = None


def start(modules: tuple[str, ...] = (), model_key: str | None = None, text: str | None = None) -> threading.Thread:
    """Start the preload (once per process): import `modules`, load `model_key` (default: the page's default
    model) and run `text` (default: the page's default text) through it, as the attention page would."""
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_preload, args=(modules, model_key, text), name="preload", daemon=True)
        _thread.start()
    return _thread


def _preload(modules: tuple[str, ...], model_key: str | None, text: str | None) -> None:
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    from explorer.catalogue import DEFAULT_MODEL, entry_for
    from explorer.loading import load_model, needs_conversion
    from explorer.run import MAX_TOKENS, overview_attention
    from explorer.settings import read_settings
    from explorer.state import DEFAULT_TEXT

    model_key, text = model_key or DEFAULT_MODEL, text or DEFAULT_TEXT
    try:
        settings = read_settings()
        entry = entry_for(model_key)
        if not settings.allows_model(model_key):
            _ready.skipped = f"{model_key} is not among the models this server allows"
        elif needs_conversion(entry):  # the page converts it, with a progress bar the visitor can follow
            _ready.skipped = f"{entry.label} is not converted yet"
        else:
            loaded = load_model(model_key, settings=settings)
            max_tokens = min(MAX_TOKENS, settings.max_input_tokens)  # as the attention page asks for typed text
            _ready.overviews[(model_key, text, max_tokens)] = overview_attention(loaded, text, max_tokens)
            _ready.models[model_key] = loaded
    except Exception as error:  # noqa: BLE001  the page tries again and shows the visitor what is wrong
        _ready.skipped = f"{type(error).__name__}: {error}"
    _ready.seconds = time.perf_counter() - started
    outcome = f"skipped the model ({_ready.skipped})" if _ready.skipped else f"{model_key} loaded and run"
    print(f"Preload: {outcome}, in {_ready.seconds:.1f} s.", file=sys.stderr, flush=True)


def wait() -> Preloaded:
    """What the preload made ready, once it has finished (at once when none was started)."""
    if _thread is not None:
        _thread.join()
    return _ready


def model(key: str) -> LoadedModel | None:
    """The preloaded model `key`, waiting for the preload when one is under way; None when it was not preloaded."""
    return wait().models.get(key)


def overview(key: str, text: str, max_tokens: int) -> AttentionOverview | None:
    """The preloaded run of `text` in model `key` at `max_tokens`; None when that one was not preloaded."""
    return wait().overviews.get((key, text, max_tokens))
