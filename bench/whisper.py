"""Whisper tiny.en on this machine: seconds to convert the packaged model.bin, load it, speak, transcribe (with
every attention tensor and the word timings) and draw the page's charts, with the transcripts and word error
rates of a few espeak-ng sentences.

Run: `.venv/bin/python -m bench.whisper [--json bench/results/whisper-cpu.json]`.
The conversion runs into an empty temporary cache, so it is always measured; the system's load average is
recorded beside the figures (timings on a busy machine are upper bounds).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import report

SENTENCES = [
    "My name is John and I live in London.",
    "We will meet at the station tomorrow morning.",
    "Open the door and turn on the light.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    from explorer.audio import speak
    from explorer.catalogue import CATALOGUE, WHISPER_MODEL
    from explorer.charts.hearing import attention_over_audio, frames_heatmap, heads_over_audio
    from explorer.hearing import hear, word_error_rate
    from explorer.loading import load_model, prepare_weights

    with tempfile.TemporaryDirectory() as cache:
        os.environ["ATTENTION_EXPLORER_CACHE"] = cache
        started = time.perf_counter()
        prepare_weights(CATALOGUE[WHISPER_MODEL])
        convert = time.perf_counter() - started
        started = time.perf_counter()
        loaded = load_model(WHISPER_MODEL, device="cpu")
        load = time.perf_counter() - started
    rows = []
    for sentence in SENTENCES:
        started = time.perf_counter()
        clip = speak(sentence)
        spoken = time.perf_counter() - started
        started = time.perf_counter()
        run = hear(loaded, clip)
        heard = time.perf_counter() - started
        started = time.perf_counter()
        figures = [
            attention_over_audio(run.cross[3, 0], run.sequence, clip.samples, "cross", words=run.words),
            attention_over_audio(run.alignment, [*run.tokens, "end"], clip.samples, "path", path=run.path),
            heads_over_audio(run.cross[[l for l, _ in run.alignment_heads], [h for _, h in run.alignment_heads], 1:-1],
                             run.alignment_heads, [*run.tokens, "end"], "heads"),
            frames_heatmap(run.encoder[0, 0].astype("float32"), "encoder"),
        ]
        for figure in figures:
            figure.to_json()  # what the page sends to the browser
        drawn = time.perf_counter() - started
        rows.append({
            "sentence": sentence, "transcript": run.transcript, "word_error_rate": word_error_rate(sentence, run.transcript),
            "audio_seconds": round(clip.seconds, 2), "speak_seconds": round(spoken, 3), "hear_seconds": round(heard, 3),
            "hear_parts_seconds": {k: round(v, 3) for k, v in run.seconds.items()}, "draw_seconds": round(drawn, 3),
        })
    report({"convert_seconds": round(convert, 3), "load_seconds": round(load, 3), "sentences": rows,
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}, args.json)


if __name__ == "__main__":
    main()
