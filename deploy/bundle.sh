#!/usr/bin/env bash
# Build a folder ready to push to a Hugging Face Space (Streamlit SDK) or to connect to Streamlit Community
# Cloud: the committed app, the host's requirements.txt, and the Space's README with its front matter.
# Usage: deploy/bundle.sh OUT_DIR   (OUT_DIR must not exist yet)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?"Give the folder to write, e.g. deploy/bundle.sh /tmp/attention-explorer-space"}
if [ -e "$out" ]; then
  echo "$out exists already; give a new folder." >&2
  exit 1
fi
mkdir -p "$out"
# Only what the app runs: the committed files of these folders (no tests, benchmarks or screenshots).
git archive --format=tar HEAD app.py explorer views assets .streamlit | tar -x -C "$out"
# The host's requirements: its extras (CPU torch index, psutil, gensim), then the app's own pins unchanged.
cat deploy/requirements-host.txt requirements.txt > "$out/requirements.txt"
cp deploy/huggingface-space/README.md "$out/README.md"
grep -v '^#' deploy/packages.txt > "$out/packages.txt"  # Debian packages the Space installs (espeak-ng)
echo "Bundle written to $out. Push it to a Space, or to a repository that Streamlit Community Cloud runs."
