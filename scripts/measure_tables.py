#!/usr/bin/env python3
"""Prints the Design/ tables from a record of scripts/measure.sh.

    python3 scripts/measure_tables.py Design/records/2026-12-02.json

Every figure comes from the record; the header says which record, revision,
machine and load it is from.
"""
import json
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
    ("bulk: 32 pages per alloc and put, per page", "pool_bulk32_ns_per_page"),
    ("ring: alloc + put via ring, one thread", "pool_ring_ns"),
    ("ring, a second thread putting (cross-CPU)", "pool_ring_remote_ns"),
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


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: measure_tables.py RECORD.json")
    with open(sys.argv[1]) as f:
        record = json.load(f)
    record["_path"] = sys.argv[1]
    print(header(record))
    print()
    print(pool_table(record))
    print()
    print(comparison_table(record["default"], "Default workload (`txsim compare`)"))
    print()
    print(comparison_table(record["pressure"], "Pressure workload (`txsim compare --flows 32 --rtt-us 2000`)"))


if __name__ == "__main__":
    main()
