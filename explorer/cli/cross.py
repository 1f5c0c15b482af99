"""`cross`: Whisper hears a sentence (or a WAV) and its cross-attention finds each word."""

from __future__ import annotations


def add(commands) -> None:
    cross = commands.add_parser("cross", help="cross-attention: Whisper hears a sentence (or a WAV) and finds each word")
    cross.add_argument("--text", default="The quick brown fox jumps over the lazy dog near the river bank.",
                       help="the sentence espeak-ng speaks (or, for a text encoder-decoder, the encoder's input)")
    cross.add_argument("--audio", help="a WAV file to hear instead of the spoken text")
    cross.add_argument("--model", default="whisper-tiny-en", help="whisper-tiny-en, tiny-t5-untrained or a hub id")
    cross.add_argument("--voice", default="en-gb", help="espeak-ng voice")
    cross.add_argument("--speed", type=int, default=130, help="espeak-ng speed, words per minute")
    cross.add_argument("--json", action="store_true")
    cross.set_defaults(handler=run_cross)


def run_cross(args) -> int:
    """Whisper's transcript, token times from cross-attention and attention shapes (or a text model's shapes)."""
    import json
    import sys
    import time
    from pathlib import Path

    from explorer.audio import AudioError, read_wav, speak
    from explorer.loading import ModelLoadError, load_model

    def hear_what() -> object:
        if args.audio:
            path = Path(args.audio)
            if not path.is_file():
                raise AudioError(f"There is no file '{args.audio}'; give the path of a WAV file.")
            return read_wav(path.read_bytes(), f"file {path.name}")
        return speak(args.text, args.voice, args.speed)

    try:
        audio = hear_what() if "whisper" in args.model.lower() else None  # bad audio is told before a load
        if args.model == "tiny-t5-untrained":
            from explorer.untrained import tiny_encoder_decoder

            loaded = tiny_encoder_decoder()
        else:
            loaded = load_model(args.model)
        if loaded.config.model_type != "whisper":
            from explorer.run import run_cross_attention

            run = run_cross_attention(loaded, args.text)
            report = {"model": args.model, "source_tokens": run.source_tokens, "target_tokens": run.target_tokens,
                      "shapes": {name: list(getattr(run, name).shape) for name in ("encoder", "decoder", "cross")}}
            print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
            return 0
        audio = audio or hear_what()
    except (AudioError, ModelLoadError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    from explorer.hearing import hear, word_error_rate

    started = time.perf_counter()
    run = hear(loaded, audio)
    report = {
        "model": args.model,
        "audio": {"source": audio.source, "seconds": round(audio.seconds, 3), "frames": run.frames, "notices": list(audio.notices)},
        "transcript": run.transcript,
        "tokens": [{"token": token, "start": round(float(start), 3), "end": round(float(end), 3)}
                   for token, (start, end) in zip(run.tokens, run.token_times)],
        "words": [{"word": word.text, "start": round(word.start, 3), "end": round(word.end, 3)} for word in run.words],
        "alignment_heads": [list(pair) for pair in run.alignment_heads],
        "shapes": run.shapes(),
        "seconds": {**{name: round(value, 3) for name, value in run.seconds.items()},
                    "total": round(time.perf_counter() - started, 3)},
    }
    if not args.audio:
        report["word_error_rate"] = round(word_error_rate(args.text, run.transcript), 4)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{audio.source}, {audio.seconds:.2f} s: {run.transcript}")
    for note in audio.notices:
        print(f"  note: {note}")
    for row in report["tokens"]:
        print(f"  {row['token']!r:<16} {row['start']:6.2f} - {row['end']:6.2f} s")
    for name, shape in report["shapes"].items():
        print(f"  {name}: {shape}")
    if "word_error_rate" in report:
        print(f"  word error rate against the typed text: {report['word_error_rate']:.1%}")
    return 0
