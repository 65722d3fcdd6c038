#!/usr/bin/env bash
# What sharing one queue costs bounce, by flows and round trip: for each of
# N repetitions, bounce at 2 senders on 1 queue and on 2 queues (taking
# turns, so a change of the machine's speed falls on both) at 2 and 4 flows,
# with immediate ACKs and with 50 us; the queue role's CPU per GB of each
# pair's 1-queue run less its 2-queue run, and each run's frames per queue
# batch, into one record, and its table printed. Design/projection.md, "Two
# senders at the calibration's working set", reads it.
#
#   bash scripts/shared-queue-flows.sh [OUT.json]
#       (default: Design/records/<UTC date>-shared-queue-flows.json)
#
# SHARED_QUEUE_RUNS (default 6) sets N; SHARED_QUEUE_SECONDS (default 0.3)
# each run's duration.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-Design/records/$(date -u +%Y-%m-%d)-shared-queue-flows.json}
runs=${SHARED_QUEUE_RUNS:-6}
seconds=${SHARED_QUEUE_SECONDS:-0.3}
. scripts/record-setup.sh
for i in $(seq 1 "$runs"); do
    for rtt in 0 50; do
        for flows in 2 4; do
            for queues in 1 2; do
                echo "shared-queue-flows: $i/$runs rtt $rtt us, $flows flows, $queues queue(s)" >&2
                "$txsim" run --design bounce --senders 2 --queues "$queues" --flows "$flows" --rtt-us "$rtt" \
                    --duration "$seconds" --json --quiet > "$tmp/$i-$rtt-$flows-$queues.json"
            done
        done
    done
done
python3 - "$out" "$tmp" "$runs" "$seconds" "$revision" "$clean" <<'PY'
import json, sys, datetime, statistics
out, tmp, runs, seconds, revision, clean = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6] == "true"
def load(i, rtt, flows, queues):
    return json.load(open(f"{tmp}/{i}-{rtt}-{flows}-{queues}.json"))[0]
cases = []
for rtt in (0, 50):
    for flows in (2, 4):
        pairs = [(load(i, rtt, flows, 1), load(i, rtt, flows, 2)) for i in range(1, runs + 1)]
        diff = [one["queue_cpu_s_per_gb"] - two["queue_cpu_s_per_gb"] for one, two in pairs]
        cases.append({
            "rtt_us": rtt, "flows": flows,
            "queue_cpu_s_per_gb_1_queue": statistics.median(p[0]["queue_cpu_s_per_gb"] for p in pairs),
            "queue_cpu_s_per_gb_2_queues": statistics.median(p[1]["queue_cpu_s_per_gb"] for p in pairs),
            "queue_cpu_s_per_gb_shared_less_own": statistics.median(diff),
            "queue_cpu_s_per_gb_shared_less_own_min": min(diff), "queue_cpu_s_per_gb_shared_less_own_max": max(diff),
            "frames_per_queue_batch_1_queue": statistics.median(p[0]["frames_per_queue_batch"] for p in pairs),
            "gbps_1_queue": statistics.median(p[0]["gbps"] for p in pairs),
            "gbps_2_queues": statistics.median(p[1]["gbps"] for p in pairs),
        })
record = {"command": "bash scripts/shared-queue-flows.sh", "git_revision": revision, "git_tree_clean": clean,
          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
          "repetitions": runs, "seconds_per_run": seconds, "design": "bounce", "senders": 2, "cases": cases}
json.dump(record, open(out, "w"), indent=1)
print(f"bounce, 2 senders, {runs} paired repetitions of {seconds} s (median [min..max]); record: {out}")
print("| rtt us | flows | queue s/GB, 1 queue | 2 queues | 1 less 2 | frames per batch, 1 queue | Gbps 1 queue | 2 queues |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for c in cases:
    print(f"| {c['rtt_us']} | {c['flows']} | {c['queue_cpu_s_per_gb_1_queue']:.4f} | {c['queue_cpu_s_per_gb_2_queues']:.4f} | "
          f"{c['queue_cpu_s_per_gb_shared_less_own']:+.4f} [{c['queue_cpu_s_per_gb_shared_less_own_min']:+.4f}..{c['queue_cpu_s_per_gb_shared_less_own_max']:+.4f}] | "
          f"{c['frames_per_queue_batch_1_queue']:.1f} | {c['gbps_1_queue']:.0f} | {c['gbps_2_queues']:.0f} |")
PY
