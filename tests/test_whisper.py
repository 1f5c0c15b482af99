"""Whisper tiny.en, offline: the CTranslate2 reader and mapping, espeak-ng speech, transcripts, word timings
from cross-attention, bad audio, and the `cross` command."""

import io
import json
import wave

import numpy as np
import pytest
import torch

from explorer import audio as audio_module
from explorer.audio import SAMPLE_RATE, AudioError, read_wav, resample, speak
from explorer.catalogue import CATALOGUE, WHISPER_MODEL
from explorer.hearing import hear, monotonic_path, word_error_rate
from explorer.loading import converted_path, load_model, prepare_weights
from explorer.whisper import NOT_WEIGHTS, WhisperFormatError, read_model_bin, to_transformers, whisper_config

# three sentences espeak-ng (en-gb, 130 wpm) speaks clearly enough for tiny.en to write them word for word
SENTENCES = [
    "My name is John and I live in London.",
    "We will meet at the station tomorrow morning.",
    "Open the door and turn on the light.",
]


@pytest.fixture(scope="module")
def conversion(tmp_path_factory):
    """The packaged model converted into a fresh cache (so the conversion itself runs), with its progress."""
    cache = tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("ATTENTION_EXPLORER_CACHE", str(cache))
    steps = []
    entry = CATALOGUE[WHISPER_MODEL]
    folder = prepare_weights(entry, progress=lambda fraction, message: steps.append((fraction, message)))
    assert folder == converted_path(entry) and str(folder).startswith(str(cache))
    loaded = load_model(WHISPER_MODEL, device="cpu")
    patch.undo()
    return loaded, steps


@pytest.fixture(scope="module")
def whisper(conversion):
    return conversion[0]


@pytest.fixture(scope="module")
def heard(whisper):
    return [hear(whisper, speak(sentence)) for sentence in SENTENCES]


@pytest.fixture(scope="module")
def package():
    return read_model_bin(CATALOGUE[WHISPER_MODEL].package_path() / "model.bin")


def test_the_reader_sees_every_entry_of_model_bin(package):
    arrays, aliases, spec = package
    assert spec == "WhisperSpec" and len(arrays) == 148
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    scalars = [name for name, value in arrays.items() if value.ndim == 0]
    assert len(scalars) == 9 and all(name.rsplit("/", 1)[-1] in NOT_WEIGHTS for name in scalars)
    assert arrays["decoder/embeddings/weight"].shape == (51864, 384)
    assert arrays["decoder/embeddings/weight"].dtype == np.float16


def test_converted_tensors_equal_the_package_values_for_every_key(whisper, conversion, package):
    arrays, aliases, _ = package
    loaded = whisper.model.state_dict()
    expected = to_transformers(arrays, aliases, whisper.config)
    assert set(loaded) == set(expected)  # every key of the model, no more, no fewer
    for key, value in expected.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], value.float()), key  # fp16 -> fp32 is exact
    # independently of the mapping: spot checks against the file's names and packing
    fused = arrays["encoder/layer_2/self_attention/linear_0/weight"]  # (3d, d): q | k | v
    assert torch.equal(loaded["model.encoder.layers.2.self_attn.k_proj.weight"], torch.from_numpy(fused[384:768].astype(np.float32)))
    cross_kv = arrays["decoder/layer_3/attention/linear_1/bias"]  # (2d,): k | v of the encoder
    assert torch.equal(loaded["model.decoder.layers.3.encoder_attn.v_proj.bias"], torch.from_numpy(cross_kv[384:].astype(np.float32)))
    assert np.all(cross_kv[:384] == 0)  # the key bias slice is zero (Whisper's keys have no bias)
    assert loaded["proj_out.weight"].data_ptr() == loaded["model.decoder.embed_tokens.weight"].data_ptr()  # the alias
    # every value of the file lands in the model, except the zero key-bias slices (12 attention blocks x 384)
    weights = sum(value.size for value in arrays.values() if value.ndim > 0)
    unique = {tensor.data_ptr(): tensor.numel() for tensor in whisper.model.state_dict().values()}
    assert sum(unique.values()) == weights - 12 * 384
    assert [fraction for fraction, _ in conversion[1]] == sorted(fraction for fraction, _ in conversion[1])
    assert any("First run" in message for _, message in conversion[1])


