#!/usr/bin/env bash
# Replays the published history (v2, v3, v4-a, v4-b) as four commits and tags in a fresh repo.
# Usage: examples/replay_history.sh DEST   (run from the repository root, venv active)
set -euo pipefail
python -m scripts replay-history "${1:?usage: $0 DEST}"
git -C "$1" log --oneline --decorate
