#!/usr/bin/env bash
# How well the paired ratios repeat: N default `txsim compare --json` runs in
# a row, one record.
#
#   bash scripts/stability.sh [OUT.json]   (default: Design/records/<UTC date>-stability.json)
#
# STABILITY_RUNS (default 5) sets N. STABILITY_HOG_RUNS (default none), a
# comma-separated list of run numbers, starts a busy loop on one CPU halfway
# through each of those runs and stops it when the run ends: the machine
# changes speed during the run (the busy loop takes a share of the vCPUs, as
# another tenant does). STABILITY_HOG_THREADS (default 1) sets how many busy
# loops start: 1 takes a share of one vCPU (the run loses parallelism), 2 one
# per vCPU (every thread of the run slows alike, closer to a machine whose
# speed changes). STABILITY_ARGS (default none) adds options to every
# invocation, for instance "--rounds 40". `python3 scripts/measure_tables.py
# OUT.json` prints the table, with each design's largest median ratio over its
# smallest, overall and at each CPU distance.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-Design/records/$(date -u +%Y-%m-%d)-stability.json}
runs=${STABILITY_RUNS:-5}
hogs=",${STABILITY_HOG_RUNS:-},"
hog_threads=${STABILITY_HOG_THREADS:-1}
read -r -a extra <<< "${STABILITY_ARGS:-}"
case "$hog_threads" in 1|2|3|4) ;; *) echo "stability: invalid STABILITY_HOG_THREADS: $hog_threads (1...4)" >&2; exit 64 ;; esac
. scripts/record-setup.sh
for i in $(seq 1 "$runs"); do
    hog=false
    case "$hogs" in *",$i,"*) hog=true ;; esac
    echo "stability: run $i/$runs$($hog && echo ' (busy loop from halfway)')" >&2
    cut -d' ' -f1-3 /proc/loadavg > "$tmp/load-$i"
    if $hog; then
        "$txsim" compare --json --quiet "${extra[@]}" > "$tmp/run-$i.json" &
        run=$!
        # The default run takes about 35 s (40 rounds x 9 runs x 0.05 s, plus
        # guests and probes).
        sleep 17
        busy=""
        for _ in $(seq 1 "$hog_threads"); do
            sh -c 'while :; do :; done' &
            busy="$busy $!"
        done
        wait "$run"
        kill $busy
    else
        "$txsim" compare --json --quiet "${extra[@]}" > "$tmp/run-$i.json"
    fi
    echo "$hog" > "$tmp/hog-$i"
done
python3 - "$out" "$tmp" "$runs" <<PY
import json, sys, datetime
out, tmp, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
record = {
    "command": "txsim compare --json --quiet%s (default workload), %d invocations in a row (scripts/stability.sh)" % ((" " + "${STABILITY_ARGS:-}") if "${STABILITY_ARGS:-}" else "", n),
    "busy_loop_threads": $hog_threads,
    "revision": "$revision",
    "git_tree_clean": $([ "$clean" = true ] && echo True || echo False),
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
    "runs": [json.load(open("%s/run-%d.json" % (tmp, i))) for i in range(1, n + 1)],
    "load_average_before_run": [open("%s/load-%d" % (tmp, i)).read().strip() for i in range(1, n + 1)],
    "busy_loop_from_halfway": [open("%s/hog-%d" % (tmp, i)).read().strip() == "true" for i in range(1, n + 1)],
}
with open(out, "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
print("stability: wrote " + out, file=sys.stderr)
PY
