import ArgumentParser
import NetStackReports
import DMAPools
import NetStack

// Every numeric option is parsed `.unconditional`, so `--senders -1` reaches
// the library's range check (which names the option and its range) instead of
// being taken for an option itself. The rules live in the library
// (`Workload.validate`, `ExperimentConfiguration.validate`, `Experiment.check`):
// the options only carry values to them.

/// The workload, shared by `run` and `compare`.
struct WorkloadOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Sender threads (copy 1, process context), 1...64.")
    var senders: Int = 2
    @Option(parsing: .unconditional, help: "TX queues, 1...64.")
    var queues: Int = 1
    @Option(parsing: .unconditional, help: "Flows (sockets), spread over senders and queues: senders...4096.")
    var flows: Int = 2
    @Option(name: .customLong("message"), parsing: .unconditional, help: "Bytes per sendmsg: 1...send buffer.")
    var messageBytes: Int = 65536
    @Option(name: .customLong("rtt-us"), parsing: .unconditional,
            help: "Round-trip time after which the peer acknowledges, in microseconds: 0...1000000.")
    var roundTripMicroseconds: Int = 50
    @Option(parsing: .unconditional,
            help: "Seconds each design sends: 0.05...3600. The run ends at most one RTT plus \(fixed(Workload.drainLimitSeconds, 0)) s later; what is still queued then is abandoned (counted).")
    var duration: Double = 2
    @Flag(help: "The NIC reads and checks every byte it is handed.")
    var verify = false
    @Flag(name: .customLong("msg-zerocopy"), help: "MSG_ZEROCOPY: frames reference the user's (private) pages.")
    var msgZeroCopy = false
    @Option(name: .customLong("zerocopy-mix"), parsing: .unconditional,
            help: "SO_ZEROCOPY on every socket and MSG_ZEROCOPY on this fraction of sendmsg calls, 0...1; the rest are copied.")
    var zeroCopyMix: Double?
    @Option(name: .customLong("send-buffer"), parsing: .unconditional,
            help: "Socket send buffer in bytes (tcp_wmem[2]): 4096...1073741824.")
    var sendBufferBytes: Int = Socket.defaultSendBufferBytes
    @Option(name: .customLong("line-rate-gbps"), parsing: .unconditional,
            help: "Wire speed per queue, 0.001...10000 (default: unlimited).")
    var lineRateGbps: Double?
    @Option(name: .customLong("connection-bytes"), parsing: .unconditional,
            help: "Short-lived connections: each flow's socket is closed and freed after sending this many bytes, and a new one opened, \(Workload.connectionBytesRange.lowerBound)...\(Workload.connectionBytesRange.upperBound) (default: one connection per flow).")
    var connectionBytes: Int?
    @Option(name: .customLong("header-bytes"), parsing: .unconditional,
            help: "Bytes of protocol headers in each frame's linear head, 0...2048 (default 0: no head, as Design/'s tables were measured; txsim shared: 128). kmalloc'd heads bounce at map; decrypted-pool's come from a slab over the pre-decrypted allocator.")
    var headerBytes: Int?

    func workload() throws(ParameterError) -> Workload {
        var w = try Workload(senders: senders, queues: queues, flows: flows, messageBytes: messageBytes,
                             roundTripMicroseconds: roundTripMicroseconds, durationSeconds: duration, verify: verify,
                             zeroCopy: msgZeroCopy, sendBufferBytes: sendBufferBytes, lineRateGbps: lineRateGbps)
        w.zeroCopyMix = zeroCopyMix
        w.connectionBytes = connectionBytes
        w.headerBytes = headerBytes ?? 0
        try w.validate()
        return w
    }

    func validate() throws {
        do { _ = try workload() } catch { throw ValidationError(error.description) }
    }
}

