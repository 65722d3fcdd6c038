#!/usr/bin/env python3
"""Prints the Design/ tables from a record of scripts/measure.sh, or the
stability table from a record of scripts/stability.sh, or the regimes
table from a record of scripts/regimes.sh.

    python3 scripts/measure_tables.py Design/records/2026-12-02.json
    python3 scripts/measure_tables.py Design/records/2026-12-02-stability.json
    python3 scripts/measure_tables.py VALIDATION.json   (txsim project --validate --json)

Every figure comes from the record; the header says which record, revision,
machine and load it is from.
"""
import json
import statistics
import sys

KERNEL = {  # bench_page_pool_simple, Xeon E5-1650 v4 3.6 GHz (kernel-facts.md)
    "pool_fast_ns": "19 cycles = 5.4 ns",
    "pool_ring_ns": "54 cycles = 15.1 ns",
    "pool_ring_remote_ns": "15.1 ns (Xeon), 12.4 ns (EPYC)",
    "pool_slow_test_provider_ns": "238 cycles = 66 ns (page allocator, no DMA)",
}
GOALS = {"pool_fast_1024_ns": "<= 5", "pool_bulk32_ns_per_page": "<= 0.5", "pool_ring_remote_ns": "<= 15"}
POOL_ROWS = [
    ("fast: alloc + recycle_direct, 1 page outstanding", "pool_fast_ns"),
    ("fast, 64 pages outstanding", "pool_fast_64_ns"),
    ("fast, 1024 pages outstanding", "pool_fast_1024_ns"),
    ("fast, order 3", "pool_fast_order3_ns"),
    ("bulk: 32 pages per alloc and put, per page (pages not written)", "pool_bulk32_ns_per_page"),
    ("the same, a byte written into each page", "pool_bulk32_touched_ns_per_page"),
    ("ring: alloc + put via ring, one thread", "pool_ring_ns"),
    ("ring, a second thread putting (cross-CPU)", "pool_ring_remote_ns"),
    ("one cache line handed to the other vCPU (one way)", "cache_line_handover_ns"),
    ("2 KiB fragment alloc + put", "pool_frag_ns"),
    ("slow, test provider", "pool_slow_test_provider_ns"),
    ("slow, system pages", "pool_slow_ns"),
    ("slow, swiotlb pages", "pool_slow_swiotlb_ns"),
    ("slow, pre-decrypted pages", "pool_slow_decrypted_ns"),
    ("fast + DMA_SYNC_DEV 4 KiB, system", "pool_fast_sync_system_ns"),
    ("fast + DMA_SYNC_DEV 4 KiB, swiotlb", "pool_fast_sync_swiotlb_ns"),
    ("general allocator free, order 0", "general_free_ns"),
    ("the same with frag-refill's free-path hook", "general_free_hooked_ns"),
    ("general allocator free, order 3", "general_free_order3_ns"),
    ("the same with frag-refill's free-path hook", "general_free_hooked_order3_ns"),
    ("jemalloc order 0 alloc + free (arena, no tcache)", "jemalloc_order0_ns"),
    ("jemalloc order 3 alloc + free (arena, no tcache)", "jemalloc_order3_ns"),
    ("swiotlb map + unmap, 1500 B", "swiotlb_map_unmap_1500_ns"),
    ("swiotlb map + unmap, 64 KiB", "swiotlb_map_unmap_65536_ns"),
]


def header(record):
    m = record["machine"]
    return (f"Record `{record['_path']}`: revision {record['git_revision'][:12]}"
            f"{'' if record['git_tree_clean'] else ' (uncommitted changes)'}, {record['date_utc']}, "
            f"{m['cpu']}, {m['cores']} cores, load {record['load_average_before']} before / "
            f"{record['load_average_after']} after, {record['build_configuration']} build "
            f"(`bash scripts/measure.sh`).")


def pool_table(record):
    mb = record["microbench"]
    lines = ["| path | key | this machine (ns) | kernel | goal |", "| --- | --- | --- | --- | --- |"]
    for label, key in POOL_ROWS:
        if key in mb:
            lines.append(f"| {label} | `{key}` | {mb[key]:.2f} | {KERNEL.get(key, '-')} | {GOALS.get(key, '-')} |")
    lines.append(f"| memcpy, 64 MiB | `memcpy_gbps` | {mb.get('memcpy_gbps', 0):.2f} GB/s | - | - |")
    if "build_configuration" in mb:
        lines.append("")
        lines.append(f"Microbench build: {mb['build_configuration']}, invariant checks {mb.get('invariant_checks')}.")
    return "\n".join(lines)


