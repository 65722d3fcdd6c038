import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a comparison's outputs carry: keys and labels, never timings.
@Suite struct TXSimReportTests {
    static let short = ["--designs", "bounce,page-pool,inline-decrypt", "--duration", "0.2", "--rounds", "2", "--quiet"]

    @Test func jsonCarriesPairedRatiosTheMachineAndUnitsUnderStableKeys() throws {
        let outcome = try txsim(Self.short + ["--json"])
        #expect(outcome.status == 0, "\(outcome.output)")
        let objects = outcome.output.split(separator: "\n").filter { $0.contains("\"design\":") }
        #expect(objects.count == 3)
        // The keys that were there keep their names; the new ones carry units.
        let keys = ["\"design\"", "\"gbps\"", "\"gbps_min\"", "\"gbps_max\"", "\"copies_per_byte\"", "\"zero_copy_fraction\"",
                    "\"dma_faults\"", "\"verified_bytes\"", "\"lost_pages\"", "\"conversion_modelled_s\"",
                    "\"ratio_to_baseline\"", "\"ratio_min\"", "\"ratio_max\"", "\"ratio_q1\"", "\"ratio_q3\"", "\"baseline\": \"bounce\"",
                    "\"rounds\": 2", "\"modelled_cpu_fraction\"", "\"timed_window_page_faults\"", "\"stolen_cpu_s\"",
                    "\"copy_gbyte_per_s_1_thread_before\"", "\"copy_gbyte_per_s_2_threads_after\"", "\"copy_bytes\": 32768",
                    "\"sender_cpu_copy_equivalents\"", "\"queue_cpu_copy_equivalents\"", "\"load_average_1min_before\"",
                    "\"memory_resident_at_boot\": true", "\"hypercall_ns\": 2000", "\"hypercall_page_ns\": 500",
                    "\"break_even_hypercall_ns\"", "\"break_even_hypercall_page_ns\""]
        for object in objects {
            for key in keys { #expect(object.contains(key), "\(key) missing from \(object)") }
        }
        // The baseline's paired ratio is exactly 1 in every round; designs
        // that convert nothing have no break-even.
        #expect(objects[0].contains("\"ratio_to_baseline\": 1.000, \"ratio_min\": 1.000, \"ratio_max\": 1.000"))
        #expect(objects[0].contains("\"break_even_hypercall_ns\": null"))
        #expect(!objects[2].contains("\"break_even_hypercall_ns\": null"), "inline-decrypt converts: \(objects[2])")
    }

    /// PREEMPT_RT's keys in every design's object, the race counters 0 where
    /// the per-CPU pointer is never set (page-pool), and the run's scheduling
    /// settings; the table names preemptions as modelled, on their own line.
    @Test func preemptRTKeysAreCarriedPerDesignAndPreemptionsHaveTheirOwnLine() throws {
        let arguments = ["--designs", "bounce,page-pool", "--duration", "0.1", "--rounds", "1", "--quiet", "--preempt-rt",
                         "--flows", "8", "--connection-bytes", "262144", "--preempt-every", "4", "--rt-tasks-per-cpu", "3"]
        let json = try txsim(arguments + ["--json"])
        #expect(json.status == 0, "\(json.output)")
        let objects = json.output.split(separator: "\n").filter { $0.contains("\"design\":") }
        #expect(objects.count == 2)
        for object in objects {
            for key in ["\"preemptions\": ", "\"connections_closed\": ", "\"current_tx_socket_sets\": 0,",
                        "\"misattributed_learnings\": 0,", "\"socket_use_after_free\": 0,", "\"missed_learnings\": 0,",
                        "\"rt_tasks_per_cpu\": 3", "\"preempt_every\": 4", "\"preempt_seed\": \"1\"", "\"tx_socket_pointer\": \"per-cpu\""] {
                #expect(object.contains(key), "\(key) missing from \(object)")
            }
        }
        let table = try txsim(arguments)
        #expect(table.status == 0, "\(table.output)")
        for text in ["RT preemptions in TX (modelled)", "misattributed learnings", "socket uses after free",
                     "3 preemptible tasks per modelled CPU", "probability 1/4", "not a cost spent"] {
            #expect(table.output.contains(text), "'\(text)' missing: \(table.output)")
        }
    }

    @Test func theTableSaysWhatIsModelledWhatIsMeasuredAndWhatCarriesOver() throws {
        let outcome = try txsim(Self.short)
        #expect(outcome.status == 0, "\(outcome.output)")
        for text in ["Machine: memcpy of 32768 B", "GB/s", "load average", "faulted in at boot, outside the timed window",
                     "Throughput relative to bounce, paired", "median of 2 rounds", "IQR",
                     "modelled share of CPU time", "by assumption", "Break-even", "inline-decrypt",
                     "not a NIC's", "What carries over to a real guest"] {
            #expect(outcome.output.contains(text), "'\(text)' missing: \(outcome.output)")
        }
    }

    @Test func theChartDrawsTheSpreadAndCarriesItsSettings() throws {
        let path = "/tmp/txsim-report-test-\(getpid()).svg"
        defer { unlink(path) }
        let outcome = try txsim(Self.short + ["--svg", path, "--baseline", "page-pool"])
        #expect(outcome.status == 0, "\(outcome.output)")
        let file = try #require(fopen(path, "r"))
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
        }
        fclose(file)
        let svg = String(decoding: bytes, as: UTF8.self)
        for text in ["higher is better", "relative to page-pool", "error bars", "workload: 2 senders", "rounds: 2 of 0.100 s",
                     "baseline page-pool", "modelled hypercall (an assumption, not a measurement): 2000 ns + 500 ns/page",
                     "machine: memcpy 32768 B", "load average", "memory resident at boot"] {
            #expect(svg.contains(text), "'\(text)' missing from the chart")
        }
    }
}