/// The guest, shared by every design of a run.
struct GuestOptions: ParsableArguments {
    @Option(name: .customLong("guest-mib"), parsing: .unconditional, help: "Guest memory in MiB: an even number in 64...65536.")
    var guestMiB: Int = 1024
    @Option(name: .customLong("swiotlb-mib"), parsing: .unconditional,
            help: "swiotlb size in MiB, less than --guest-mib (default: 6% of memory clamped to 64 MiB..1 GiB).")
    var swiotlbMiB: Int?
    @Option(name: .customLong("zerocopy-percent"), parsing: .unconditional,
            help: "swiotlb zerocopy_tx_percent for frag-refill and page-pool over swiotlb (1...90).")
    var zeroCopyPercent: Int = 90
    @Option(help: "The page-pool design's page_pool memory provider, one of those registered: \(DesignRegistry.shared.providerNames) (default: swiotlb; system with --platform iommu).")
    var provider: String?
    @Option(name: .customLong("pool-ring"), parsing: .unconditional,
            help: "Each TX page_pool's recycle ring size (pool_size): 1...\(PagePoolParameters.maximumRingSize).")
    var poolRing: Int = 1024
    @Option(name: .customLong("hypercall-ns"), parsing: .unconditional,
            help: "Modelled cost of one conversion hypercall, in ns: 0...\(HypercallCostModel.maximumPerCallNanoseconds).")
    var hypercallNanoseconds: Int = HypercallCostModel.default.perCallNanoseconds
    @Option(name: .customLong("hypercall-page-ns"), parsing: .unconditional,
            help: "Modelled cost per page converted, in ns: 0...\(HypercallCostModel.maximumPerPageNanoseconds).")
    var hypercallPageNanoseconds: Int = HypercallCostModel.default.perPageNanoseconds
    @Option(name: .customLong("hypercall-charge"), help: "spin (busy-wait the modelled time) or account-only.")
    var hypercallCharge: String = HypercallCostModel.Charge.spin.rawValue
    @Option(help: "resident (the swiotlb and the workload's private working set faulted in when each guest is built, outside the timed window, as in a VM) or on-demand (faulted in on first touch, inside it).")
    var memory: String = "resident"
    @Option(name: .customLong("direct-map"),
            help: "Page size backing guest memory: 2m (transparent huge pages where the host allows, as a guest kernel's direct map) or 4k.")
    var directMap: String = "2m"
    @Flag(name: .customLong("copy-timing"),
          help: "Diagnostic: time copy 1 by where its destination was last bounced (by this CPU, by another, never). Two clock reads per 32 KiB copied: read its split, not its Gbps.")
    var copyTiming = false
    @Flag(name: .customLong("preempt-rt"),
          help: "The guest kernel is CONFIG_PREEMPT_RT: page_pool_napi_local is false, so every TX pool recycle takes the ring, and transmit sections run in preemptible tasks sharing each CPU's per-CPU state.")
    var preemptRT = false
    @Option(name: .customLong("rt-tasks-per-cpu"), parsing: .unconditional,
            help: "With --preempt-rt: tasks sharing each modelled CPU in the transmit path, \(RTScheduling.tasksPerCPURange) (default \(RTScheduling().tasksPerCPU)).")
    var rtTasksPerCPU: Int?
    @Option(name: .customLong("preempt-every"), parsing: .unconditional,
            help: "With --preempt-rt: one preemption per this many preemption points on average, \(RTScheduling.preemptEveryRange.lowerBound)...\(RTScheduling.preemptEveryRange.upperBound) (default \(RTScheduling().preemptEvery), an assumption).")
    var preemptEvery: Int?
    @Option(name: .customLong("preempt-seed"), parsing: .unconditional,
            help: "With --preempt-rt: the preemption generator's seed, 0...18446744073709551615 (default \(RTScheduling().seed)).")
    var preemptSeed: UInt64?
    @Option(name: .customLong("tx-socket-pointer"),
            help: "With --preempt-rt: where frag-refill's current_tx_socket lives, per-cpu (the seed patch) or per-task (the fix, for comparison).")
    var txSocketPointer: String?
    @Option(help: "coco (a confidential VM: memory encrypted, every device bounces through swiotlb) or iommu (no encryption, devices behind an IOMMU, nothing bounces).")
    var platform: String = "coco"
    @Option(name: .customLong("iommu-mode"), help: "With --platform iommu: strict (every unmap invalidates the IOTLB) or lazy (unmapped IOVAs wait on a flush queue).")
    var iommuMode: String?
    @Option(name: .customLong("iommu-map-ns"), parsing: .unconditional,
            help: "Modelled cost of one IOMMU map call (IOVA allocation and call), in ns: 0...\(IOMMUCostModel.maximumNanoseconds) (an assumption).")
    var iommuMapNanoseconds: Int?
    @Option(name: .customLong("iommu-pte-ns"), parsing: .unconditional,
            help: "Modelled cost of one IOMMU page-table entry written or cleared, in ns: 0...\(IOMMUCostModel.maximumNanoseconds) (an assumption).")
    var iommuPTENanoseconds: Int?
    @Option(name: .customLong("iommu-invalidate-ns"), parsing: .unconditional,
            help: "Modelled cost of one IOTLB invalidation (strict: one per unmap), in ns: 0...\(IOMMUCostModel.maximumNanoseconds) (an assumption).")
    var iommuInvalidateNanoseconds: Int?
    @Option(name: .customLong("iommu-flush-ns"), parsing: .unconditional,
            help: "Modelled cost of one flush-queue flush (lazy: one per --iommu-flush-queue unmaps), in ns: 0...\(IOMMUCostModel.maximumNanoseconds) (an assumption).")
    var iommuFlushNanoseconds: Int?
    @Option(name: .customLong("iommu-flush-queue"), parsing: .unconditional,
            help: "Lazy mode: IOVAs queued before one flush frees them, \(IOMMUConfiguration.flushQueueRange.lowerBound)...\(IOMMUConfiguration.flushQueueRange.upperBound) (the kernel's IOVA_FQ_SIZE, 256).")
    var iommuFlushQueue: Int?
    @Option(name: .customLong("iommu-charge"), help: "spin (busy-wait the modelled IOMMU time) or account-only.")
    var iommuCharge: String?

