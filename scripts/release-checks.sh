#!/usr/bin/env bash
# The checks that only an optimized build can make (a -Onone build allocates on
# the hot path, so there they are skipped): builds the tests in release mode
# and runs them. Fails unless every one of them ran and passed.
#
# The tests use @testable imports, so the modules are built with
# -enable-testing, in a scratch path of their own: the release build that
# txsim and the reliability campaign use stays as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
checks=(mapAndUnmapDoNotAllocate)
flags=(-c release --scratch-path .build-release-tests -Xswiftc -enable-testing)
swift build --build-tests "${flags[@]}"
log=$(mktemp)
status=0
# jemalloc's thread.allocated counter sees plain malloc only when jemalloc is the
# process allocator, which a client of DMAPools (the test binary) is not unless
# it opts in: preload it.
# awk reads to the end (no early exit): an early exit could kill ldconfig with
# SIGPIPE mid-write, which pipefail turns into this script's failure (exit 141).
jemalloc=$(ldconfig -p | awk '/libjemalloc\.so\.2 / && !found {print $NF; found = 1}')
[ -n "$jemalloc" ] || { echo "release-checks: libjemalloc.so.2 not found (scripts/setup.sh installs libjemalloc-dev)" >&2; exit 1; }
LD_PRELOAD="$jemalloc" swift test --skip-build "${flags[@]}" --filter "$(IFS='|'; echo "${checks[*]}")" 2>&1 | tee "$log" || status=$?
missing=0
for check in "${checks[@]}"; do
    grep -a -q "Test ${check}.* passed" "$log" || { echo "release-checks: ${check} did not run and pass" >&2; missing=1; }
done
rm -f "$log"
[ "$status" -eq 0 ] && [ "$missing" -eq 0 ]
echo "release-checks: ${#checks[@]} optimized-build checks passed"