def comparison_table(results, title):
    lines = [f"{title}: {results[0]['rounds']} rounds, baseline {results[0]['baseline']}, "
             f"copy rate {results[0]['copy_gbyte_per_s_1_thread_before']} GB/s (1 thread) before, "
             f"{results[0]['copy_gbyte_per_s_1_thread_after']} after.", "",
             "| design | Gbps (median, min-max) | paired ratio (median, min-max, IQR) | copies/byte | zero-copy | sender s/GB | queue s/GB | modelled share | passed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(
            f"| {r['design']} | {r['gbps']:.1f} ({r['gbps_min']:.1f}-{r['gbps_max']:.1f}) "
            f"| {r['ratio_to_baseline']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}, {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f}) "
            f"| {r['copies_per_byte']:.2f} | {r['zero_copy_fraction']:.2f} | {r['sender_cpu_s_per_gb']:.3f} "
            f"| {r['queue_cpu_s_per_gb']:.3f} | {r['modelled_cpu_fraction']:.2f} | {r['passed']} |")
    return "\n".join(lines)


def stability_table(record):
    """One row per run: bounce's Gbps, each design's median paired ratio with
    its IQR, the copy rates; then each design's largest median over its
    smallest (the issue's goal: at most 1.10)."""
    runs = record["runs"]
    designs = [r["design"] for r in runs[0] if r["design"] != r["baseline"]]
    busy = record.get("busy_loop_from_halfway", [False] * len(runs))
    lines = [f"Record `{record['_path']}`: {record['command']}, revision {record['revision']}"
             f"{'' if record.get('git_tree_clean', True) else ' (uncommitted changes)'}, {record['date_utc']}.", "",
             "| run | load before | busy loop from halfway | " + " | ".join(f"{d} / bounce (IQR)" for d in designs)
             + " | bounce Gbps | stolen CPU s (bounce) | 1-thread copy GB/s | working-set copy GB/s |",
             "| --- | --- | --- | " + " | ".join("---" for _ in designs) + " | --- | --- | --- | --- |"]
    medians = {d: [] for d in designs}
    for i, run in enumerate(runs):
        by = {r["design"]: r for r in run}
        base = by[run[0]["baseline"]]
        cells = []
        for d in designs:
            r = by[d]
            medians[d].append(r["ratio_to_baseline"])
            cells.append(f"{r['ratio_to_baseline']:.3f} ({r['ratio_q1']:.2f}-{r['ratio_q3']:.2f})")
        loads = record.get("load_average_before_run", ["-"] * len(runs))
        threads = record.get("busy_loop_threads", 1)
        hog = f"yes ({threads} loop{'s' if threads > 1 else ''})" if busy[i] else "no"
        lines.append(f"| {i + 1} | {loads[i]} | {hog} | " + " | ".join(cells)
                     + f" | {base['gbps']:.1f} | {base.get('stolen_cpu_s', 0):.2f} | {base['copy_gbyte_per_s_1_thread_before']}"
                     + f" | {base.get('copy_gbyte_per_s_working_set_before', '-')} |")
    lines.append("")
    lines.append("Largest median over smallest: " + ", ".join(
        f"{d} {max(v) / min(v):.3f}" for d, v in medians.items() if min(v) > 0) + " (goal: at most 1.10).")
    if "ratio_near" in runs[0][0]:
        lines += ["", distance_table(runs, designs)]
    return "\n".join(lines)


def distance_table(runs, designs):
    """The same runs' paired ratios split by the CPUs' distance
    (`ratio_near`/`ratio_far`, from the hand-off probe before every run), with
    each split's largest median over its smallest across the runs that had
    rounds at that distance."""
    lines = ["By CPU distance (median paired ratio [rounds]; `-`: no round at that distance):", "",
             "| run | bounce rounds near / far | " + " | ".join(f"{d} near | {d} far" for d in designs) + " |",
             "| --- | --- | " + " | ".join("--- | ---" for _ in designs) + " |"]
    medians = {(d, k): [] for d in designs for k in ("near", "far")}
    for i, run in enumerate(runs):
        by = {r["design"]: r for r in run}
        base = by[run[0]["baseline"]]
        cells = []
        for d in designs:
            for k in ("near", "far"):
                r = by[d]
                if r.get(f"ratio_{k}") is None:
                    cells.append("-")
                else:
                    medians[(d, k)].append(r[f"ratio_{k}"])
                    cells.append(f"{r[f'ratio_{k}']:.3f} [{r[f'rounds_{k}']}]")
        lines.append(f"| {i + 1} | {base['rounds_near']} / {base['rounds_far']} | " + " | ".join(cells) + " |")
    if "run_frames_per_queue_batch" in runs[0][0]:
        lines += ["", run_distance_table(runs)]
    lines.append("")
    for k in ("near", "far"):
        parts = [f"{d} {max(v) / min(v):.3f} over {len(v)} runs" for (d, kk), v in medians.items() if kk == k and len(v) > 1 and min(v) > 0]
        if parts:
            lines.append(f"Largest median over smallest, {k} rounds only: " + ", ".join(parts) + ".")
    return "\n".join(lines)


def run_distance(samples, j, far=0.3):
    """The distance both probes around run j read, or None when they differ."""
    d = ["far" if x >= far else "near" for x in samples[2 * j:2 * j + 2]]
    return d[0] if d[0] == d[1] else None


