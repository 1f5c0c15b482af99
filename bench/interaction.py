"""Server time of an interaction (change layer, change head) against a bare eager forward pass.

Run: `.venv/bin/python -m bench.interaction [--json bench/results/interaction-cpu.json]`.
Both figures come from the same process and the same 16-token sentence with the model cache on disk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bench.common import report

SENTENCE = "The old lighthouse keeper watched the storm roll across the bay while his old dog slept"
REPEATS = 15


def median_seconds(action, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    from explorer.loading import load_model

    loaded = load_model("smollm2")
    input_ids = loaded.tokenizer(SENTENCE, return_tensors="pt")["input_ids"].to(loaded.device)
    with torch.inference_mode():
        loaded.model(input_ids=input_ids)  # warm-up
        forward = median_seconds(lambda: loaded.model(input_ids=input_ids))

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    app.query_params["text"] = SENTENCE
    app.run()
    layers = iter(range(1, 10_000))
    heads = iter(range(1, 10_000))
    layer_slider = lambda: next(s for s in app.slider if s.label == "Layer")  # noqa: E731
    head_buttons = lambda: next(b for b in app.get("button_group") if b.label == "Head")  # noqa: E731
    change_layer = median_seconds(lambda: layer_slider().set_value(next(layers) % 30).run())
    change_head = median_seconds(lambda: head_buttons().set_value(next(heads) % 9).run())
    assert not app.exception, app.exception

    report(
        {
            "tokens": int(input_ids.shape[1]),
            "bare_eager_forward_s": round(forward, 4),
            "change_layer_server_s": round(change_layer, 4),
            "change_head_server_s": round(change_head, 4),
            "change_layer_over_forward": round(change_layer / forward, 2),
            "change_head_over_forward": round(change_head / forward, 2),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