def test_the_mapping_refuses_a_file_with_a_stray_or_missing_array(package):
    arrays, aliases, _ = package
    config = whisper_config(arrays, [[3, 0]])
    with pytest.raises(WhisperFormatError, match="does not use"):
        to_transformers({**arrays, "decoder/extra/weight": np.zeros((2, 2), np.float16)}, aliases, config)
    with pytest.raises(KeyError):
        to_transformers({k: v for k, v in arrays.items() if k != "encoder/conv2/bias"}, aliases, config)


def test_a_truncated_or_foreign_model_bin_is_refused(tmp_path, package):
    path = CATALOGUE[WHISPER_MODEL].package_path() / "model.bin"
    truncated = tmp_path / "model.bin"
    truncated.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(WhisperFormatError, match="ends early"):
        read_model_bin(truncated)
    truncated.write_bytes(b"\x05\x00\x00\x00" + path.read_bytes()[4:200])
    with pytest.raises(WhisperFormatError, match="version 5"):
        read_model_bin(truncated)


def test_three_spoken_sentences_are_transcribed_word_for_word(heard):
    for sentence, run in zip(SENTENCES, heard):
        error = word_error_rate(sentence, run.transcript)
        print(f"{sentence!r} -> {run.transcript!r}: word error rate {error:.1%}")  # shown with pytest -s
        assert error == 0.0, (sentence, run.transcript)


def test_word_times_rise_and_fall_inside_the_audio(heard):
    for run in heard:
        starts, ends = run.token_times[:, 0], run.token_times[:, 1]
        assert np.all(np.diff(starts) >= 0) and np.all(ends >= starts) and np.all(np.diff(ends) >= 0)
        assert starts.min() >= 0 and ends.max() <= run.audio.seconds + 1e-9
        word_starts = [word.start for word in run.words]
        assert word_starts == sorted(word_starts) and len(set(word_starts)) == len(word_starts)  # each word later
        assert run.words[-1].end > 0.6 * run.audio.seconds  # the last word is heard near the end, not squeezed early
        assert [word.text.strip(".,").lower() for word in run.words] == run.transcript.lower().replace(".", "").replace(",", "").split()
        rows, frames = run.alignment.shape
        assert run.path[0].tolist() == [0, 0] and run.path[-1].tolist() == [rows - 1, frames - 1]
        assert np.all(np.diff(run.path, axis=0) >= 0)  # the path never steps back


def test_cross_attention_rows_sum_to_one_over_the_real_frames(heard, whisper):
    for run in heard:
        S = len(run.sequence)
        assert run.cross.shape == (4, 6, S, run.frames) and run.frames == len(run.audio.samples) // 320  # 20 ms each
        np.testing.assert_allclose(run.cross.sum(-1), 1.0, atol=1e-5)
        assert np.all(run.cross_real_share < 1.0)  # before cutting, some attention went to the padding
        heads = np.array([run.cross_real_share[layer, head] for layer, head in run.alignment_heads])  # (K, S)
        assert heads.mean() > 0.4  # the alignment heads look mostly at the sound, not at the silence after it
        assert run.decoder.shape == (4, 6, S, S) and np.all(np.triu(run.decoder, k=1) == 0)  # causal
        assert run.encoder.shape == (4, 6, run.frames, run.frames)
        later = np.triu(run.encoder.astype(np.float32), k=1).sum(-1)  # (L, H, F): weight on later frames
        assert later.mean() > 0.1  # no mask: frames look ahead in time too
    assert run.alignment_heads == [tuple(pair) for pair in whisper.config.alignment_heads]


def test_monotonic_path_follows_a_diagonal():
    cost = np.ones((3, 6))
    cost[0, :2] = cost[1, 2:4] = cost[2, 4:] = 0
    assert monotonic_path(cost).tolist() == [[0, 0], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5]]


