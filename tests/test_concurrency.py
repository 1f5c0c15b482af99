"""Eight sessions at once against one real server: different models, pages and settings. Each session must see
exactly its own result (equal to a fresh computation alone), the shared models must not change, and the server
must keep answering while they run. Sessions talk the app's own websocket protocol, as a browser tab does."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import pytest
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

from explorer.run import overview_attention
from tests.browser import streamlit_server
from tests.specs import array

pytestmark = pytest.mark.slow

PAGE_HASHES: dict[str, str] = {}  # page url path -> script hash, read from the server's navigation message


@dataclass
class SessionResult:
    """What one session saw: its figures by title, its texts, and how its script ended."""

    figures: dict[str, dict] = field(default_factory=dict)  # plotly specs by title
    texts: list[str] = field(default_factory=list)  # markdown, headings, alerts
    exceptions: list[str] = field(default_factory=list)  # exception elements the app showed
    finished: bool = False  # a script_finished message arrived
    seconds: float = 0.0  # from the request to the end of the script
    ended_at: float = 0.0  # perf_counter() when the script ended


def open_page(base_url: str, query: dict[str, str], page: str = "", timeout: float = 150) -> SessionResult:
    """One browser-like session: connect, ask for `page` with `query` in the URL, read until the script ends."""
    result = SessionResult()
    started = time.perf_counter()
    with connect(base_url.replace("http", "ws") + "/_stcore/stream", subprotocols=["streamlit"], max_size=None,
                 open_timeout=30) as websocket:
        request = BackMsg()
        request.rerun_script.query_string = urllib.parse.urlencode(query)
        request.rerun_script.page_script_hash = PAGE_HASHES.get(page, "")
        request.rerun_script.page_name = page
        websocket.send(request.SerializeToString())
        while not result.finished:
            message = ForwardMsg()
            message.ParseFromString(websocket.recv(timeout=timeout))
            kind = message.WhichOneof("type")
            if kind == "navigation":
                for app_page in message.navigation.app_pages:
                    PAGE_HASHES[app_page.url_pathname] = app_page.page_script_hash
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                _read_element(message.delta.new_element, result)
            elif kind == "script_finished":
                result.finished = True
    result.ended_at = time.perf_counter()
    result.seconds = result.ended_at - started
    return result


def _read_element(element, result: SessionResult) -> None:
    kind = element.WhichOneof("type")
    if kind == "plotly_chart":
        spec = json.loads(element.plotly_chart.spec)
        result.figures[spec["layout"].get("title", {}).get("text", f"untitled {len(result.figures)}")] = spec
    elif kind == "exception":
        result.exceptions.append(f"{element.exception.type}: {element.exception.message}")
    elif kind == "markdown":
        result.texts.append(element.markdown.body)
    elif kind == "heading":
        result.texts.append(element.heading.body)
    elif kind == "alert":
        result.texts.append(element.alert.body)


class HealthProbe(threading.Thread):
    """Asks the server's health endpoint every 0.25 s; keeps when each "ok" came back, and the slowest answer
    (printed as a figure, not asserted: times on a shared machine are not behaviour)."""

    def __init__(self, base_url: str):
        super().__init__(daemon=True)
        self.base_url, self.slowest, self.failures = base_url, 0.0, 0
        self.answered_at: list[float] = []  # perf_counter() when each "ok" arrived
        self.stopped = threading.Event()

    @property
    def answers(self) -> int:
        return len(self.answered_at)

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.perf_counter()
            try:
                ok = urllib.request.urlopen(f"{self.base_url}/_stcore/health", timeout=30).read() == b"ok"
                if ok:
                    self.answered_at.append(time.perf_counter())
                self.failures += not ok
            except OSError:
                self.failures += 1
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.stopped.wait(0.25)

    def answers_between(self, start: float, end: float) -> int:
        """How many "ok" answers arrived between two moments (perf_counter)."""
        return sum(start < moment < end for moment in self.answered_at)


# Eight sessions: two models on the attention page at different layers and heads, both models side by side,
# and the KV-cache page for different models, cache dtypes and batches. Every text is different.
ATTENTION_SESSIONS = [
    ("smollm2", "A zebra crossed the quiet road at dawn", 3, 1),
    ("minilm", "The violin played softly in the empty hall", 2, 5),
    ("smollm2", "Seven ships sailed north through the ice", 29, 8),
    ("minilm", "Her laptop battery died during the meeting", 5, 0),
    ("smollm2", "Rain fell on the old stone bridge", 10, 4),
]
OTHER_SESSIONS = [
    ("self_vs_causal", {"text": "The cat sat on the mat because it was warm"}),
    ("kv_cache", {"config": "llama-2-7b", "dtype": "fp8", "tokens": "4096"}),
    ("kv_cache", {"config": "deepseek-v2", "batch": "8", "tokens": "65536"}),
]


@pytest.fixture(scope="module")
def eight_sessions():
    """Warm one server, then run eight sessions at once while a probe keeps asking the server's health."""
    with streamlit_server({"HF_HUB_OFFLINE": "1"}) as base_url:
        # Warm the server once (torch import, both models) so the sessions below measure sharing, not start-up.
        for query in [{"text": "warm up", "model": "minilm"}, {"text": "warm up"}]:
            warm = open_page(base_url, query)
            assert warm.finished and not warm.exceptions
        jobs = [
            ("", {"text": text, "model": model, "layer": str(layer), "head": str(head)})
            for model, text, layer, head in ATTENTION_SESSIONS
        ] + OTHER_SESSIONS
        results: list[SessionResult | BaseException | None] = [None] * len(jobs)

        def session(index: int) -> None:
            page, query = jobs[index]
            try:
                results[index] = open_page(base_url, query, page)
            except BaseException as error:  # reported by the tests, with the session that failed
                results[index] = error

        probe = HealthProbe(base_url)
        probe.start()
        threads = [threading.Thread(target=session, args=(i,)) for i in range(len(jobs))]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        seconds = time.perf_counter() - started
        probe.stopped.set()
        probe.join()
    print(f"\n{len(jobs)} concurrent sessions in {seconds:.1f} s; slowest health answer {probe.slowest * 1000:.0f} ms")
    return jobs, results, probe, started


