#!/usr/bin/env bash
# One measurement record: everything Design/ quotes, from one invocation.
#
#   bash scripts/measure.sh [OUT.json]     (default: Design/records/<UTC date>.json)
#
# Writes one JSON object: the git revision (and whether the tree was clean),
# the date, the machine (CPU model, cores, kernel), the load average before and
# after, the build configuration, every `txsim microbench` key, and the default
# and pressure comparisons (`txsim compare --json`, the pressure workload being
# `--flows 32 --rtt-us 2000`, the one pressure command used everywhere).
# `python3 scripts/measure_tables.py RECORD` prints the Design/ tables from it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-Design/records/$(date -u +%Y-%m-%d).json}
. scripts/record-setup.sh
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "measure: microbench" >&2
microbench=$("$txsim" microbench --json --iterations "${MEASURE_ITERATIONS:-400000}")
echo "measure: default comparison" >&2
default=$("$txsim" compare --json)
echo "measure: pressure comparison (--flows 32 --rtt-us 2000)" >&2
pressure=$("$txsim" compare --flows 32 --rtt-us 2000 --json)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$out" <<PY
import json, sys, platform, os, datetime
cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
record = {
    "git_revision": "$revision",
    "git_tree_clean": $([ "$clean" = true ] && echo True || echo False),
    "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "arch": platform.machine()},
    "load_average_before": "$load_before",
    "load_average_after": "$load_after",
    "build_configuration": "release",
    "commands": {
        "microbench": "txsim microbench --json --iterations ${MEASURE_ITERATIONS:-400000}",
        "default": "txsim compare --json",
        "pressure": "txsim compare --flows 32 --rtt-us 2000 --json",
    },
    "microbench": json.loads('''$microbench'''),
    "default": json.loads('''$default'''),
    "pressure": json.loads('''$pressure'''),
}
with open(sys.argv[1], "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
print("measure: wrote " + sys.argv[1], file=sys.stderr)
PY
