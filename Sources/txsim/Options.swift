import ArgumentParser
import DMAPools
import NetStack

/// The workload, shared by `run` and `compare`.
struct WorkloadOptions: ParsableArguments {
    @Option(help: "Sender threads (copy 1, process context).")
    var senders: Int = 2
    @Option(help: "TX queues, one thread each (the TX softirq).")
    var queues: Int = 1
    @Option(help: "Flows (sockets), spread over senders and queues.")
    var flows: Int = 2
    @Option(name: .customLong("message"), help: "Bytes per sendmsg.")
    var messageBytes: Int = 65536
    @Option(name: .customLong("rtt-us"), help: "Round-trip time after which the peer acknowledges, in microseconds.")
    var roundTripMicroseconds: Int = 50
    @Option(help: "Seconds each design sends.")
    var duration: Double = 2
    @Flag(help: "The NIC reads and checks every byte it is handed.")
    var verify = false
    @Flag(name: .customLong("msg-zerocopy"), help: "MSG_ZEROCOPY: frames reference the user's (private) pages.")
    var msgZeroCopy = false
    @Option(name: .customLong("send-buffer"), help: "Socket send buffer in bytes (tcp_wmem[2]).")
    var sendBufferBytes: Int = Socket.defaultSendBufferBytes
    @Option(name: .customLong("line-rate-gbps"), help: "Wire speed per queue (default: unlimited).")
    var lineRateGbps: Double?

    var workload: Workload {
        var w = Workload()
        w.senders = senders; w.queues = queues; w.flows = flows; w.messageBytes = messageBytes
        w.roundTripMicroseconds = roundTripMicroseconds; w.durationSeconds = duration; w.verify = verify
        w.zeroCopy = msgZeroCopy; w.sendBufferBytes = sendBufferBytes; w.lineRateGbps = lineRateGbps
        return w
    }

    func validate() throws {
        do { try workload.validate() } catch { throw ValidationError(error.description) }
    }
}

/// The guest, shared by every design of a run.
struct GuestOptions: ParsableArguments {
    @Option(name: .customLong("guest-mib"), help: "Guest memory in MiB (a multiple of 2).")
    var guestMiB: Int = 1024
    @Option(name: .customLong("swiotlb-mib"), help: "swiotlb size in MiB (default: 6% of memory clamped to 64 MiB..1 GiB).")
    var swiotlbMiB: Int?
    @Option(name: .customLong("zerocopy-percent"), help: "swiotlb zerocopy_tx_percent for frag-refill and page-pool over swiotlb (1...90).")
    var zeroCopyPercent: Int = 90
    @Option(help: "page-pool design's provider: swiotlb or decrypted.")
    var provider: String = "swiotlb"
    @Option(name: .customLong("pool-ring"), help: "Each TX page_pool's recycle ring size (pool_size).")
    var poolRing: Int = 1024
    @Option(name: .customLong("hypercall-ns"), help: "Modelled cost of one conversion hypercall, in ns.")
    var hypercallNanoseconds: Int = HypercallCostModel.default.perCallNanoseconds
    @Option(name: .customLong("hypercall-page-ns"), help: "Modelled cost per page converted, in ns.")
    var hypercallPageNanoseconds: Int = HypercallCostModel.default.perPageNanoseconds
    @Option(name: .customLong("hypercall-charge"), help: "spin (busy-wait the modelled time) or account-only.")
    var hypercallCharge: String = HypercallCostModel.Charge.spin.rawValue

    func validate() throws {
        guard guestMiB >= 64, guestMiB % 2 == 0, guestMiB <= 64 << 10 else {
            throw ValidationError("--guest-mib \(guestMiB) must be an even number in 64...65536")
        }
        if let s = swiotlbMiB, s < 1 || s >= guestMiB {
            throw ValidationError("--swiotlb-mib \(s) must be in 1..<guest-mib (\(guestMiB))")
        }
        guard (1...90).contains(zeroCopyPercent) else {
            throw ValidationError("--zerocopy-percent \(zeroCopyPercent) must be in 1...90 (90 is the patch's maximum)")
        }
        guard PoolProviderKind(rawValue: provider) != nil else {
            throw ValidationError("--provider \(provider) must be swiotlb or decrypted")
        }
        guard poolRing >= 1 && poolRing <= 32768 else { throw ValidationError("--pool-ring \(poolRing) must be in 1...32768") }
        guard hypercallNanoseconds >= 0, hypercallPageNanoseconds >= 0 else {
            throw ValidationError("--hypercall-ns and --hypercall-page-ns must not be negative")
        }
        guard HypercallCostModel.Charge(rawValue: hypercallCharge) != nil else {
            throw ValidationError("--hypercall-charge \(hypercallCharge) must be spin or account-only")
        }
    }

    var configuration: ExperimentConfiguration {
        let model = HypercallCostModel(perCallNanoseconds: hypercallNanoseconds, perPageNanoseconds: hypercallPageNanoseconds,
                                       charge: HypercallCostModel.Charge(rawValue: hypercallCharge) ?? .spin, failEveryNthCall: 0)
        let memory = GuestMemoryConfiguration(guestBytes: guestMiB << 20, swiotlbBytes: swiotlbMiB.map { $0 << 20 },
                                              hypercall: model)
        return ExperimentConfiguration(memory: memory, zeroCopyPercent: zeroCopyPercent,
                                       poolProvider: PoolProviderKind(rawValue: provider) ?? .swiotlb, poolRingSize: poolRing)
    }
}

/// How results are printed.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print a JSON array, one object per design.")
    var json = false
    @Flag(help: "Print CSV, one row per design.")
    var csv = false
    @Option(help: "Also write a bar chart (SVG) to this file.")
    var svg: String?
    @Flag(help: "No progress lines on standard error.")
    var quiet = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv are exclusive") }
    }
}
