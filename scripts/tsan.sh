#!/usr/bin/env bash
# The concurrency tests under ThreadSanitizer: pools freed from many threads,
# swiotlb mapped from every area, frames and clones freed on other threads,
# faults injected into running traffic. Any report fails the run.
#
# - `-DDMAPOOLS_TSAN` makes `Lock` tell the sanitizer what it does: the
#   standard library's Mutex is a futex lock the sanitizer cannot see.
# - aBlockDeviceKeepsItsSlotsWhileZeroCopyPagesFillTheBouncePool is left to
#   the plain run: it needs the throughput to fill a 64 MiB bounce pool, which
#   a sanitized build does not have. Its sanitizer-sized variant
#   (aBlockDeviceKeepsItsSlotsAtTheCapOfASanitizerSizedPool) runs here.
# - The page_pool suites whose pools are used from several threads (ring
#   sizes under concurrent remote puts, scrub under in-flight pages, NUMA
#   node changes while pages come back) run here too, and so do the
#   micro-benchmark loops (one has a second thread putting pages back) and
#   the PREEMPT_RT pool, design and race tests, and the shared TX + block +
#   slab run (three users of one pre-decrypted allocator on their own
#   threads) and the linear-head tests (heads freed by whichever thread drops
#   the frame).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
flags=(--sanitize=thread --scratch-path .build-tsan -Xswiftc -DDMAPOOLS_TSAN)
swift build --build-tests "${flags[@]}"
log=$(mktemp)
status=0
TSAN_OPTIONS="${TSAN_OPTIONS:-} exitcode=66" \
    swift test --skip-build "${flags[@]}" \
    --filter 'Stress|Concurrency|concurrent|OtherThreads|DesignFaultTests|framesFreedOnOtherThreads|releasesFromOtherThreads|localCachesPerTask|PagePoolRingSizeProperty|PagePoolScrubTests|PagePoolNUMATests|MicrobenchLoopTests|PreemptRTDesignTests|PreemptRTRaceTests|PagePoolPreemptRTTests|DecryptedSlabCacheTests|SharedSimulationTests|LinearHeadTests' \
    --skip 'aBlockDeviceKeepsItsSlotsWhileZeroCopyPagesFillTheBouncePool' 2>&1 | tee "$log" || status=$?
reports=$(grep -a -c 'WARNING: ThreadSanitizer' "$log" || true)
rm -f "$log"
echo "tsan: ${reports} ThreadSanitizer reports"
[ "$status" -eq 0 ] && [ "$reports" -eq 0 ]