def run_distance_table(runs):
    """Every run of bounce (five per round) and of decrypted-pool by the
    probes on both sides of it: bounce's regime (batched from 2 frames per
    queue batch) and decrypted-pool's median Gbps at each distance."""
    lines = ["Run by run (probes before and after each run; `moved`: they disagreed):", "",
             "| invocation | bounce batched: near / far / moved | bounce per frame: near / far / moved | decrypted-pool Gbps near [runs] | far [runs] |",
             "| --- | --- | --- | --- | --- |"]
    for i, run in enumerate(runs):
        by = {r["design"]: r for r in run}
        b = by["bounce"]
        cells = []
        for batched in (True, False):
            c = {"near": 0, "far": 0, None: 0}
            for j, f in enumerate(b["run_frames_per_queue_batch"]):
                if (f >= 2) == batched:
                    c[run_distance(b["run_handoff_ns_per_byte"], j)] += 1
            cells.append(f"{c['near']} / {c['far']} / {c[None]}")
        if "decrypted-pool" in by:
            d = by["decrypted-pool"]
            for k in ("near", "far"):
                g = sorted(x for j, x in enumerate(d["run_gbps"]) if run_distance(d["run_handoff_ns_per_byte"], j) == k)
                cells.append(f"{statistics.median(g):.0f} [{len(g)}]" if g else "-")
        else:
            cells += ["-", "-"]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def regimes_table(record):
    def f(v, digits):
        return "-" if v is None else f"{v:.{digits}f}"
    lines = [f"Record `{record['_path']}`: {record['command']}, revision {record['revision'][:12]}"
             f"{'' if record['git_tree_clean'] else ' (uncommitted changes)'}, {record['date_utc']}.",
             "",
             "| run | design | Gbps | frames per queue batch | sender CPU s/GB | queue CPU s/GB "
             "| copy 1 ns/B, bounced here | bounced elsewhere | never bounced | share bounced elsewhere "
             "| hand-off ns/B (own) before |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    designs = []
    for r in record["runs"]:
        if r["design"] not in designs:
            designs.append(r["design"])
    for i, r in enumerate(record["runs"]):
        lines.append(f"| {i // len(designs) + 1} | {r['design']} | {r['gbps']:.1f} | {r['frames_per_queue_batch']:.2f} "
                     f"| {r['sender_cpu_s_per_gb']:.3f} | {r['queue_cpu_s_per_gb']:.3f} "
                     f"| {f(r['copy1_ns_per_byte_bounced_here'], 3)} | {f(r['copy1_ns_per_byte_bounced_elsewhere'], 3)} "
                     f"| {f(r['copy1_ns_per_byte_not_bounced'], 3)} | {f(r['copy1_fraction_bounced_elsewhere'], 2)} "
                     f"| {r['handoff_ns_per_byte_before']:.3f} ({r['own_rewrite_ns_per_byte_before']:.3f}) |")
    return "\n".join(lines)


def validation_table(rows):
    """`txsim project --validate --json`: one row per design and point."""
    lines = ["| workload | S | Q | design | CPU share | predicted Gbps | measured Gbps (min..max) | error | predicted bound "
             "| copies p/m | zero-copy p/m | within goal |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['senders']} | {r['queues']} | {r['design']} | {r['cpu_share']:.2f} "
            f"| {r['predicted_gbps']:.2f} | {r['measured_gbps']:.2f} ({r['measured_gbps_min']:.1f}..{r['measured_gbps_max']:.1f}) "
            f"| {100 * r['gbps_error']:+.1f}% | {r['predicted_bound']} "
            f"| {r['predicted_copies_per_byte']:.3f}/{r['measured_copies_per_byte']:.3f} "
            f"| {r['predicted_zero_copy_fraction']:.3f}/{r['measured_zero_copy_fraction']:.3f} "
            f"| {'yes' if r['within_goal'] else 'no'} |")
    errors = sorted(abs(r["gbps_error"]) for r in rows)
    met = sum(1 for r in rows if r["within_goal"])
    lines.append("")
    lines.append(f"{met} of {len(rows)} points meet the goals; median |Gbps error| {100 * errors[len(errors) // 2]:.1f}%, "
                 f"largest {100 * errors[-1]:.1f}%; largest copies-per-byte error "
                 f"{max(abs(r['copies_per_byte_error']) for r in rows):.3f}, zero-copy fraction "
                 f"{max(abs(r['zero_copy_fraction_error']) for r in rows):.3f}.")
    return "\n".join(lines)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: measure_tables.py RECORD.json")
    with open(sys.argv[1]) as f:
        record = json.load(f)
    if isinstance(record, list):
        print(validation_table(record))
        return
    record["_path"] = sys.argv[1]
    if "runs" in record and "regimes.sh" in record.get("command", ""):
        print(regimes_table(record))
        return
    if "runs" in record:
        print(stability_table(record))
        return
    print(header(record))
    print()
    print(pool_table(record))
    print()
    print(comparison_table(record["default"], "Default workload (`txsim compare`)"))
    print()
    print(comparison_table(record["pressure"], "Pressure workload (`txsim compare --flows 32 --rtt-us 2000`)"))


if __name__ == "__main__":
    main()
