"""What Whisper hears, on the page: the clip (spoken, recorded or uploaded, played back), the cached run, and
the words of the transcript as buttons that play their own span of the clip."""

from __future__ import annotations

import hashlib

import streamlit as st

from explorer.audio import SPEEDS, VOICES, Audio, AudioError, read_wav, speak
from explorer.catalogue import WHISPER_MODEL
from explorer.hearing import HearingRun, hear
from explorer.settings import read_settings
from explorer.ui.models import _cached_model
from explorer.ui.url import set_view, view_state

SOURCES = {"speech": "Spoken by espeak-ng", "microphone": "Recorded", "upload": "Uploaded WAV"}


def is_whisper(key: str) -> bool:
    """True for the catalogue's Whisper (or a hub id naming a Whisper model), which hears instead of reading."""
    return key == WHISPER_MODEL or "whisper" in key.lower()


@st.cache_data(show_spinner=False, max_entries=32)
def _spoken(text: str, voice: str, speed: int, max_seconds: int) -> Audio:
    return speak(text, voice, speed, max_seconds=max_seconds)


def audio_for(text: str) -> Audio | None:
    """The clip Whisper hears: the text spoken by espeak-ng (voice and speed in the URL), a recording or an
    uploaded WAV (capped in size and length by the settings), played back; None, with the reason, when there
    is none yet or it cannot be used."""
    state, settings = view_state(), read_settings()
    source_column, voice_column, speed_column = st.columns([2, 1, 1])
    source = source_column.segmented_control("Audio", list(SOURCES), default=state.audio, format_func=SOURCES.get,
                                             key="audio_source") or state.audio
    set_view(audio=source)
    try:
        if source == "speech":
            voice = voice_column.selectbox("Voice", VOICES, index=VOICES.index(state.voice), key="voice")
            speed = speed_column.slider("Speed (words/min)", SPEEDS[0], SPEEDS[1], state.speed, step=10, key="speed")
            set_view(voice=voice, speed=speed)
            if not text.strip():  # nothing to hear yet: a prompt, as every page gives an empty text, not an error
                st.info("There is no text to speak: type a sentence in the sidebar, or record or upload a clip.")
                return None
            with st.spinner("espeak-ng is speaking the text"):
                clip = _spoken(text, voice, speed, settings.max_audio_seconds)
        else:
            limit = f"a WAV up to {settings.max_audio_bytes / 1e6:.0f} MB; the first {settings.max_audio_seconds} s are heard"
            if source == "microphone":
                recorded = st.audio_input(f"Record the sentence ({limit})", key="recording")
            else:
                recorded = st.file_uploader(f"Upload {limit}", type=["wav"], key="upload")
            if recorded is None:
                st.info("Record or upload a clip to hear it, or choose 'Spoken by espeak-ng'.")
                return None
            clip = read_wav(recorded.getvalue(), "microphone" if source == "microphone" else f"upload {recorded.name}",
                            max_bytes=settings.max_audio_bytes, max_seconds=settings.max_audio_seconds)
    except AudioError as error:
        st.error(str(error))
        return None
    for notice in clip.notices:
        st.info(notice)
    st.audio(clip.wav_bytes(), format="audio/wav")
    st.caption(f"{clip.source}: {clip.seconds:.2f} s at 16 kHz, as Whisper hears it.")
    return clip


@st.cache_resource(show_spinner=False, max_entries=8)
def _cached_hearing(key: str, digest: str, _clip: Audio) -> HearingRun:
    """One run per (model, clip), shared read-only; the clip is keyed by the digest of its samples."""
    return hear(_cached_model(key), _clip)


def get_hearing(key: str, clip: Audio) -> HearingRun | None:
    digest = hashlib.sha256(clip.samples.tobytes()).hexdigest()
    with st.spinner("Whisper is listening: encoding the audio, writing the transcript, reading its attention"):
        try:
            return _cached_hearing(key, digest, clip)
        except (ValueError, RuntimeError) as error:
            st.error(f"Whisper could not hear this clip: {error}")
            return None


def word_player(run: HearingRun) -> None:
    """The transcript's words as buttons; clicking one plays its span of the clip (times from cross-attention)."""
    row = st.container(horizontal=True, gap="small", key="words")
    for index, word in enumerate(run.words):
        if row.button(word.text, key=f"word-{index}", help=f"{word.start:.2f}-{word.end:.2f} s: play this word"):
            st.session_state["played_word"] = index
    index = st.session_state.get("played_word")
    if index is not None and index < len(run.words):
        word = run.words[index]
        st.audio(run.audio.wav_bytes(word.start, max(word.end, word.start + 0.1)), format="audio/wav", autoplay=True)
        st.caption(f"Playing '{word.text}': {word.start:.2f}-{word.end:.2f} s.")