    /// The platform the options name. `refusingIOMMUOptions`: whether the
    /// IOMMU's options given with the coco platform are an error (false only
    /// while the options alone are checked: a command such as `iommu-sweep`
    /// sets the platform itself afterwards).
    func guestPlatform(refusingIOMMUOptions: Bool = true) throws -> Guest.Platform {
        switch platform {
        case "coco":
            guard refusingIOMMUOptions else { return .confidential }
            // The IOMMU's options mean nothing without one: refused, not ignored.
            let given: [(String, Bool)] = [
                ("iommu-mode", iommuMode != nil), ("iommu-map-ns", iommuMapNanoseconds != nil),
                ("iommu-pte-ns", iommuPTENanoseconds != nil), ("iommu-invalidate-ns", iommuInvalidateNanoseconds != nil),
                ("iommu-flush-ns", iommuFlushNanoseconds != nil), ("iommu-flush-queue", iommuFlushQueue != nil),
                ("iommu-charge", iommuCharge != nil),
            ]
            if let (name, _) = given.first(where: { $0.1 }) {
                throw ValidationError("invalid --\(name): applies only with --platform iommu (the platform is coco)")
            }
            return .confidential
        case "iommu":
            let modeName = iommuMode ?? IOMMUMode.strict.rawValue
            guard let mode = IOMMUMode(rawValue: modeName) else {
                throw ValidationError("invalid --iommu-mode: '\(modeName)' must be strict or lazy")
            }
            let chargeName = iommuCharge ?? HypercallCostModel.Charge.spin.rawValue
            guard let charge = HypercallCostModel.Charge(rawValue: chargeName) else {
                throw ValidationError("invalid --iommu-charge: '\(chargeName)' must be spin or account-only")
            }
            let d = IOMMUCostModel.default
            let costs = IOMMUCostModel(mapNanoseconds: iommuMapNanoseconds ?? d.mapNanoseconds,
                                       pteNanoseconds: iommuPTENanoseconds ?? d.pteNanoseconds,
                                       invalidateNanoseconds: iommuInvalidateNanoseconds ?? d.invalidateNanoseconds,
                                       flushNanoseconds: iommuFlushNanoseconds ?? d.flushNanoseconds,
                                       charge: charge)
            return .iommu(IOMMUConfiguration(mode: mode, costs: costs, flushQueueSize: iommuFlushQueue ?? 256))
        default:
            throw ValidationError("invalid --platform: '\(platform)' must be coco or iommu")
        }
    }

    /// Bytes for a MiB count; a count too large for bytes becomes Int.max,
    /// which the library's range check refuses by name.
    private static func bytes(mebibytes: Int) -> Int {
        let (bytes, overflow) = mebibytes.multipliedReportingOverflow(by: 1 << 20)
        return overflow ? (mebibytes < 0 ? Int.min : Int.max) : bytes
    }

