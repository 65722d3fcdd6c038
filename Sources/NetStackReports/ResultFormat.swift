import DMAPools
import NetStack

/// Renders a `Report` for people (table, SVG) and for programs (JSON, CSV).
package enum ResultFormat {
    /// One row of the report: a label, a machine key, and the value per result.
    struct Row: Sendable {
        let label: String
        let key: String
        let value: @Sendable (TransmitResult) -> JSONValue
    }

    package enum JSONValue: Sendable {
        case int(Int)
        case double(Double, digits: Int)
        case string(String)
        case bool(Bool)
        case null

        package var json: String {
            switch self {
            case .null: "null"
            case .int(let v): String(v)
            case .double(let v, let d): v.isFinite ? fixed(v, d) : "null"
            case .string(let s): "\"" + escaped(s) + "\""
            case .bool(let b): b ? "true" : "false"
            }
        }

        package var text: String {
            switch self {
            case .null: "-"
            case .int(let v): String(v)
            case .double(let v, let d): fixed(v, d)
            case .string(let s): s
            case .bool(let b): b ? "yes" : "NO"
            }
        }
    }

    /// The stable report columns. design, gbps, copies_per_byte, zero_copy_fraction,
    /// dma_faults, verified_bytes and lost_pages are the contract for checks.
    /// Every key carries its unit: Gbps and gbps are gigabits of payload per
    /// second (this machine's rate, not a NIC's), GB/s gigabytes (10^9 bytes)
    /// per second, s_per_gb CPU seconds per 10^9 payload bytes; ratios and
    /// fractions have none.
    static let rows: [Row] = [
        Row(label: "design", key: "design") { .string($0.design) },
        Row(label: "Gbps (payload Gbit/s, median round)", key: "gbps") { .double($0.gbps, digits: 2) },
        Row(label: "Gbps slowest round", key: "gbps_min") { .double($0.gbpsRange.lowerBound, digits: 2) },
        Row(label: "Gbps fastest round", key: "gbps_max") { .double($0.gbpsRange.upperBound, digits: 2) },
        Row(label: "ratio to baseline (median/round)", key: "ratio_to_baseline") { optional($0.ratioSpread?.median, 3) },
        Row(label: "ratio slowest round", key: "ratio_min") { optional($0.ratioSpread?.minimum, 3) },
        Row(label: "ratio fastest round", key: "ratio_max") { optional($0.ratioSpread?.maximum, 3) },
        Row(label: "ratio lower quartile", key: "ratio_q1") { optional($0.ratioSpread?.lowerQuartile, 3) },
        Row(label: "ratio upper quartile", key: "ratio_q3") { optional($0.ratioSpread?.upperQuartile, 3) },
        Row(label: "CPU ratio (baseline CPU/GB over this)", key: "cpu_ratio_to_baseline") { optional($0.cpuRatioSpread?.median, 3) },
        Row(label: "CPU ratio slowest round", key: "cpu_ratio_min") { optional($0.cpuRatioSpread?.minimum, 3) },
        Row(label: "CPU ratio fastest round", key: "cpu_ratio_max") { optional($0.cpuRatioSpread?.maximum, 3) },
        Row(label: "bytes copied per payload byte", key: "copies_per_byte") { .double($0.copiesPerByte, digits: 3) },
        Row(label: "zero-copy fraction", key: "zero_copy_fraction") { .double($0.zeroCopyFraction, digits: 3) },
        Row(label: "DMA faults", key: "dma_faults") { .int($0.dmaFaults) },
        Row(label: "bytes verified by the NIC", key: "verified_bytes") { .int($0.verifiedBytes) },
        Row(label: "pages lost", key: "lost_pages") { .int($0.lostPages) },
        Row(label: "payload bytes", key: "payload_bytes") { .int($0.payloadBytes) },
        Row(label: "seconds (wall, all rounds)", key: "seconds") { .double($0.seconds, digits: 3) },
        Row(label: "copy 1 bytes (sender)", key: "bytes_copied_sender") { .int($0.bytesCopiedBySender) },
        Row(label: "copy 2 bytes (swiotlb bounce)", key: "bytes_bounced") { .int($0.bytesCopiedByDMALayer) },
        Row(label: "bytes mapped without copy", key: "bytes_mapped_direct") { .int($0.bytesMappedDirect + $0.bytesConvertedInPlace) },
        Row(label: "sender CPU s per GB", key: "sender_cpu_s_per_gb") { .double($0.senderCPUSecondsPerGB, digits: 3) },
        Row(label: "queue CPU s per GB", key: "queue_cpu_s_per_gb") { .double($0.queueCPUSecondsPerGB, digits: 3) },
        Row(label: "sender CPU, in copies at memcpy rate", key: "sender_cpu_copy_equivalents") {
            optional($0.copyEquivalents(cpuSecondsPerGB: $0.senderCPUSecondsPerGB), 2)
        },
        Row(label: "queue CPU, in copies at memcpy rate", key: "queue_cpu_copy_equivalents") {
            optional($0.copyEquivalents(cpuSecondsPerGB: $0.queueCPUSecondsPerGB), 2)
        },
        Row(label: "swiotlb peak slots", key: "swiotlb_peak_slots") { .int($0.swiotlbPeakSlots) },
        Row(label: "swiotlb peak use", key: "swiotlb_peak_fraction") {
            .double($0.swiotlbSlots > 0 ? Double($0.swiotlbPeakSlots) / Double($0.swiotlbSlots) : 0, digits: 3)
        },
        Row(label: "conversion hypercalls", key: "conversion_calls") { .int($0.conversionCalls) },
        Row(label: "pages converted", key: "conversion_pages") { .int($0.conversionPages) },
        Row(label: "modelled hypercall seconds", key: "conversion_modelled_s") { .double($0.conversionModelledSeconds, digits: 4) },
        Row(label: "modelled share of CPU time", key: "modelled_cpu_fraction") { .double($0.modelledShareOfCPU, digits: 3) },
        Row(label: "page faults in timed windows", key: "timed_window_page_faults") { .int($0.timedWindowPageFaults) },
        Row(label: "CPU s stolen by the host (timed)", key: "stolen_cpu_s") { .double($0.stolenCPUSeconds, digits: 3) },
        Row(label: "socket refill failures", key: "refill_failures") { .int($0.refillFailures) },
        Row(label: "frames requeued", key: "requeues") { .int($0.requeues) },
        Row(label: "frames dropped", key: "frames_dropped") { .int($0.framesDropped) },
        Row(label: "frames abandoned at drain limit", key: "frames_abandoned") { .int($0.framesAbandoned) },
        Row(label: "zerocopy_tx_percent (0: n/a)", key: "zerocopy_tx_percent") { .int($0.zeroCopyPercent) },
        Row(label: "frames retransmitted", key: "frames_retransmitted") { .int($0.framesRetransmitted) },
        Row(label: "frames given up after retransmits", key: "frames_given_up") { .int($0.framesGivenUp) },
        Row(label: "unmap failures", key: "unmap_failures") { .int($0.unmapFailures) },
        Row(label: "bytes written by senders", key: "bytes_written") { .int($0.bytesWritten) },
        Row(label: "corrupt bytes", key: "corrupt_bytes") { .int($0.corruptBytes) },
        Row(label: "passed", key: "passed") { .bool($0.passed) },
    ]

    /// Rows added after the report's columns were fixed: the table shows them
    /// after `rows`, and JSON and CSV after every earlier field, so that CSV
    /// positions stay as they were.
    static let laterRows: [Row] = [
        Row(label: "set-up seconds (not timed)", key: "setup_s") { .double($0.setupSeconds, digits: 3) },
        Row(label: "frames per queue batch (median round)", key: "frames_per_queue_batch") { .double($0.framesPerBatch, digits: 2) },
        Row(label: "frames per queue batch, fewest", key: "frames_per_queue_batch_min") { .double($0.framesPerBatchRange.lowerBound, digits: 2) },
        Row(label: "frames per queue batch, most", key: "frames_per_queue_batch_max") { .double($0.framesPerBatchRange.upperBound, digits: 2) },
        Row(label: "machine hand-off before its runs, ns/B", key: "run_handoff_ns_per_byte") { $0.handoffSamples.isEmpty ? .null : .double($0.handoffNanosecondsPerByte, digits: 3) },
        Row(label: "copy 1 ns/B into pages bounced here", key: "copy1_ns_per_byte_bounced_here") {
            optional($0.copyTiming?.nanosecondsPerByte(.bouncedHere), 3)
        },
        Row(label: "copy 1 ns/B into pages bounced elsewhere", key: "copy1_ns_per_byte_bounced_elsewhere") {
            optional($0.copyTiming?.nanosecondsPerByte(.bouncedElsewhere), 3)
        },
        Row(label: "copy 1 ns/B into pages never bounced", key: "copy1_ns_per_byte_not_bounced") {
            optional($0.copyTiming?.nanosecondsPerByte(.notBounced), 3)
        },
        Row(label: "copy 1 share into pages bounced elsewhere", key: "copy1_fraction_bounced_elsewhere") {
            optional($0.copyTiming?.byteFraction(.bouncedElsewhere), 3)
        },
    ]

    /// Frames' linear heads (`--header-bytes`; all 0 without heads), after
    /// every other field in JSON and CSV (columns are only appended); the
    /// table shows them only when frames carry heads.
    static let headRows: [Row] = [
        Row(label: "linear head bytes per frame", key: "header_bytes") { .int($0.workload.headerBytes) },
        Row(label: "linear-head bytes read by the NIC", key: "head_bytes") { .int($0.headBytes) },
        Row(label: "linear-head bytes verified", key: "head_verified_bytes") { .int($0.headVerifiedBytes) },
        Row(label: "linear-head bytes bounced", key: "head_bytes_bounced") { .int($0.headBytesBounced) },
        Row(label: "linear-head copies per header byte", key: "head_copies_per_byte") { .double($0.headCopiesPerByte, digits: 3) },
        Row(label: "linear-head slab peak pages", key: "head_slab_peak_pages") { .int($0.headSlabPeakPages) },
    ]

    /// PREEMPT_RT's and short-lived connections' figures, after every IOMMU
    /// field in JSON and CSV (columns are only appended); shown in every table.
    static let rtRows: [Row] = [
        Row(label: "connections closed (sockets freed)", key: "connections_closed") { .int($0.connectionsClosed) },
        Row(label: "RT preemptions in TX (modelled)", key: "preemptions") { .int($0.preemptions) },
        Row(label: "current_tx_socket sets", key: "current_tx_socket_sets") { .int($0.currentTXSocketSets) },
        Row(label: "misattributed learnings", key: "misattributed_learnings") { .int($0.misattributedLearnings) },
        Row(label: "socket uses after free", key: "socket_use_after_free") { .int($0.socketUseAfterFree) },
        Row(label: "learnings missed (NULL pointer)", key: "missed_learnings") { .int($0.missedLearnings) },
    ]

    /// The IOMMU's figures (`--platform iommu`; all 0 on coco), after
    /// `laterRows` in JSON and CSV; the table shows them only for an IOMMU run.
    static let iommuRows: [Row] = [
        Row(label: "platform", key: "platform") { .string($0.platform) },
        Row(label: "IOMMU maps (timed)", key: "iommu_maps") { .int($0.iommu.maps) },
        Row(label: "IOMMU unmaps", key: "iommu_unmaps") { .int($0.iommu.unmaps) },
        Row(label: "IOMMU PTEs written", key: "iommu_pte_writes") { .int($0.iommu.pteWrites) },
        Row(label: "IOMMU PTEs cleared", key: "iommu_pte_clears") { .int($0.iommu.pteClears) },
        Row(label: "IOMMU invalidations (strict)", key: "iommu_invalidations") { .int($0.iommu.invalidations) },
        Row(label: "IOMMU flushes (lazy)", key: "iommu_flushes") { .int($0.iommu.flushes) },
        Row(label: "IOMMU translation faults", key: "iommu_dma_faults") { .int($0.iommu.translationFaults) },
        Row(label: "IOMMU bad unmaps", key: "iommu_bad_unmaps") { .int($0.iommu.badUnmaps) },
        Row(label: "IOMMU maps per GB", key: "iommu_maps_per_gb") { .double($0.perGB(Double($0.iommu.maps)), digits: 1) },
        Row(label: "IOMMU operations per GB", key: "iommu_operations_per_gb") { .double($0.perGB(Double($0.iommu.operations)), digits: 1) },
        Row(label: "modelled IOMMU seconds", key: "iommu_modelled_s") { .double($0.iommuModelledSeconds, digits: 4) },
        Row(label: "modelled IOMMU s per GB", key: "iommu_modelled_s_per_gb") { .double($0.perGB($0.iommuModelledSeconds), digits: 5) },
        Row(label: "modelled IOMMU share of CPU time", key: "iommu_modelled_cpu_fraction") { .double($0.iommuModelledShareOfCPU, digits: 3) },
    ]

    /// The IOMMU's settings, the same for every design, after `iommuRows`.
    static func iommuRunFields(_ report: Report) -> [(String, JSONValue)] {
        let c = report.configuration.platform.iommu
        return [
            ("iommu_mode", c.map { .string($0.mode.rawValue) } ?? .null),
            ("iommu_map_ns", c.map { .int($0.costs.mapNanoseconds) } ?? .null),
            ("iommu_pte_ns", c.map { .int($0.costs.pteNanoseconds) } ?? .null),
            ("iommu_invalidate_ns", c.map { .int($0.costs.invalidateNanoseconds) } ?? .null),
            ("iommu_flush_ns", c.map { .int($0.costs.flushNanoseconds) } ?? .null),
            ("iommu_flush_queue", c.map { .int($0.flushQueueSize) } ?? .null),
            ("iommu_charge", c.map { .string($0.costs.charge.rawValue) } ?? .null),
        ]
    }

    /// For each design against the baseline on an IOMMU: what it saves in
    /// IOMMU operations and modelled time per GB, and the cost scale below
    /// which that saving is under `threshold` of the baseline's CPU per GB
    /// (linear in the modelled costs: the baseline's measured CPU per GB less
    /// its modelled IOMMU time is taken as fixed).
    package struct IOMMUSaving: Sendable {
        package var design: String
        package var operationsSavedPerGB: Double
        package var modelledSecondsSavedPerGB: Double
        /// The scale of every IOMMU cost at which the saving is `threshold`
        /// of the baseline's CPU per GB; nil when it saves nothing.
        package var scaleAtThreshold: Double?
    }

    package static let iommuSavingThreshold = 0.05

    package static func iommuSavings(_ results: [TransmitResult], baseline: String) -> [IOMMUSaving] {
        guard let b = results.first(where: { $0.design == baseline }), b.platform == "iommu" else { return [] }
        let bCPU = b.senderCPUSecondsPerGB + b.queueCPUSecondsPerGB
        let bModelled = b.perGB(b.iommuModelledSeconds)
        let fixed = max(0, bCPU - (b.iommuTimeSpun ? bModelled : 0))
        return results.filter { $0.design != baseline }.map { r in
            let saved = bModelled - r.perGB(r.iommuModelledSeconds)
            let t = iommuSavingThreshold
            let denominator = saved - t * bModelled
            let scale: Double? = saved > 0 && denominator > 0 ? t * fixed / denominator : nil
            return IOMMUSaving(design: r.design, operationsSavedPerGB: b.perGB(Double(b.iommu.operations)) - r.perGB(Double(r.iommu.operations)),
                               modelledSecondsSavedPerGB: saved, scaleAtThreshold: scale)
        }
    }

    /// The PREEMPT_RT scheduling of the run (null when not RT), after every
    /// other field of JSON objects and CSV rows.
    static func rtFields(_ report: Report) -> [(String, JSONValue)] {
        let c = report.configuration, rt = c.rtScheduling
        return [
            ("rt_tasks_per_cpu", c.preemptRT ? .int(rt.tasksPerCPU) : .null),
            ("preempt_every", c.preemptRT ? .int(rt.preemptEvery) : .null),
            ("preempt_seed", c.preemptRT ? .string(String(rt.seed)) : .null),
            ("tx_socket_pointer", c.preemptRT ? .string(rt.pointer.rawValue) : .null),
        ]
    }

    /// Figures of the invocation, the same for every design, carried in each
    /// JSON object and CSV row.
    static func runFields(_ report: Report) -> [(String, JSONValue)] {
        let c = report.comparison
        let h = report.configuration.memory.hypercall
        return [
            ("baseline", .string(report.baseline)),
            ("rounds", .int(report.roundCount)),
            ("round_seconds", .double((report.results.first?.workload.durationSeconds ?? 0) / Double(c.plan.rounds), digits: 3)),
            ("ratios_stable", .bool(c.stable)),
            ("copy_bytes", .int(c.copyRateBefore.copyBytes)),
            ("copy_gbyte_per_s_1_thread_before", .double(c.copyRateBefore.oneThreadGigabytesPerSecond, digits: 2)),
            ("copy_gbyte_per_s_1_thread_after", .double(c.copyRateAfter.oneThreadGigabytesPerSecond, digits: 2)),
            ("copy_gbyte_per_s_2_threads_before", .double(c.copyRateBefore.twoThreadsGigabytesPerSecond, digits: 2)),
            ("copy_gbyte_per_s_2_threads_after", .double(c.copyRateAfter.twoThreadsGigabytesPerSecond, digits: 2)),
            ("load_average_1min_before", .double(report.loadBefore.one, digits: 2)),
            ("load_average_1min_after", .double(report.loadAfter.one, digits: 2)),
            ("memory_resident_at_boot", .bool(report.configuration.memory.residentAtBoot)),
            ("hypercall_ns", .int(h.perCallNanoseconds)),
            ("hypercall_page_ns", .int(h.perPageNanoseconds)),
            ("hypercall_charge", .string(h.charge.rawValue)),
            ("preempt_rt", .bool(report.configuration.preemptRT)),
            ("copy_working_set_bytes", .int(c.copyRateBefore.workingSetBytes)),
            ("copy_gbyte_per_s_working_set_before", .double(c.copyRateBefore.workingSetGigabytesPerSecond, digits: 2)),
            ("copy_gbyte_per_s_working_set_after", .double(c.copyRateAfter.workingSetGigabytesPerSecond, digits: 2)),
            ("handoff_ns_per_byte_before", .double(c.copyRateBefore.handoffNanosecondsPerByte, digits: 3)),
            ("handoff_ns_per_byte_after", .double(c.copyRateAfter.handoffNanosecondsPerByte, digits: 3)),
            ("own_rewrite_ns_per_byte_before", .double(c.copyRateBefore.ownRewriteNanosecondsPerByte, digits: 3)),
            ("own_rewrite_ns_per_byte_after", .double(c.copyRateAfter.ownRewriteNanosecondsPerByte, digits: 3)),
            ("direct_map_huge_pages", .bool(report.configuration.memory.directMapHugePages)),
        ] + settingFields(report)
    }

    /// What the figures were produced with: the workload, the guest, the
    /// plan, and the provenance (git revision, build configuration).
    static func settingFields(_ report: Report) -> [(String, JSONValue)] {
        let c = report.configuration, m = c.memory, p = report.provenance, plan = report.comparison.plan
        var fields: [(String, JSONValue)] = []
        if let w = report.results.first?.workload {
            fields += [
                ("senders", .int(w.senders)),
                ("queues", .int(w.queues)),
                ("flows", .int(w.flows)),
                ("message_bytes", .int(w.messageBytes)),
                ("rtt_us", .int(w.roundTripMicroseconds)),
                ("duration_s", .double(w.durationSeconds, digits: 3)),
                ("send_buffer_bytes", .int(w.sendBufferBytes)),
                ("verify", .bool(w.verify)),
                ("msg_zerocopy", .bool(w.zeroCopy)),
                ("zerocopy_mix", optional(w.zeroCopyMix, 3)),
                ("line_rate_gbps", optional(w.lineRateGbps, 3)),
            ]
        }
        fields += [
            ("designs", .string(report.comparison.kinds.map(\.name).joined(separator: ","))),
            ("until_stable", plan.untilStableCap.map { .int($0) } ?? .null),
            ("guest_bytes", .int(m.guestBytes)),
            ("swiotlb_bytes", .int(m.swiotlbBytes)),
            ("swiotlb_areas", c.swiotlbAreas.map { .int($0) } ?? .null),
            ("zerocopy_percent", .int(c.zeroCopyPercent)),
            ("provider", .string(c.poolProvider.name)),
            ("pool_ring", .int(c.poolRingSize)),
            ("git_revision", .string(p.gitRevision)),
            ("git_tree_modified", p.gitTreeModified.map { .bool($0) } ?? .null),
            ("build_configuration", .string(p.buildConfiguration)),
            ("invariant_checks", .bool(p.invariantChecks)),
        ]
        return fields
    }

    /// Per-design figures beyond the rows: break-even costs (null for designs
    /// that convert nothing).
    static func designFields(_ r: TransmitResult) -> [(String, JSONValue)] {
        let b = r.breakEven
        return [
            ("break_even_hypercall_ns", optional(b?.perCallNanoseconds, 0)),
            ("break_even_hypercall_page_ns", optional(b?.perPageNanoseconds, 0)),
            ("break_even_scale_of_modelled_cost", optional(b?.scaleOfModelledCost, 4)),
        ]
    }

    /// Per design, its rounds, median Gbps and paired ratio at each CPU
    /// distance (`CPUDistance`; 0 rounds and nulls where none was).
    static func distanceFields(_ r: TransmitResult) -> [(String, JSONValue)] {
        CPUDistance.allCases.flatMap { d -> [(String, JSONValue)] in
            let ratio = r.ratioSpread(at: d)
            return [("rounds_\(d.rawValue)", .int(ratio?.count ?? 0)),
                    ("gbps_\(d.rawValue)", optional(r.gbpsSpread(at: d)?.median, 2)),
                    ("ratio_\(d.rawValue)", optional(ratio?.median, 3)),
                    ("ratio_\(d.rawValue)_min", optional(ratio?.minimum, 3)),
                    ("ratio_\(d.rawValue)_max", optional(ratio?.maximum, 3))]
        }
    }

    /// The paired ratios split by how far apart the CPUs were when each pair
    /// ran (`CPUDistance`, from the hand-off probe before every run); nil
    /// when no run was probed.
    static func distanceSplit(_ report: Report) -> String? {
        let results = report.results
        guard let base = results.first(where: { $0.design == report.baseline }),
              !base.handoffSamples.isEmpty else { return nil }
        func count(_ d: CPUDistance) -> Int { base.roundDistances.filter { $0 == d }.count }
        let moved = base.roundDistances.filter { $0 == nil }.count
        var line = "CPU distance (a hand-off probe before and after every run; far from \(fixed(CPUDistance.farHandoffNanosecondsPerByte, 1)) ns/B): "
            + "\(report.baseline)'s runs found the CPUs near in \(count(.near)) round(s), far in \(count(.far)), and moved between the two in \(moved) of \(base.roundDistances.count)."
        let others = results.filter { $0.design != report.baseline }.compactMap { r -> String? in
            let parts = CPUDistance.allCases.compactMap { d in
                r.ratioSpread(at: d).map { "\(fixed($0.median, 2))x \(d.rawValue) [\(fixed($0.minimum, 2))-\(fixed($0.maximum, 2)), \($0.count)]" }
            }
            return parts.isEmpty ? nil : "\(r.design) " + parts.joined(separator: ", ")
        }
        if !others.isEmpty {
            line += " Paired ratios by distance, over the pairs whose probes all agreed [min-max, rounds]: " + others.joined(separator: "; ") + "."
        }
        return line
    }

    static func optional(_ value: Double?, _ digits: Int) -> JSONValue {
        value.map { .double($0, digits: digits) } ?? .null
    }

    /// Frames per queue batch that separates a round in which each sender
    /// transmitted its own frame (about 1) from one in which a backlog was
    /// drained in batches.
    static let batchedRegimeFrames = 2.0

    /// A line for a design whose rounds fell on both sides of
    /// `batchedRegimeFrames`: how many in each regime and their median Gbps
    /// (Design/netstack.md, "Bounce's two regimes at two senders on one
    /// queue"); nil when every round was in one regime.
    static func regimeSplit(_ r: TransmitResult) -> String? {
        let rounds = zip(r.roundFramesPerBatch, r.roundGbps)
        let batched = rounds.filter { $0.0 >= batchedRegimeFrames }.map(\.1)
        let perFrame = rounds.filter { $0.0 < batchedRegimeFrames }.map(\.1)
        guard !batched.isEmpty, !perFrame.isEmpty else { return nil }
        let total = batched.count + perFrame.count
        return "Regimes: \(r.design)'s rounds split: \(batched.count) of \(total) batched (\(fixed(batchedRegimeFrames, 0)) or more frames per queue batch), "
            + "median \(fixed(Spread(batched)?.median ?? 0, 1)) Gbps; \(perFrame.count) per frame (each sender transmitting its own frame), "
            + "median \(fixed(Spread(perFrame)?.median ?? 0, 1)) Gbps."
            + distanceCounts(r) + " Its ratios move with the split (Design/netstack.md)."
    }

    /// The regimes against the CPU distance, run by run: how many batched
    /// and per-frame runs found the CPUs near, far, or moving.
    static func distanceCounts(_ r: TransmitResult) -> String {
        let distances = r.runDistances
        guard !distances.isEmpty, distances.count == r.runFramesPerBatch.count else { return "" }
        func counts(_ batched: Bool) -> String {
            let runs = zip(r.runFramesPerBatch, distances).filter { ($0.0 >= batchedRegimeFrames) == batched }.map(\.1)
            return "\(runs.filter { $0 == .near }.count) near, \(runs.filter { $0 == .far }.count) far, \(runs.filter { $0 == nil }.count) moved"
        }
        return " Its \(distances.count) runs by CPU distance (probes before and after each): batched \(counts(true)); per frame \(counts(false))."
    }

    static func table(_ report: Report) -> String {
        let results = report.results
        guard let first = results.first else { return "(no results)" }
        let w = first.workload
        var lines: [String] = []
        let rounds = report.roundCount
        lines.append("Workload: \(w.senders) senders, \(w.queues) queues, \(w.flows) flows, \(w.messageBytes) B messages, rtt \(w.roundTripMicroseconds) us, \(rounds) round(s) of \(fixed(w.durationSeconds / Double(report.comparison.plan.rounds), 3)) s per design\(rounds > 1 ? ", \(report.baseline) before, between and after the others, their order rotated each round (Gbps: median round; ratios: median of per-round paired ratios)" : "")\(w.verify ? ", verify" : "")\(w.zeroCopy ? ", MSG_ZEROCOPY" : "")\(w.zeroCopyMix.map { ", SO_ZEROCOPY, MSG_ZEROCOPY on \(fixed($0 * 100, 0))% of sendmsg calls" } ?? "")\(w.lineRateGbps.map { ", line rate \(fixed($0, 1)) Gbit/s" } ?? "")")
        if let guest = results.first(where: { $0.design == "page-pool" })?.guestDescription ?? results.first?.guestDescription,
           !guest.isEmpty {
            lines.append("Guest: " + guest + "; every design on a fresh guest, set up before the clock starts (not timed)")
        }
        if report.configuration.preemptRT {
            let rt = report.configuration.rtScheduling
            lines.append("Kernel: CONFIG_PREEMPT_RT (modelled: page_pool_napi_local is false, every TX pool recycle takes the ring; "
                         + "transmit sections run in \(rt.tasksPerCPU) preemptible tasks per modelled CPU sharing its per-CPU state, "
                         + "a task preempted at a preemption point with probability 1/\(rt.preemptEvery) (--preempt-every, an assumption; seed \(rt.seed)); "
                         + "current_tx_socket \(rt.pointer == .perCPU ? "per CPU (the seed patch)" : "per task (the fix)"); "
                         + "preemptions are modelled events, counted on their own line, not a cost spent)")
        }
        let c = report.comparison
        lines.append("Machine: memcpy of \(c.copyRateBefore.copyBytes) B (the workload's largest copy), cache resident: "
                     + "1 thread \(fixed(c.copyRateBefore.oneThreadGigabytesPerSecond, 1)) -> \(fixed(c.copyRateAfter.oneThreadGigabytesPerSecond, 1)) GB/s, "
                     + "2 threads \(fixed(c.copyRateBefore.twoThreadsGigabytesPerSecond, 1)) -> \(fixed(c.copyRateAfter.twoThreadsGigabytesPerSecond, 1)) GB/s "
                     + "(before -> after the rounds); load average \(report.loadBefore.text) -> \(report.loadAfter.text)")
        if c.copyRateBefore.workingSetBytes > 0 {
            lines.append("Machine: the same copies walking the workload's user buffers (\(c.copyRateBefore.workingSetBytes >> 20) MiB source, as much destination): "
                         + "1 thread \(fixed(c.copyRateBefore.workingSetGigabytesPerSecond, 1)) -> \(fixed(c.copyRateAfter.workingSetGigabytesPerSecond, 1)) GB/s")
        }
        if c.copyRateBefore.handoffNanosecondsPerByte > 0 {
            lines.append("Machine: overwriting \(c.copyRateBefore.copyBytes) B right after another CPU read it (copy 1 into a page whose lines the CPU that bounced it still holds): "
                         + "\(fixed(c.copyRateBefore.handoffNanosecondsPerByte, 3)) -> \(fixed(c.copyRateAfter.handoffNanosecondsPerByte, 3)) ns/B, "
                         + "\(fixed(c.copyRateBefore.handoffFactor, 1))x -> \(fixed(c.copyRateAfter.handoffFactor, 1))x the same overwrite after this CPU's own write")
        }
        if let split = distanceSplit(report) { lines.append(split) }
        for r in results {
            if let split = regimeSplit(r) { lines.append(split) }
        }
        let p = report.provenance
        lines.append("Build: swift-dma-pools \(p.gitRevision)\(p.gitTreeModified == true ? " (modified)" : ""), \(p.buildConfiguration)"
                     + (p.invariantChecks ? ", invariant checks on (their cost is in every timed figure)" : ""))
        let labelWidth = 38
        let columnWidth = max(16, results.map { $0.design.count + 2 }.max() ?? 0)
        let iommuRun = results.contains { $0.platform == "iommu" }
        let headRun = results.contains { $0.workload.headerBytes > 0 }
        for row in rows + laterRows + (iommuRun ? iommuRows : []) + rtRows + (headRun ? headRows : []) {
            var line = row.label.padded(labelWidth)
            for r in results { line += row.value(r).text.leftPadded(columnWidth) }
            lines.append(line)
        }
        // Design-specific figures, grouped by design.
        for r in results where !r.designFigures.isEmpty {
            lines.append("")
            lines.append("\(r.design):")
            for figure in r.designFigures { lines.append("  " + figure.name.padded(labelWidth - 2) + figure.text) }
        }
        var problems = results.compactMap { r in r.firstProblem.map { "\(r.design): \($0)" } }
        for r in results where r.payloadBytes == 0 {
            problems.append("\(r.design): moved no payload bytes in \(fixed(r.seconds, 3)) s: the result means nothing")
        }
        for r in results where r.misattributedLearnings + r.socketUseAfterFree > 0 {
            problems.append("\(r.design): preempted inside transmit sections, the per-CPU current_tx_socket led \(r.misattributedLearnings) learnings to another live socket "
                            + "and \(r.socketUseAfterFree) to a socket already freed (a use after free)")
        }
        for r in results where r.framesAbandoned > 0 {
            problems.append("\(r.design): \(r.framesAbandoned) frames (\(r.bytesAbandoned) bytes) still queued at the drain limit were abandoned, not sent (their pages came home)")
        }
        if !problems.isEmpty {
            lines.append("")
            lines.append("Problems:")
            lines.append(contentsOf: problems.map { "  " + $0 })
        }
        if results.count > 1 {
            lines.append("")
            lines.append("Throughput relative to \(report.baseline), paired: each run's Gbps over the geometric mean of \(report.baseline)'s runs just before and after it in the same round; median of \(rounds) rounds [min-max] (interquartile range):")
            for r in results {
                guard let spread = r.ratioSpread else { continue }
                lines.append("  " + r.design.padded(labelWidth - 2) + fixed(spread.median, 2) + "x  [" + fixed(spread.minimum, 2) + "-" + fixed(spread.maximum, 2)
                             + "]  (IQR " + fixed(spread.lowerQuartile, 2) + "-" + fixed(spread.upperQuartile, 2) + ", +-" + fixed(spread.quartileDeviation * 100, 1) + "%)"
                             + (r.cpuRatioSpread.map { "; CPU per GB: " + fixed($0.median, 2) + "x less [" + fixed($0.minimum, 2) + "-" + fixed($0.maximum, 2) + "]" } ?? ""))
            }
            if c.plan.untilStableCap != nil {
                lines.append("  " + (c.stable ? "stable: every ratio's IQR within +-5% of its median after \(rounds) rounds"
                                              : "NOT stable: some ratio's IQR is wider than +-5% after the cap of \(rounds) rounds"))
            }
        }
        let h = report.configuration.memory.hypercall
        lines.append("")
        lines.append("Modelled: the conversion hypercall costs \(h.perCallNanoseconds) ns + \(h.perPageNanoseconds) ns/page by assumption (no published figure; vary --hypercall-ns, --hypercall-page-ns), "
                     + (h.charge == .spin ? "spun inside the measured figures; 'modelled share of CPU time' says how much of each design's CPU it is."
                                          : "only accounted (account-only): no measured figure includes it."))
        for r in results {
            guard let b = r.breakEven, r.design != report.baseline else { continue }
            if b.perCallNanoseconds > 0 {
                lines.append("Break-even: \(r.design) would match \(report.baseline) at \(fixed(b.perCallNanoseconds, 0)) ns per conversion call (no per-page cost) "
                             + "or \(fixed(b.perPageNanoseconds, 0)) ns per page converted (no per-call cost), \(fixed(b.scaleOfModelledCost, 3))x the modelled cost; "
                             + "median of \(r.roundBreakEven.count) rounds, taking the modelled time, spun in the serialised transmit path, as on the critical path.")
            } else {
                lines.append("Break-even: none: \(r.design) stays below \(report.baseline) even with free conversions (its measured work alone takes \(fixed(-b.budgetSecondsPerGB, 4)) s per GB more than \(report.baseline)'s; median of \(r.roundBreakEven.count) rounds).")
            }
        }
        if let c = report.configuration.platform.iommu {
            let k = c.costs
            lines.append("Modelled: IOMMU (\(c.mode.rawValue)) map \(k.mapNanoseconds) ns per call, \(k.pteNanoseconds) ns per PTE written or cleared, "
                         + "\(k.invalidateNanoseconds) ns per IOTLB invalidation (strict), \(k.flushNanoseconds) ns per flush of \(c.flushQueueSize) queued IOVAs (lazy), "
                         + "by assumption (no published per-operation figure; vary --iommu-map-ns, --iommu-pte-ns, --iommu-invalidate-ns, --iommu-flush-ns), "
                         + (k.charge == .spin ? "spun inside the measured figures ('modelled IOMMU share of CPU time')." : "only accounted (account-only)."))
            for saving in iommuSavings(results, baseline: report.baseline) {
                let threshold = fixed(iommuSavingThreshold * 100, 0)
                lines.append("IOMMU: \(saving.design) does \(fixed(saving.operationsSavedPerGB, 0)) fewer IOMMU operations per GB than \(report.baseline) "
                             + "and saves \(fixed(saving.modelledSecondsSavedPerGB * 1000, 2)) ms of modelled IOMMU time per GB; "
                             + (saving.scaleAtThreshold.map { "the saving is below \(threshold)% of \(report.baseline)'s CPU per GB once every IOMMU cost is below \(fixed($0, 3))x the modelled ones (map \(fixed(Double(k.mapNanoseconds) * $0, 0)) ns, PTE \(fixed(Double(k.pteNanoseconds) * $0, 1)) ns, invalidation \(fixed(Double(k.invalidateNanoseconds) * $0, 0)) ns)." }
                                ?? "it saves nothing, or never \(threshold)% of \(report.baseline)'s CPU per GB."))
            }
        }
        lines.append("")
        lines.append("What these are: Gbps and GB/s are this machine's rates with copies that mostly hit its caches, not a NIC's or a real guest's. "
                     + "What carries over to a real guest: bytes copied per payload byte, the paired ratios, and CPU per GB by role "
                     + "(also given in copies at this machine's memcpy rate).")
        return lines.joined(separator: "\n")
    }

    static func json(_ report: Report) -> String {
        let run = runFields(report)
        let objects = report.results.map { r -> String in
            var fields = rows.map { "\"\($0.key)\": \($0.value(r).json)" }
            fields += (designFields(r) + run).map { "\"\($0.0)\": \($0.1.json)" }
            fields += laterRows.map { "\"\($0.key)\": \($0.value(r).json)" }
            fields += iommuRows.map { "\"\($0.key)\": \($0.value(r).json)" }
            fields += iommuRunFields(report).map { "\"\($0.0)\": \($0.1.json)" }
            if let saving = iommuSavings(report.results, baseline: report.baseline).first(where: { $0.design == r.design }) {
                fields.append("\"iommu_operations_saved_per_gb\": \(JSONValue.double(saving.operationsSavedPerGB, digits: 1).json)")
                fields.append("\"iommu_modelled_s_saved_per_gb\": \(JSONValue.double(saving.modelledSecondsSavedPerGB, digits: 5).json)")
                fields.append("\"iommu_cost_scale_at_5_percent\": \(optional(saving.scaleAtThreshold, 4).json)")
            }
            fields += rtRows.map { "\"\($0.key)\": \($0.value(r).json)" }
            fields += rtFields(report).map { "\"\($0.0)\": \($0.1.json)" }
            fields += headRows.map { "\"\($0.key)\": \($0.value(r).json)" }
            fields += distanceFields(r).map { "\"\($0.0)\": \($0.1.json)" }
            // Each round's figures, in round order, so the spread can be re-examined.
            func array(_ values: [Double], _ digits: Int) -> String { "[" + values.map { JSONValue.double($0, digits: digits).json }.joined(separator: ", ") + "]" }
            fields.append("\"round_gbps\": " + array(r.roundGbps, 2))
            fields.append("\"round_frames_per_queue_batch\": " + array(r.roundFramesPerBatch, 2))
            fields.append("\"round_handoff_ns_per_byte\": " + array(r.roundHandoff, 3))
            // Run by run (a round of the baseline has several), when probed.
            fields.append("\"run_handoff_ns_per_byte\": " + array(r.handoffSamples, 3))
            fields.append("\"run_frames_per_queue_batch\": " + array(r.runFramesPerBatch, 2))
            fields.append("\"run_gbps\": " + array(r.runGbps, 2))
            fields.append("\"round_ratios\": " + array(r.roundRatios, 3))
            fields.append("\"round_cpu_ratios\": " + array(r.roundCPURatios, 3))
            let figures = r.designFigures.map { "\"\(escaped($0.name))\": \"\(escaped($0.text))\"" }.joined(separator: ", ")
            fields.append("\"figures\": {\(figures)}")
            // The same figures typed: a counter, counters (in the name's order) or a label, with its unit.
            let typed = r.designFigures.map { f -> String in
                let value = switch f.value {
                case .count(let n): String(n)
                case .counts(let values): "[" + values.map(String.init).joined(separator: ", ") + "]"
                case .text(let s): "\"" + escaped(s) + "\""
                }
                return "{\"name\": \"\(escaped(f.name))\", \"unit\": \"\(escaped(f.unit))\", \"value\": \(value)}"
            }
            fields.append("\"design_figures\": [" + typed.joined(separator: ", ") + "]")
            fields.append("\"first_problem\": " + (r.firstProblem.map { "\"" + escaped($0) + "\"" } ?? "null"))
            return "  {" + fields.joined(separator: ", ") + "}"
        }
        return "[\n" + objects.joined(separator: ",\n") + "\n]"
    }

    static func csv(_ report: Report) -> String {
        let run = runFields(report)
        let iommuRun = iommuRunFields(report)
        let extraKeys = (report.results.first.map(designFields) ?? []).map(\.0) + run.map(\.0) + laterRows.map(\.key)
            + iommuRows.map(\.key) + iommuRun.map(\.0) + rtRows.map(\.key) + rtFields(report).map(\.0) + headRows.map(\.key)
            + (report.results.first.map(distanceFields) ?? []).map(\.0)
        var out = (rows.map(\.key) + extraKeys).joined(separator: ",") + "\n"
        for r in report.results {
            let values = rows.map { $0.value(r) } + (designFields(r) + run).map(\.1) + laterRows.map { $0.value(r) }
                + iommuRows.map { $0.value(r) } + iommuRun.map(\.1) + rtRows.map { $0.value(r) } + rtFields(report).map(\.1)
                + headRows.map { $0.value(r) } + distanceFields(r).map(\.1)
            out += values.map { v in
                if case .string(let s) = v { return "\"" + s.replacingAll("\"", with: "\"\"") + "\"" }
                return v.json
            }.joined(separator: ",") + "\n"
        }
        return out
    }

    /// Three panels: throughput with the spread over rounds as error bars,
    /// the paired ratio to the baseline with its spread, and bytes copied
    /// per payload byte; then every setting that produced them.
    static func svg(_ report: Report) -> String {
        let results = report.results
        let settings = report.settings
        let width = 860, panelHeight = 220, top = 60, left = 70, barGap = 18  // pixels
        let height = top + 3 * (panelHeight + 20) + 20 + 16 * settings.count
        let barWidth = max(30, (width - left - 40) / max(1, results.count) - barGap)
        let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        if let w = results.first?.workload {
            s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">TX designs in a confidential VM: \(w.senders) senders, \(w.queues) queue(s), \(w.flows) flows, \(w.messageBytes) B messages</text>\n"
            s += "<text x=\"\(width / 2)\" y=\"40\" text-anchor=\"middle\" fill=\"#555\">\(report.roundCount) interleaved rounds, every design on a fresh guest; bars: median round, error bars: slowest to fastest round</text>\n"
        }
        func panel(_ title: String, y0: Int, value: (TransmitResult) -> (median: Double, low: Double, high: Double)?, digits: Int) {
            let plot = panelHeight - 60
            let maxValue = max(1e-9, results.compactMap { value($0)?.high }.max() ?? 1) * 1.15
            s += "<text x=\"\(left)\" y=\"\(y0 + 14)\" font-weight=\"bold\">\(xmlEscaped(title))</text>\n"
            let baseY = y0 + 30 + plot
            s += "<line x1=\"\(left)\" y1=\"\(baseY)\" x2=\"\(width - 20)\" y2=\"\(baseY)\" stroke=\"#333\"/>\n"
            for tick in 0...4 {
                let v = maxValue * Double(tick) / 4
                let y = baseY - Int(Double(plot) * Double(tick) / 4)
                s += "<line x1=\"\(left - 4)\" y1=\"\(y)\" x2=\"\(width - 20)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
                s += "<text x=\"\(left - 8)\" y=\"\(y + 4)\" text-anchor=\"end\" fill=\"#555\">\(fixed(v, digits))</text>\n"
            }
            func y(_ v: Double) -> Int { baseY - Int(Double(plot) * min(1, max(0, v / maxValue))) }
            for (i, r) in results.enumerated() {
                let x = left + 20 + i * (barWidth + barGap)
                s += "<text x=\"\(x + barWidth / 2)\" y=\"\(baseY + 16)\" text-anchor=\"middle\">\(xmlEscaped(r.design))</text>\n"
                guard let v = value(r) else { continue }
                s += "<rect x=\"\(x)\" y=\"\(y(v.median))\" width=\"\(barWidth)\" height=\"\(baseY - y(v.median))\" fill=\"\(palette[i % palette.count])\"/>\n"
                if v.high > v.low {
                    let cx = x + barWidth / 2
                    s += "<line x1=\"\(cx)\" y1=\"\(y(v.low))\" x2=\"\(cx)\" y2=\"\(y(v.high))\" stroke=\"#000\"/>\n"
                    for end in [v.low, v.high] {
                        s += "<line x1=\"\(cx - 6)\" y1=\"\(y(end))\" x2=\"\(cx + 6)\" y2=\"\(y(end))\" stroke=\"#000\"/>\n"
                    }
                }
                s += "<text x=\"\(x + barWidth / 2 + 8)\" y=\"\(y(v.high) - 5)\" text-anchor=\"start\">\(fixed(v.median, digits))</text>\n"
            }
        }
        panel("Throughput, Gbit/s of payload on this machine (higher is better)", y0: top,
              value: { r in (r.gbps, r.gbpsRange.lowerBound, r.gbpsRange.upperBound) }, digits: 1)
        panel("Throughput relative to \(report.baseline), paired within each round (higher is better)", y0: top + panelHeight + 20,
              value: { r in r.ratioSpread.map { ($0.median, $0.minimum, $0.maximum) } }, digits: 2)
        panel("Bytes copied per payload byte (lower is better)", y0: top + 2 * (panelHeight + 20),
              value: { r in (r.copiesPerByte, r.copiesPerByte, r.copiesPerByte) }, digits: 2)
        var y = top + 3 * (panelHeight + 20) + 8
        for line in settings {
            s += "<text x=\"10\" y=\"\(y)\" font-size=\"10\" fill=\"#333\">\(xmlEscaped(line))</text>\n"
            y += 16
        }
        s += "</svg>\n"
        return s
    }

    /// Text for SVG: the XML specials escaped.
    package static func xmlEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            switch c {
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "&": out += "&amp;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }

    /// Text for a JSON string: quotes, backslashes and control characters
    /// escaped, and `<` and `&` too (so the JSON can sit in HTML).
    package static func escaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "<": out += "\\u003c"
            case "&": out += "\\u0026"
            default: c.value < 0x20 ? (out += "\\u00" + (c.value < 16 ? "0" : "") + String(c.value, radix: 16)) : out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

extension String {
    func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for c in self { if c == target { out += replacement } else { out.append(c) } }
        return out
    }
}