def test_eight_sessions_finish_and_the_server_stays_responsive(eight_sessions):
    jobs, results, probe, started = eight_sessions
    assert len(jobs) == 8
    for (page, query), result in zip(jobs, results):
        assert isinstance(result, SessionResult), f"session {page or 'attention'} {query}: {result!r}"
        assert result.finished and not result.exceptions, (query, result.exceptions)
    # Responsive: every health request was answered, and answers came while sessions were still running, not
    # only once they were all done.
    last_end = max(result.ended_at for result in results)
    assert probe.failures == 0, probe.failures
    assert probe.answers_between(started, last_end) >= 2, "the server did not answer while the sessions ran"
    llama, deepseek = results[6:]
    assert any("llama-2-7b: weights + KV cache" in text for text in llama.texts)
    assert any("deepseek-v2: weights + KV cache" in text for text in deepseek.texts)


def test_each_session_sees_exactly_its_own_attention(eight_sessions, smollm2, minilm):
    """Each attention session drew its own text, layer and head, equal to a fresh computation alone: nothing
    leaked between sessions and the shared models were not changed by any of them."""
    models = {"smollm2": smollm2, "minilm": minilm}
    _, results, _, _ = eight_sessions
    assert "Where 'it' looks, layer 5" in results[5].figures, results[5].texts  # both models in one session
    for (model, text, layer, head), result in zip(ATTENTION_SESSIONS, results):
        expected = overview_attention(models[model], text, 512)
        title = f"Layer {layer}, head {head}"
        assert title in result.figures, (text, result.texts)
        heatmap = result.figures[title]
        assert heatmap["layout"]["xaxis"]["ticktext"] == expected.tokens
        weights = expected.kept[layer, head].astype(np.float32)  # (T, T)
        np.testing.assert_allclose(array(heatmap["data"][0]["z"]), weights, atol=1e-3)


def test_two_overview_passes_at_once_on_one_model_do_not_mix(minilm):
    """Both passes are held at the first layer until both are inside the shared model, so every later layer runs
    while the other pass's hooks are registered too: each pass must still keep only its own weights. The test
    fails if the passes never overlap (a barrier that broke instead of releasing both): it would prove nothing."""
    texts = ["a short one", "a somewhat longer sentence than the other one"]
    alone = [overview_attention(minilm, text) for text in texts]
    both_inside = threading.Barrier(2, timeout=60)  # a deadlock guard only: both passes arrive within moments
    met = []  # one entry per pass that was released together with the other

    def hold(_module, _inputs):
        both_inside.wait()  # raises BrokenBarrierError in the pass if the other never arrived
        met.append(True)

    first_layer = minilm.model.encoder.layer[0]
    hook = first_layer.register_forward_pre_hook(hold)
    outcomes: list[object] = [None, None]

    def run(index: int) -> None:
        try:
            outcomes[index] = overview_attention(minilm, texts[index])
        except Exception as error:  # noqa: BLE001  (a leak shows as a shape error in the other pass's hook)
            outcomes[index] = error

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        hook.remove()
    assert len(met) == 2 and not both_inside.broken, "the two passes never were inside the model together"
    for outcome, expected in zip(outcomes, alone):
        assert not isinstance(outcome, Exception), repr(outcome)
        np.testing.assert_allclose(outcome.pooled, expected.pooled, atol=1e-6)
