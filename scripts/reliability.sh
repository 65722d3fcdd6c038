#!/usr/bin/env bash
# The adversarial campaign: fuzzers against reference models, then faults
# injected into verified traffic on every design; ends with one summary line.
# Arguments go to `txsim reliability` (e.g. --fuzz-seconds 600 for a soak).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product txsim
exec .build/release/txsim reliability "$@"