    func configuration(refusingIOMMUOptions: Bool = true) throws -> ExperimentConfiguration {
        let platform = try guestPlatform(refusingIOMMUOptions: refusingIOMMUOptions)
        let poolProvider: any PagePoolProviderKind
        let providerName = provider ?? (platform.iommu == nil ? "swiotlb" : "system")
        do { poolProvider = try DesignRegistry.shared.provider(named: providerName) } catch { throw ValidationError(error.description) }
        guard let charge = HypercallCostModel.Charge(rawValue: hypercallCharge) else {
            throw ValidationError("invalid --hypercall-charge: '\(hypercallCharge)' must be spin or account-only")
        }
        let model = HypercallCostModel(perCallNanoseconds: hypercallNanoseconds, perPageNanoseconds: hypercallPageNanoseconds,
                                       charge: charge, failEveryNthCall: 0)
        guard memory == "resident" || memory == "on-demand" else {
            throw ValidationError("invalid --memory: '\(memory)' must be resident or on-demand")
        }
        var memory = GuestMemoryConfiguration(guestBytes: Self.bytes(mebibytes: guestMiB),
                                              swiotlbBytes: swiotlbMiB.map { Self.bytes(mebibytes: $0) }, hypercall: model)
        memory.residentAtBoot = self.memory == "resident"
        guard directMap == "2m" || directMap == "4k" else {
            throw ValidationError("invalid --direct-map: '\(directMap)' must be 2m or 4k")
        }
        memory.directMapHugePages = directMap == "2m"
        do {
            var configuration = try ExperimentConfiguration(memory: memory, zeroCopyPercent: zeroCopyPercent,
                                                            poolProvider: poolProvider, poolRingSize: poolRing)
            configuration.preemptRT = preemptRT
            configuration.copyTiming = copyTiming
            configuration.platform = platform
            if !preemptRT, let option = [rtTasksPerCPU.map { _ in "rt-tasks-per-cpu" }, preemptEvery.map { _ in "preempt-every" },
                                         preemptSeed.map { _ in "preempt-seed" },
                                         txSocketPointer.map { _ in "tx-socket-pointer" }].compactMap({ $0 }).first {
                throw ParameterError.invalid(parameter: option, reason: "applies only with --preempt-rt")
            }
            if let rtTasksPerCPU { configuration.rtScheduling.tasksPerCPU = rtTasksPerCPU }
            if let preemptEvery { configuration.rtScheduling.preemptEvery = preemptEvery }
            if let preemptSeed { configuration.rtScheduling.seed = preemptSeed }
            if let txSocketPointer {
                guard let pointer = TXSocketPointer(rawValue: txSocketPointer) else {
                    throw ParameterError.invalid(parameter: "tx-socket-pointer", reason: "'\(txSocketPointer)' must be per-cpu or per-task")
                }
                configuration.rtScheduling.pointer = pointer
            }
            try configuration.validate()
            return configuration
        } catch {
            throw ValidationError("\(error)")
        }
    }

    func validate() throws {
        _ = try configuration(refusingIOMMUOptions: false)
    }
}

/// The library's verdict on a whole experiment, as a command-line error.
func checkExperiment(_ kinds: [any TransmitDesignKind], workload: WorkloadOptions, plan: ComparisonPlan, guest: GuestOptions) throws {
    do {
        try Experiment.check(kinds, workload: try workload.workload(), plan: plan, configuration: try guest.configuration())
    } catch let error as ExperimentError {
        throw ValidationError(error.description)
    }
}

/// How results are printed.
struct OutputOptions: ParsableArguments {
    @Flag(help: "Print a JSON array, one object per design.")
    var json = false
    @Flag(help: "Print CSV, one row per design.")
    var csv = false
    @Option(help: "Also write a bar chart (SVG) to this file (its directory must exist and be writable).")
    var svg: String?
    @Flag(help: "No progress lines on standard error.")
    var quiet = false

    func validate() throws {
        if json && csv { throw ValidationError("--json and --csv are exclusive") }
        if let svg { try checkWritable(svg, option: "svg") }
    }
}

/// Refuses, before anything runs, an output file that could not be written:
/// its directory must exist and be writable, and it must not be a directory.
func checkWritable(_ path: String, option: String) throws {
    guard !path.isEmpty else { throw ValidationError("invalid --\(option): the path is empty") }
    var info = stat()
    if stat(path, &info) == 0 {
        if (info.st_mode & S_IFMT) == S_IFDIR { throw ValidationError("invalid --\(option): \(path) is a directory") }
        if access(path, W_OK) != 0 {
            throw ValidationError("invalid --\(option): cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return
    }
    let directory = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
    guard stat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
        throw ValidationError("invalid --\(option): cannot write \(path): directory \(directory) does not exist")
    }
    guard access(directory, W_OK) == 0 else {
        throw ValidationError("invalid --\(option): cannot write \(path): directory \(directory): \(String(cString: strerror(errno)))")
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// A comma-separated list of numbers for a sweep option: each in `range`,
/// none twice, or an error that names the option and the range.
func sweepList<T: LosslessStringConvertible & Comparable>(_ text: String, option: String, range: ClosedRange<T>) throws -> [T] {
    var values: [T] = []
    for part in text.split(separator: ",", omittingEmptySubsequences: false) {
        guard let value = T(String(part)), range.contains(value) else {
            throw ValidationError("invalid --\(option): '\(part)' must be a number in \(range.lowerBound)...\(range.upperBound) (a comma-separated list)")
        }
        guard !values.contains(value) else { throw ValidationError("invalid --\(option): \(value) is given twice") }
        values.append(value)
    }
    return values
}

/// The options every sweep subcommand shares: rounds per point, JSON, quiet.
struct SweepOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Interleaved rounds per point of the sweep, 1...100.")
    var rounds: Int = 3
    @Flag(help: "Print JSON instead of a table.")
    var json = false
    @Flag(help: "No progress lines on standard error.")
    var quiet = false

    func validate() throws {
        guard (1...100).contains(rounds) else { throw ValidationError("invalid --rounds: \(rounds) must be in 1...100") }
    }
}
