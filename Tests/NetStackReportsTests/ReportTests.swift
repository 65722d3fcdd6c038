import DMAPools
import Foundation
import NetStack
@testable import NetStackReports
import Testing

/// The report is library API: a package prints what txsim prints. Its JSON and
/// CSV keep every key they had (checks and saved files read them) and carry
/// what produced them.
@Suite struct ReportTests {
    /// The top-level keys of `txsim compare --json` before the report moved
    /// into NetStackReports (taken from a run of bounce and inline-decrypt).
    static let jsonKeysBefore: Set<String> = [
        "baseline", "break_even_hypercall_ns", "break_even_hypercall_page_ns", "break_even_scale_of_modelled_cost",
        "bytes_bounced", "bytes_copied_sender", "bytes_mapped_direct", "bytes_written", "conversion_calls",
        "conversion_modelled_s", "conversion_pages", "copies_per_byte", "copy_bytes",
        "copy_gbyte_per_s_1_thread_after", "copy_gbyte_per_s_1_thread_before", "copy_gbyte_per_s_2_threads_after",
        "copy_gbyte_per_s_2_threads_before", "corrupt_bytes", "cpu_ratio_max", "cpu_ratio_min",
        "cpu_ratio_to_baseline", "design", "dma_faults", "figures", "first_problem", "frames_abandoned",
        "frames_dropped", "frames_given_up", "frames_retransmitted", "gbps", "gbps_max", "gbps_min",
        "hypercall_charge", "hypercall_ns", "hypercall_page_ns", "load_average_1min_after",
        "load_average_1min_before", "lost_pages", "memory_resident_at_boot", "modelled_cpu_fraction", "passed",
        "payload_bytes", "queue_cpu_copy_equivalents", "queue_cpu_s_per_gb", "ratio_max", "ratio_min", "ratio_q1",
        "ratio_q3", "ratio_to_baseline", "ratios_stable", "refill_failures", "requeues", "round_cpu_ratios",
        "round_gbps", "round_ratios", "round_seconds", "rounds", "seconds", "sender_cpu_copy_equivalents",
        "sender_cpu_s_per_gb", "stolen_cpu_s", "swiotlb_peak_fraction", "swiotlb_peak_slots",
        "timed_window_page_faults", "unmap_failures", "verified_bytes", "zero_copy_fraction", "zerocopy_tx_percent",
    ]

    /// The CSV columns of `txsim compare --csv` before the move, in their
    /// order: new columns come after them, so positions stay as they were.
    static let csvColumnsBefore: [String] = [
        "design", "gbps", "gbps_min", "gbps_max", "ratio_to_baseline", "ratio_min", "ratio_max", "ratio_q1",
        "ratio_q3", "cpu_ratio_to_baseline", "cpu_ratio_min", "cpu_ratio_max", "copies_per_byte",
        "zero_copy_fraction", "dma_faults", "verified_bytes", "lost_pages", "payload_bytes", "seconds",
        "bytes_copied_sender", "bytes_bounced", "bytes_mapped_direct", "sender_cpu_s_per_gb", "queue_cpu_s_per_gb",
        "sender_cpu_copy_equivalents", "queue_cpu_copy_equivalents", "swiotlb_peak_slots", "swiotlb_peak_fraction",
        "conversion_calls", "conversion_pages", "conversion_modelled_s", "modelled_cpu_fraction",
        "timed_window_page_faults", "stolen_cpu_s", "refill_failures", "requeues", "frames_dropped",
        "frames_abandoned", "zerocopy_tx_percent", "frames_retransmitted", "frames_given_up", "unmap_failures",
        "bytes_written", "corrupt_bytes", "passed", "break_even_hypercall_ns", "break_even_hypercall_page_ns",
        "break_even_scale_of_modelled_cost", "baseline", "rounds", "round_seconds", "ratios_stable", "copy_bytes",
        "copy_gbyte_per_s_1_thread_before", "copy_gbyte_per_s_1_thread_after", "copy_gbyte_per_s_2_threads_before",
        "copy_gbyte_per_s_2_threads_after", "load_average_1min_before", "load_average_1min_after",
        "memory_resident_at_boot", "hypercall_ns", "hypercall_page_ns", "hypercall_charge",
    ]

    /// What a saved file must say about how it was produced.
    static let settingKeys: Set<String> = [
        "senders", "queues", "flows", "message_bytes", "rtt_us", "duration_s", "send_buffer_bytes", "verify",
        "msg_zerocopy", "line_rate_gbps", "designs", "until_stable", "guest_bytes", "swiotlb_bytes", "swiotlb_areas",
        "zerocopy_percent", "provider", "pool_ring", "git_revision", "git_tree_modified", "build_configuration",
        "invariant_checks",
    ]

    static let report: Report? = {
        var c = ExperimentConfiguration()
        c.memory = GuestMemoryConfiguration(guestBytes: 256 << 20, swiotlbBytes: 32 << 20, hypercall: .free)
        var w = Workload()
        w.flows = 2
        w.durationSeconds = 0.1
        w.sendBufferBytes = 1 << 20
        return try? Report.compare([.bounce, .inlineDecrypt], workload: w, plan: ComparisonPlan(rounds: 1), configuration: c)
    }()