def wav(samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        scaled = np.repeat(samples, channels) * (2 ** (8 * width - 1) - 1)
        out.writeframes(scaled.astype({2: "<i2", 4: "<i4"}[width]).tobytes())
    return buffer.getvalue()


def test_wav_files_are_read_as_16_khz_mono():
    rate = 44_100
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)  # 1 s of A4
    clip = read_wav(wav(tone, rate, width=4, channels=2), "test")
    assert len(clip.samples) == SAMPLE_RATE and clip.samples.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / len(clip.samples) - 440) < 2  # the pitch survives resampling
    assert abs(np.max(np.abs(clip.samples[1000:-1000])) - 0.5) < 0.01
    assert len(resample(np.ones(22_050), 22_050, 16_000)) == 16_000
    assert wave.open(io.BytesIO(clip.wav_bytes())).getframerate() == SAMPLE_RATE


def test_bad_audio_gets_a_sentence(monkeypatch):
    with pytest.raises(AudioError, match="silent"):
        read_wav(wav(np.zeros(16_000), 16_000), "test")
    with pytest.raises(AudioError, match="cannot be read as a WAV"):
        read_wav(b"RIFF\x00\x00\x00\x00WAVEjunk", "test")
    with pytest.raises(AudioError, match="up to 0.1 MB"):
        read_wav(wav(np.full(16_000 * 4, 0.1), 16_000), "test", max_bytes=100_000)
    long = read_wav(wav(0.1 * np.sin(np.arange(16_000 * 35) / 5), 16_000), "test")
    assert long.seconds == 30.0 and "first 30 s are used" in long.notices[0]
    short = read_wav(wav(0.1 * np.sin(np.arange(16_000 * 20) / 5), 16_000), "test", max_seconds=10)
    assert short.seconds == 10.0 and "first 10 s" in short.notices[0]
    with pytest.raises(AudioError, match="no text to speak"):
        speak("  ")
    wordy = speak("Talk " * 400, speed=300)  # 2,000 characters: cut before speaking, and the clip to 30 s
    assert wordy.seconds == 30.0 and "first 1,000 characters" in wordy.notices[0] and "first 30 s" in wordy.notices[1]
    monkeypatch.setattr(audio_module.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="espeak-ng is not installed.*apt-get install espeak-ng"):
        speak("Hello there.")


def test_hosted_mode_caps_uploads():
    from explorer.settings import read_settings

    hosted, local = read_settings({"ATTENTION_EXPLORER_HOSTED": "1"}), read_settings({})
    assert hosted.max_audio_bytes < local.max_audio_bytes and hosted.max_audio_seconds < local.max_audio_seconds
    assert read_settings({"ATTENTION_EXPLORER_MAX_AUDIO_SECONDS": "5"}).max_audio_seconds == 5
    assert WHISPER_MODEL in hosted.allowed_models


def test_word_error_rate_counts_edits():
    assert word_error_rate("The cat sat.", "the cat sat") == 0.0
    assert word_error_rate("the cat sat on the mat", "the cat sat on mat") == pytest.approx(1 / 6)
    assert word_error_rate("a b", "c a b d") == 1.0


def test_cross_command_prints_transcript_times_and_shapes(capsys, whisper):
    from explorer.__main__ import main

    assert main(["cross", "--text", SENTENCES[2], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["transcript"].lower() == SENTENCES[2].lower() and report["word_error_rate"] == 0.0
    assert [row["token"] for row in report["tokens"]][:3] == [" open", " the", " door"]
    assert all(row["start"] <= row["end"] <= report["audio"]["seconds"] for row in report["tokens"])
    frames = report["audio"]["frames"]
    assert abs(frames - report["audio"]["seconds"] * 50) <= 1  # 20 ms frames
    assert report["shapes"]["cross"] == [4, 6, len(report["tokens"]) + 3, frames]
    assert report["shapes"]["encoder"] == [4, 6, frames, frames]


def test_cross_command_says_what_is_wrong_with_a_file(capsys, tmp_path):
    from explorer.__main__ import main

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav at all")
    assert main(["cross", "--audio", str(broken)]) == 2
    assert "cannot be read as a WAV" in capsys.readouterr().err
    assert main(["cross", "--audio", str(tmp_path / "missing.wav")]) == 2
    assert "There is no file" in capsys.readouterr().err
