import ArgumentParser
import DMAPools
import NetStack
import NetStackReports

/// `txsim shared`: network TX, block I/O and slab users on one guest at
/// once, sharing its one pre-decrypted allocator, against the same run with
/// general (bounced) buffers; the two alternate round by round (see
/// `SharedSimulation`).
struct Shared: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Network TX, block I/O and slab users at once on one pre-decrypted allocator, against general (bounced) buffers.",
        discussion: """
        Each round runs twice on a fresh guest: once with --design (default decrypted-pool: socket pages and \
        128-byte linear heads from the guest's pre-decrypted allocator) and the block device's and slab users' \
        buffers from the same allocator; once with --general-design (default frag-refill, the seed patch, whose \
        free-path hook then sees the block and slab users' frees) and general buffers, which bounce. Every byte \
        is checked by the device that reads it; every page and slab object comes home.
        """)

    @OptionGroup var workload: WorkloadOptions
    @OptionGroup var guest: GuestOptions
    @Option(help: "The TX design of the pre-decrypted run, one of \(DesignRegistry.shared.designNames).")
    var design: String = "decrypted-pool"
    @Option(name: .customLong("general-design"), help: "The TX design of the general run, one of \(DesignRegistry.shared.designNames).")
    var generalDesign: String = "frag-refill"
    @OptionGroup var requests: BlockRequestOptions
    @Option(name: .customLong("slab-sizes"), parsing: .unconditional,
            help: "Slab users' object sizes in bytes, taken in turn, comma-separated, each 1...2048.")
    var slabSizes: String = "64,256,1024"
    @Option(name: .customLong("slab-batch"), parsing: .unconditional, help: "Slab objects mapped at once, 1...1024.")
    var slabBatch: Int = 32
    @OptionGroup var sweep: SweepOptions

    func kinds() throws -> (predecrypted: any TransmitDesignKind, general: any TransmitDesignKind) {
        do {
            return (try DesignRegistry.shared.design(named: design, parameter: "design"),
                    try DesignRegistry.shared.design(named: generalDesign, parameter: "general-design"))
        } catch {
            throw ValidationError(error.description)
        }
    }

    func sharedWorkload() throws -> SharedSimulation.Workload {
        var w = SharedSimulation.Workload()
        do {
            var t = try workload.workload()
            t.headerBytes = workload.headerBytes ?? SharedSimulation.defaultHeaderBytes
            t.verify = true   // every user's bytes are checked: the NIC's too
            w.transmit = t
            try requests.apply(to: &w.block)
            w.slab.objectSizes = try sweepList(slabSizes, option: "slab-sizes", range: 1...2048)
            w.slab.batch = slabBatch
            try w.validate()
        } catch let error as ParameterError {
            throw ValidationError(error.description)
        }
        return w
    }

    func validate() throws {
        let w = try sharedWorkload()
        do { try SharedSimulation.check(try guest.configuration()) } catch let error as ParameterError {
            throw ValidationError(error.description)
        }
        let (p, g) = try kinds()
        for kind in [p, g] {
            do { try Experiment.check([kind], workload: w.transmit, configuration: try guest.configuration()) } catch let error as ExperimentError {
                throw ValidationError(error.description)
            }
        }
    }

    func run() throws {
        let w = try sharedWorkload()
        let (p, g) = try kinds()
        let configuration = try guest.configuration()
        var results: [SharedSimulation.Buffers: [SharedSimulation.Result]] = [:]
        for round in 0..<sweep.rounds {
            let order: [SharedSimulation.Buffers] = round % 2 == 0 ? [.general, .predecrypted] : [.predecrypted, .general]
            for buffers in order {
                let kind = buffers == .general ? g : p
                if !sweep.quiet { printError("txsim:   round \(round + 1): \(buffers.rawValue) buffers, TX design \(kind.name)") }
                results[buffers, default: []].append(try SharedSimulation.run(kind, buffers: buffers, workload: w, configuration: configuration))
            }
        }
        let general = results[.general] ?? [], pooled = results[.predecrypted] ?? []
        let rows = [(SharedSimulation.Buffers.general, general), (.predecrypted, pooled)]
        if sweep.json {
            print("[\n" + rows.map { "  " + ProjectionFormat.object(Self.fields($0.0, $0.1, general: general)) }.joined(separator: ",\n") + "\n]")
        } else {
            print(table(rows, general: general, workload: w))
        }
        if !(general + pooled).allSatisfy(\.passed) { throw ExitCode(2) }
    }

    static func median(_ values: [Double]) -> Double { Spread(values)?.median ?? 0 }
    static func total(_ rs: [SharedSimulation.Result], _ f: (SharedSimulation.Result) -> Int) -> Int { rs.reduce(0) { $0 + f($1) } }
    static func ratio(_ rs: [SharedSimulation.Result], _ general: [SharedSimulation.Result], _ f: (SharedSimulation.Result) -> Double) -> Double {
        median(zip(rs, general).map { f($0) / max(f($1), 1e-12) })
    }

    /// One JSON object per buffer source: every figure of the three users,
    /// the allocator's, the hook's, and the verdict.
    static func fields(_ source: SharedSimulation.Buffers, _ rs: [SharedSimulation.Result],
                       general: [SharedSimulation.Result]) -> [(String, ResultFormat.JSONValue)] {
        typealias V = ResultFormat.JSONValue
        let chunk = rs.first?.chunkBytes ?? 0
        func d(_ f: (SharedSimulation.Result) -> Double, _ digits: Int = 3) -> V { .double(median(rs.map(f)), digits: digits) }
        func i(_ f: (SharedSimulation.Result) -> Int) -> V { .int(total(rs, f)) }
        func m(_ f: (SharedSimulation.Result) -> Int) -> V { .int(rs.map(f).max() ?? 0) }
        return [
            ("source", .string(source.rawValue)),
            ("design", .string(rs.first?.transmit.design ?? "")),
            ("rounds", .int(rs.count)),
            ("tx_gbps", d(\.transmit.gbps, 2)),
            ("tx_ratio_to_general", .double(ratio(rs, general) { $0.transmit.gbps }, digits: 3)),
            ("tx_copies_per_byte", d(\.transmitCopiesPerByte)),
            ("tx_head_copies_per_byte", d(\.transmit.headCopiesPerByte)),
            ("tx_payload_bytes", i(\.transmit.payloadBytes)),
            ("tx_verified_bytes", i(\.transmit.verifiedBytes)),
            ("tx_header_bytes", .int(rs.first?.transmit.workload.headerBytes ?? 0)),
            ("tx_head_bytes", i(\.transmit.headBytes)),
            ("tx_head_verified_bytes", i(\.transmit.headVerifiedBytes)),
            ("tx_head_bytes_bounced", i(\.transmit.headBytesBounced)),
            ("tx_head_slab_peak_pages", m(\.transmit.headSlabPeakPages)),
            ("block_gbyte_per_s", d(\.block.gigabytesPerSecond)),
            ("block_ratio_to_general", .double(ratio(rs, general) { $0.block.gigabytesPerSecond }, digits: 3)),
            ("block_copies_per_byte", d(\.block.copiesPerByte)),
            ("block_requests", i(\.block.requests)),
            ("block_bytes", i(\.block.bytes)),
            ("block_bytes_bounced", i(\.block.bytesBounced)),
            ("block_verified_bytes", i(\.block.verifiedBytes)),
            ("block_frees", i(\.block.frees)),
            ("slab_gbyte_per_s", d(\.slab.gigabytesPerSecond)),
            ("slab_ratio_to_general", .double(ratio(rs, general) { $0.slab.gigabytesPerSecond }, digits: 3)),
            ("slab_copies_per_byte", d(\.slab.copiesPerByte)),
            ("slab_objects", i(\.slab.objects)),
            ("slab_bytes", i(\.slab.bytes)),
            ("slab_bytes_bounced", i(\.slab.bytesBounced)),
            ("slab_verified_bytes", i(\.slab.verifiedBytes)),
            ("slab_peak_pages", m(\.slab.peakPages)),
            ("slab_pages_returned", i(\.slab.pagesReturned)),
            ("slab_objects_lost", i(\.slab.objectsLost)),
            ("chunks_converted", i(\.chunksConverted)),
            ("peak_chunks_held", m(\.peakChunksHeld)),
            ("peak_shared_bytes", .int((rs.map(\.peakChunksHeld).max() ?? 0) * chunk)),
            ("peak_live_pages", m(\.peakLivePages)),
            ("chunks_held_end", i(\.chunksHeldAtEnd)),
            ("live_pages_end", i(\.livePagesAtEnd)),
            ("swiotlb_peak_slots", m(\.transmit.swiotlbPeakSlots)),
            ("hook_installed", .bool(rs.contains(where: \.hookInstalled))),
            ("hook_checks", i(\.hookChecks)),
            ("hook_checks_unrelated_to_networking", i(\.hookChecksUnrelated)),
            ("hook_ns_per_check", d(\.hookNanosecondsPerCheck, 2)),
            ("hook_time_us_estimated", .double(rs.reduce(0) { $0 + $1.hookMicroseconds }, digits: 1)),
            ("hook_time_unrelated_us_estimated", .double(rs.reduce(0) { $0 + $1.hookMicrosecondsUnrelated }, digits: 1)),
            ("corrupt_bytes", i { $0.transmit.corruptBytes + $0.block.corruptBytes + $0.slab.corruptBytes }),
            ("dma_faults", i { $0.transmit.dmaFaults + $0.block.dmaFaults + $0.slab.dmaFaults }),
            ("lost_pages", i(\.lostPages)),
            ("passed", .bool(rs.allSatisfy(\.passed))),
        ]
    }

    func table(_ rows: [(SharedSimulation.Buffers, [SharedSimulation.Result])], general: [SharedSimulation.Result],
               workload w: SharedSimulation.Workload) -> String {
        typealias S = Self
        var lines: [String] = []
        let t = w.transmit
        lines.append("Shared run: TX (\(t.senders) senders, \(t.flows) flows, \(t.messageBytes) B messages, \(t.headerBytes) B linear heads), "
                     + "block I/O (\(requests.requestKiB) KiB, \(fixed(requests.readFraction * 100, 0))% reads, depth \(requests.queueDepth), buffers per request), "
                     + "slab users (\(slabSizes) B objects, \(slabBatch) at once) on one guest at once; \(sweep.rounds) round(s) of "
                     + "\(fixed(t.durationSeconds, 2)) s per source, alternating; every byte checked")
        let width = 44
        let column = 18
        func line(_ label: String, _ f: (SharedSimulation.Buffers, [SharedSimulation.Result]) -> String) {
            lines.append(label.padded(width) + rows.map { f($0.0, $0.1).leftPadded(column) }.joined())
        }
        line("buffers") { b, _ in b.rawValue }
        line("TX design") { _, rs in rs.first?.transmit.design ?? "" }
        line("TX Gbps (median round)") { _, rs in fixed(S.median(rs.map(\.transmit.gbps)), 2) }
        line("TX ratio to general") { b, rs in b == .general ? "1.00x" : fixed(S.ratio(rs, general) { $0.transmit.gbps }, 2) + "x" }
        line("TX payload copies per byte") { _, rs in fixed(S.median(rs.map(\.transmitCopiesPerByte)), 2) }
        line("TX linear-head copies per header byte") { _, rs in fixed(S.median(rs.map(\.transmit.headCopiesPerByte)), 2) }
        line("block GB/s") { _, rs in fixed(S.median(rs.map(\.block.gigabytesPerSecond)), 2) }
        line("block ratio to general") { b, rs in b == .general ? "1.00x" : fixed(S.ratio(rs, general) { $0.block.gigabytesPerSecond }, 2) + "x" }
        line("block copies per byte") { _, rs in fixed(S.median(rs.map(\.block.copiesPerByte)), 2) }
        line("slab GB/s") { _, rs in fixed(S.median(rs.map(\.slab.gigabytesPerSecond)), 3) }
        line("slab ratio to general") { b, rs in b == .general ? "1.00x" : fixed(S.ratio(rs, general) { $0.slab.gigabytesPerSecond }, 2) + "x" }
        line("slab copies per byte") { _, rs in fixed(S.median(rs.map(\.slab.copiesPerByte)), 2) }
        line("slab objects mapped") { _, rs in "\(S.total(rs, \.slab.objects))" }
        line("pre-decrypted chunks converted") { _, rs in "\(S.total(rs, \.chunksConverted))" }
        line("pre-decrypted peak held (chunks)") { _, rs in "\(rs.map(\.peakChunksHeld).max() ?? 0)" }
        line("pre-decrypted peak pages in use") { _, rs in "\(rs.map(\.peakLivePages).max() ?? 0)" }
        line("pre-decrypted held at end (chunks/pages)") { _, rs in "\(S.total(rs, \.chunksHeldAtEnd))/\(S.total(rs, \.livePagesAtEnd))" }
        line("swiotlb peak slots") { _, rs in "\(rs.map(\.transmit.swiotlbPeakSlots).max() ?? 0)" }
        line("free-path hook checks") { _, rs in rs.contains(where: \.hookInstalled) ? "\(S.total(rs, \.hookChecks))" : "no hook" }
        line("  on frees unrelated to networking") { _, rs in rs.contains(where: \.hookInstalled) ? "\(S.total(rs, \.hookChecksUnrelated))" : "-" }
        line("free-path hook time, estimated (us)") { _, rs in rs.contains(where: \.hookInstalled) ? fixed(rs.reduce(0) { $0 + $1.hookMicroseconds }, 0) : "-" }
        line("  on frees unrelated to networking (us)") { _, rs in rs.contains(where: \.hookInstalled) ? fixed(rs.reduce(0) { $0 + $1.hookMicrosecondsUnrelated }, 0) : "-" }
        line("bytes verified (TX+heads+block+slab)") { _, rs in "\(S.total(rs) { $0.transmit.verifiedBytes + $0.transmit.headVerifiedBytes + $0.block.verifiedBytes + $0.slab.verifiedBytes })" }
        line("corrupt bytes / DMA faults") { _, rs in "\(S.total(rs) { $0.transmit.corruptBytes + $0.block.corruptBytes + $0.slab.corruptBytes })/\(S.total(rs) { $0.transmit.dmaFaults + $0.block.dmaFaults + $0.slab.dmaFaults })" }
        line("pages lost / slab objects lost") { _, rs in "\(S.total(rs, \.lostPages))/\(S.total(rs) { $0.slab.objectsLost + $0.transmit.headObjectsLost })" }
        line("passed") { _, rs in rs.allSatisfy(\.passed) ? "yes" : "NO" }
        for (b, rs) in rows { for r in rs { if let p = r.problem { lines.append("FAILED (\(b.rawValue)): \(p)") } } }
        lines.append("Hook time: checks x the hook's cost per call on an ordinary page, timed after each run (as frag-refill's report row). "
                     + "Throughputs are this machine's, with every byte checked on both sides; the copies per byte carry over.")
        return lines.joined(separator: "\n")
    }
}
