import ArgumentParser
import DMAPools
import NetStack
import NetStackReports

/// `txsim block`: block I/O through the DMA API with buffers from the general
/// allocator (bounced) or the pre-decrypted allocator (mapped directly), the
/// two alternating round by round (see `BlockSimulation`).
struct Block: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Block I/O (reads and writes, 4-128 KiB) with bounced general buffers against pre-decrypted ones, every byte checked.")

    @OptionGroup var guest: GuestOptions
    @OptionGroup var requests: BlockRequestOptions
    @Option(parsing: .unconditional, help: "Seconds each source runs per round, 0.05...3600.")
    var duration: Double = 0.3
    @OptionGroup var sweep: SweepOptions

    func workload() throws -> BlockSimulation.Workload {
        var w = BlockSimulation.Workload()
        try requests.apply(to: &w)
        w.durationSeconds = duration
        do { try w.validate() } catch { throw ValidationError(error.description) }
        return w
    }

    func validate() throws { _ = try workload() }

    func run() throws {
        let w = try workload()
        let memory = try guest.configuration().memory
        var results: [BlockSimulation.BufferSource: [BlockSimulation.Result]] = [:]
        for round in 0..<sweep.rounds {
            let order: [BlockSimulation.BufferSource] = round % 2 == 0 ? [.general, .predecrypted] : [.predecrypted, .general]
            for source in order {
                if !sweep.quiet { printError("txsim:   round \(round + 1): \(source.rawValue) buffers") }
                results[source, default: []].append(try BlockSimulation.run(source: source, workload: w, memory: memory))
            }
        }
        let general = results[.general] ?? [], pooled = results[.predecrypted] ?? []
        let ratios = zip(pooled, general).map { $0.gigabytesPerSecond / max($1.gigabytesPerSecond, 1e-12) }
        func median(_ values: [Double]) -> Double { Spread(values)?.median ?? 0 }
        func total(_ rs: [BlockSimulation.Result], _ f: (BlockSimulation.Result) -> Int) -> Int { rs.reduce(0) { $0 + f($1) } }
        let rows: [(BlockSimulation.BufferSource, [BlockSimulation.Result])] = [(.general, general), (.predecrypted, pooled)]
        if sweep.json {
            let objects = rows.map { source, rs in
                "  {\"source\": \"\(source.rawValue)\", \"gbyte_per_s\": \(fixed(median(rs.map(\.gigabytesPerSecond)), 3)), "
                + "\"ratio_to_general\": \(source == .general ? "1.000" : fixed(median(ratios), 3)), "
                + "\"copies_per_byte\": \(fixed(median(rs.map(\.copiesPerByte)), 3)), \"requests\": \(total(rs, \.requests)), "
                + "\"reads\": \(total(rs, \.reads)), \"writes\": \(total(rs, \.writes)), \"bytes\": \(total(rs, \.bytes)), "
                + "\"bytes_bounced\": \(total(rs, \.bytesBounced)), \"verified_bytes\": \(total(rs, \.verifiedBytes)), "
                + "\"corrupt_bytes\": \(total(rs, \.corruptBytes)), \"dma_faults\": \(total(rs, \.dmaFaults)), "
                + "\"chunks_converted\": \(total(rs, \.chunksConverted)), \"lost_pages\": \(total(rs, \.lostPages)), "
                + "\"rounds\": \(rs.count), \"passed\": \(rs.allSatisfy(\.passed))}"
            }
            print("[\n" + objects.joined(separator: ",\n") + "\n]")
        } else {
            print("Block I/O: requests of \(requests.requestKiB) KiB in turn, \(fixed(requests.readFraction * 100, 0))% reads, queue depth \(requests.queueDepth), "
                  + "\(sweep.rounds) round(s) of \(fixed(duration, 2)) s per source, the two alternating; every byte checked")
            print("  " + "buffers".padded(16) + "GB/s".padded(9) + "ratio".padded(9) + "copies/byte".padded(13) + "requests".padded(11)
                  + "bounced".padded(14) + "chunks converted".padded(18) + "corrupt".padded(9) + "faults".padded(8) + "lost")
            for (source, rs) in rows {
                print("  " + source.rawValue.padded(16) + fixed(median(rs.map(\.gigabytesPerSecond)), 2).padded(9)
                      + (source == .general ? "1.00x" : fixed(median(ratios), 2) + "x").padded(9)
                      + fixed(median(rs.map(\.copiesPerByte)), 2).padded(13) + "\(total(rs, \.requests))".padded(11)
                      + "\(total(rs, \.bytesBounced))".padded(14) + "\(total(rs, \.chunksConverted))".padded(18)
                      + "\(total(rs, \.corruptBytes))".padded(9) + "\(total(rs, \.dmaFaults))".padded(8) + "\(total(rs, \.lostPages))"
                      + (rs.allSatisfy(\.passed) ? "" : "  FAILED: \(rs.compactMap(\.firstProblem).first ?? "")"))
            }
        }
        if !(general + pooled).allSatisfy(\.passed) { throw ExitCode(2) }
    }
}

/// The block requests' options, shared by `txsim block` and `txsim shared`.
struct BlockRequestOptions: ParsableArguments {
    @Option(name: .customLong("request-kib"), parsing: .unconditional,
            help: "Block request sizes in KiB, taken in turn, comma-separated, each 1...128 (multiples of 0.5 KiB are not offered here).")
    var requestKiB: String = "4,8,16,32,64,128"
    @Option(name: .customLong("read-fraction"), parsing: .unconditional, help: "Share of block requests that are reads, 0...1.")
    var readFraction: Double = 0.5
    @Option(name: .customLong("queue-depth"), parsing: .unconditional, help: "Block requests mapped at once, 1...64.")
    var queueDepth: Int = 8

    /// Sets `w`'s request sizes, read fraction and queue depth; a bad size list
    /// is refused by name (`--request-kib`).
    func apply(to w: inout BlockSimulation.Workload) throws {
        w.requestSizes = try sweepList(requestKiB, option: "request-kib", range: 1...128).map { $0 << 10 }
        w.readFraction = readFraction
        w.queueDepth = queueDepth
    }
}
