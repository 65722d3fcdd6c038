#!/usr/bin/env bash
# Set up if needed, build in release mode and run txsim (default: the built-in workload).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec swift run -c release txsim "$@"
