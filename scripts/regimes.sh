#!/usr/bin/env bash
# Bounce's two regimes at 2 senders on 1 queue: N single runs of the default
# workload per design, the designs taking turns, each with copy 1 timed by
# where its destination was last bounced (`txsim run --copy-timing`), into
# one record, and its table printed.
#
#   bash scripts/regimes.sh [OUT.json]   (default: Design/records/<UTC date>-regimes.json)
#
# REGIMES_RUNS (default 10) sets N; REGIMES_DESIGNS (default
# bounce,decrypted-pool) the designs; REGIMES_SECONDS (default 0.2) each
# run's duration. --copy-timing reads the clock twice per 32 KiB copied, so
# these Gbps are a little below the default run's: read the split.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-Design/records/$(date -u +%Y-%m-%d)-regimes.json}
runs=${REGIMES_RUNS:-10}
designs=${REGIMES_DESIGNS:-bounce,decrypted-pool}
seconds=${REGIMES_SECONDS:-0.2}
. scripts/record-setup.sh
for i in $(seq 1 "$runs"); do
    for d in ${designs//,/ }; do
        echo "regimes: run $i/$runs $d" >&2
        "$txsim" run --design "$d" --duration "$seconds" --copy-timing --json --quiet > "$tmp/$i-$d.json"
    done
done
python3 - "$out" "$tmp" "$runs" "$designs" "$seconds" <<PY
import json, sys, datetime
out, tmp, n, designs, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), sys.argv[5]
record = {
    "command": "txsim run --design D --duration %s --copy-timing --json --quiet, %d runs per design taking turns (scripts/regimes.sh)" % (seconds, n),
    "revision": "$revision",
    "git_tree_clean": $([ "$clean" = true ] && echo True || echo False),
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
    "runs": [json.load(open("%s/%d-%s.json" % (tmp, i, d)))[0] for i in range(1, n + 1) for d in designs],
}
with open(out, "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
print("regimes: wrote " + out, file=sys.stderr)
PY
python3 scripts/measure_tables.py "$out"