    /// A design whose rounds fell in both regimes gets a line with the count
    /// and median Gbps of each; one whose rounds all fell in one gets none.
    @Test func roundsSplitAcrossRegimesAreNamed() throws {
        var r = try #require(Self.report).results[0]
        r.roundFramesPerBatch = [1.2, 15, 1.3, 17, 1.25]
        r.roundGbps = [40, 70, 42, 74, 44]
        let line = try #require(ResultFormat.regimeSplit(r))
        #expect(line.contains("2 of 5 batched") && line.contains("median 72.0 Gbps"))
        #expect(line.contains("3 per frame") && line.contains("median 42.0 Gbps"))
        // Run by run against the probes on both sides of each run: a
        // batched run near, a per-frame run far, one that moved.
        r.runFramesPerBatch = [15, 1.2, 1.3]
        r.handoffSamples = [0.12, 0.14, 0.5, 0.55, 0.1, 0.5]
        #expect(r.runDistances == [.near, .far, nil])
        let counted = try #require(ResultFormat.regimeSplit(r))
        #expect(counted.contains("Its 3 runs by CPU distance") && counted.contains("batched 1 near, 0 far, 0 moved")
                && counted.contains("per frame 0 near, 1 far, 1 moved"))
        r.roundFramesPerBatch = [1.2, 1.1, 1.3, 1.0, 1.25]
        #expect(ResultFormat.regimeSplit(r) == nil)
    }

    @Test func jsonKeepsEveryKeyAndSaysWhatProducedIt() throws {
        let report = try #require(Self.report)
        let data = Data(report.json().utf8)
        let objects = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        #expect(objects.count == 2)
        for object in objects {
            let keys = Set(object.keys)
            #expect(keys.isSuperset(of: Self.jsonKeysBefore), "missing: \(Self.jsonKeysBefore.subtracting(keys).sorted())")
            #expect(keys.isSuperset(of: Self.settingKeys), "missing: \(Self.settingKeys.subtracting(keys).sorted())")
            #expect(object["flows"] as? Int == 2 && object["guest_bytes"] as? Int == 256 << 20)
            #expect(object["provider"] as? String == "swiotlb" && object["designs"] as? String == "bounce,inline-decrypt")
            #expect((object["build_configuration"] as? String).map { ["debug", "release", "release+invariants"].contains($0) } == true)
            #expect(object["git_revision"] as? String == report.provenance.gitRevision)
        }
        let inline = try #require(objects.first { $0["design"] as? String == "inline-decrypt" })
        let typed = try #require(inline["design_figures"] as? [[String: Any]])
        let pages = try #require(typed.first { $0["name"] as? String == "pages decrypted/encrypted" })
        #expect(pages["unit"] as? String == "pages")
        #expect((pages["value"] as? [Int])?.count == 2)
        #expect((inline["figures"] as? [String: String])?["pages decrypted/encrypted"]?.contains("/") == true)
        // Every run was probed for the CPUs' distance (on a machine with two
        // CPUs): the one round is counted near, far or neither (the probes
        // disagreed), and the text says so.
        let handoff = try #require(inline["round_handoff_ns_per_byte"] as? [Double])
        #expect(handoff.count == 1)
        let probed = handoff[0] > 0
        let near = try #require(inline["rounds_near"] as? Int), far = try #require(inline["rounds_far"] as? Int)
        #expect(near + far <= (probed ? 1 : 0))
        if near + far == 1 {
            #expect((inline[near == 1 ? "ratio_near" : "ratio_far"] as? Double) == inline["ratio_to_baseline"] as? Double)
        }
        #expect(report.table().contains("CPU distance (a hand-off probe before and after every run") == probed)
    }

    @Test func csvKeepsEveryColumnAndSaysWhatProducedIt() throws {
        let report = try #require(Self.report)
        let lines = report.csv().split(separator: "\n")
        #expect(lines.count == 3, "a header and one row per design")
        let header = lines[0].split(separator: ",").map(String.init)
        #expect(Array(header.prefix(Self.csvColumnsBefore.count)) == Self.csvColumnsBefore, "the columns before the move, in order")
        let columns = Set(header)
        #expect(columns.isSuperset(of: Self.settingKeys), "missing: \(Self.settingKeys.subtracting(columns).sorted())")
    }

    @Test func theTableIsTheStandardReport() throws {
        let report = try #require(Self.report)
        let table = report.table()
        for line in ["Workload:", "Guest:", "Machine:", "Build: swift-dma-pools", "bytes copied per payload byte",
                     "Throughput relative to bounce, paired"] {
            #expect(table.contains(line), "no '\(line)'")
        }
        #expect(report.svg().hasPrefix("<svg"))
        #expect(report.settings.contains { $0.hasPrefix("build: swift-dma-pools") })
    }

    @Test func provenanceReadsTheRevisionOfThisCheckout() {
        let p = Provenance.current()
        // The tests run from a checkout: git gives a 40-digit revision.
        #expect(p.gitRevision == "unknown" || (p.gitRevision.count == 40 && p.gitRevision.allSatisfy(\.isHexDigit)))
        #expect(p.invariantChecks == BuildConfiguration.invariantChecksEnabled)
    }
}
