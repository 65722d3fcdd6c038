import ArgumentParser
import NetStackReports
import DMAPools
import NetStack
import NetStackTestSupport

/// `txsim reliability`: the adversarial campaign CI runs on every submission,
/// summed into one line of figures. Each part fails loudly on its own.
///
/// 1. Fuzz: seeded swiotlb and page_pool runs against their reference models.
/// 2. Faults in running traffic, every byte verified by the NIC, on every
///    design: the NIC's device removed mid-traffic; another device removed
///    (invalidating frag-refill's cached device); a block device mapping its
///    own buffers while zero-copy pages fill the bounce pool; the modelled
///    conversion failing (every 3rd call under inline decryption, every 2nd
///    under the pre-decrypted allocator, which converts once per chunk); on
///    `--platform iommu` (strict and lazy) the NIC removed with its IOMMU
///    domain while pool pages mapped in it are in flight; on PREEMPT_RT, the
///    NIC removed under ring-only pools, and a preemption storm (8 tasks per
///    CPU, a preemption every 2nd point on average, sockets closed and freed
///    every 256 KiB) in which every design keeps every page and byte and
///    frag-refill's `current_tx_socket` race is counted and reported, not failed.
///    Provider failures are in the page_pool fuzzer.
struct Reliability: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the fuzzers and fault injection into verified traffic; print one summary line.")

    @Option(parsing: .unconditional, help: "Seconds of fuzzing (split between swiotlb and page_pool).")
    var fuzzSeconds: Double = 20
    @Option(parsing: .unconditional, help: "Seconds each fault-injected transmit run sends.")
    var runSeconds: Double = 0.4
    @Option(parsing: .unconditional, help: "The first fuzz seed, decimal or 0x-hexadecimal (default: random).")
    var seed: Seed?
    @Option(parsing: .unconditional, help: "Run only this fault scenario, without fuzzing: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scenario: Scenario?
    @Option(parsing: .unconditional, help: "Run only this design's fault runs, without fuzzing (a registered design).")
    var design: String?

    /// The fault scenarios, by the name `--scenario` takes.
    enum Scenario: String, CaseIterable, Sendable, ExpressibleByArgument {
        case nicRemoved = "nic-removed"
        case otherDeviceRemoved = "other-device-removed"
        case blockDeviceAtCap = "block-device-at-cap"
        case conversionsFailing = "conversions-failing"
        case preemptRTNICRemoved = "preempt-rt-nic-removed"
        case iommuNICRemoved = "iommu-nic-removed"
        case iommuEarlyUnmapCaught = "iommu-early-unmap-caught"
        case preemptRTStorm = "preempt-rt-storm"
    }

    func validate() throws {
        guard fuzzSeconds > 0 && fuzzSeconds <= 86_400 else { throw ValidationError("invalid --fuzz-seconds: \(fuzzSeconds) must be in (0, 86400]") }
        guard runSeconds >= 0.05 && runSeconds <= 600 else { throw ValidationError("invalid --run-seconds: \(runSeconds) must be in 0.05...600") }
        if let design {
            let kind: any TransmitDesignKind
            do { kind = try DesignRegistry.shared.design(named: design) } catch { throw ValidationError(error.description) }
            let runs = Self.faults.filter { scenario == nil || $0.scenario == scenario }.filter { $0.kinds.contains { $0.name == kind.name } }
            if runs.isEmpty, let scenario, let fault = Self.faults.first(where: { $0.scenario == scenario }) {
                throw ValidationError("invalid --design: scenario \(scenario.rawValue) runs only \(fault.kinds.map(\.name).joined(separator: ", "))")
            }
        }
    }

    struct Fault: Sendable {
        var scenario: Scenario
        var name: String
        var kinds: [any TransmitDesignKind]
        var plan: FaultPlan
        /// A fault whose fallbacks the run records as problems (a failed
        /// conversion is retried): judged by its figures, not by its first
        /// recorded problem (`TransmitResult.Judgement.fallbacksExpected`).
        var fallsBack = false
        /// A planted defect the model must catch: the run must show DMA
        /// faults (and lose nothing); its faults are the catch, not a failure,
        /// and its bytes are not in the campaign's traffic balance.
        var mustFault = false
        /// A preemption storm: the injected faults are the modelled
        /// preemptions, and the per-CPU pointer's race is reported, not failed,
        /// for a design that sets it (`TransmitResult.Judgement.raceExpected`).
        var preempts = false
        var configure: @Sendable (any TransmitDesignKind, inout Workload, inout ExperimentConfiguration) -> Void = { _, _, _ in }
    }

    static let faults: [Fault] = [
        Fault(scenario: .nicRemoved, name: "NIC removed", kinds: DesignRegistry.shared.designs, plan: FaultPlan(removeNICAfterBytes: 8 << 20)),
        Fault(scenario: .otherDeviceRemoved, name: "other device removed", kinds: [.fragRefill, .pagePool],
              plan: FaultPlan(removeOtherDeviceAfterBytes: 8 << 20)),
        Fault(scenario: .blockDeviceAtCap, name: "block device at the zero-copy cap", kinds: [.fragRefill, .pagePool],
              plan: FaultPlan(blockDeviceTraffic: true)) { _, w, c in
            w.flows = 16
            w.roundTripMicroseconds = 200_000
            w.sendBufferBytes = 4 << 20
            c.memory.swiotlbBytes = 64 << 20
        },
        Fault(scenario: .conversionsFailing, name: "conversions failing", kinds: [.inlineDecrypt, .decryptedPool],
              plan: .none, fallsBack: true) { kind, w, c in
            // The pre-decrypted allocator converts once per 2 MiB chunk: more
            // flows and every 2nd call failing so that some do fail.
            if kind is DecryptedPoolDesignKind { w.flows = 8 }
            c.memory.hypercall = HypercallCostModel(perCallNanoseconds: 0, perPageNanoseconds: 0,
                                                    charge: .accountOnly, failEveryNthCall: kind is DecryptedPoolDesignKind ? 2 : 3)
        },
        // CONFIG_PREEMPT_RT: every pool recycle takes the ring, and the NIC
        // goes mid-traffic: the ring-only pools must still bring every page home.
        Fault(scenario: .preemptRTNICRemoved, name: "PREEMPT_RT, NIC removed", kinds: [.pagePool],
              plan: FaultPlan(removeNICAfterBytes: 8 << 20)) { _, _, c in
            c.preemptRT = true
        },
        // A preemption storm on CONFIG_PREEMPT_RT: 8 tasks per CPU, one
        // preemption per 2 points, 16 short-lived flows (each connection
        // closed and its socket freed after 256 KiB). Every design keeps every
        // page and byte; frag-refill's current_tx_socket race is counted.
        Fault(scenario: .preemptRTStorm, name: "PREEMPT_RT preemption storm", kinds: DesignRegistry.shared.designs,
              plan: .none, preempts: true) { _, w, c in
            w.flows = 16
            w.connectionBytes = 256 << 10
            c.preemptRT = true
            c.rtScheduling = RTScheduling(tasksPerCPU: 8, preemptEvery: 2, seed: 0x5eed)
        },
        // --platform iommu: the NIC goes mid-traffic and its IOMMU domain with
        // it, tearing down the mappings of pool pages still in flight in
        // frames; nothing may read or unmap through the removed device, every
        // entry must be gone and every page home.
        Fault(scenario: .iommuNICRemoved, name: "IOMMU strict, NIC removed", kinds: [.bounce, .pagePool],
              plan: FaultPlan(removeNICAfterBytes: 8 << 20)) { _, _, c in
            c.platform = .iommu(IOMMUConfiguration(mode: .strict, costs: .free))
            c.poolProvider = .system
        },
        Fault(scenario: .iommuNICRemoved, name: "IOMMU lazy, NIC removed", kinds: [.bounce, .pagePool],
              plan: FaultPlan(removeNICAfterBytes: 8 << 20)) { _, _, c in
            c.platform = .iommu(IOMMUConfiguration(mode: .lazy, costs: .free))
            c.poolProvider = .system
        },
        // A planted defect: a design that unmaps each fragment before the NIC
        // reads it. Every such read must be refused as a DMA fault.
        Fault(scenario: .iommuEarlyUnmapCaught, name: "IOMMU early unmap (planted)", kinds: [EarlyUnmapDesignKind()],
              plan: .none, mustFault: true) { _, _, c in
            c.platform = .iommu(IOMMUConfiguration(mode: .lazy, costs: .free))
        },
    ]

    func run() throws {
        let firstSeed = seed?.value ?? UInt64.random(in: 0...UInt64.max)
        let only = design.flatMap { try? DesignRegistry.shared.design(named: $0) }
        var fuzz = FuzzTotals()
        if scenario == nil && only == nil {
            print("reliability: fuzzing \(fixed(fuzzSeconds, 1)) s from seed 0x\(String(firstSeed, radix: 16))")
            fuzz = try FuzzTotals.campaign(.all, seconds: fuzzSeconds, seed: firstSeed, steps: Self.fuzzSteps,
                                           maximumRuns: nil, stopOnFailure: false)
            for failure in fuzz.failures {
                print("  \(failure)")
                if let command = failure.reproduceCommand(steps: Self.fuzzSteps) { print("  reproduce: \(command)") }
            }
            print("  fuzz: \(fuzz.runs) runs, \(fuzz.operations) operations, \(fuzz.bytesVerified) bytes verified, \(fuzz.lostPages) lost")
        }

        var operations = fuzz.operations
        var faultsInjected = 0
        var bytesVerified = fuzz.bytesVerified
        var lostPages = fuzz.lostPages
        var dmaFaults = 0
        var failures = fuzz.failures.count
        var traffic = TransmitResult?.none
        let threadsBefore = ModelThread.started
        for fault in Self.faults where scenario == nil || fault.scenario == scenario {
            for kind in fault.kinds where only == nil || kind.name == only?.name {
                var workload = Workload()
                workload.senders = 2
                workload.queues = 1
                workload.flows = 2
                workload.roundTripMicroseconds = 20
                workload.durationSeconds = runSeconds
                workload.verify = true
                workload.sendBufferBytes = 1 << 20
                var configuration = try ExperimentConfiguration(
                    memory: GuestMemoryConfiguration(guestBytes: 256 << 20, swiotlbBytes: 32 << 20, hypercall: .free),
                    zeroCopyPercent: 90)
                fault.configure(kind, &workload, &configuration)
                let (guest, device, design) = try Experiment.prepare(kind, workload: workload, configuration: configuration)
                let r = try TransmitSimulation(guest: guest, design: design, device: device, workload: workload,
                                               rtScheduling: configuration.preemptRT ? configuration.rtScheduling : nil).run(faults: fault.plan)
                // Injected: each device removal, the block-device scenario once,
                // each failed conversion.
                let injected = (fault.mustFault ? 1 : 0) + (fault.plan.removeNICAfterBytes != nil ? 1 : 0)
                    + (fault.plan.removeOtherDeviceAfterBytes != nil ? 1 : 0)
                    + ((r.blockDevice?.mappings ?? 0) > 0 ? 1 : 0)
                    + guest.memory.conversionStatistics.failures
                    + (fault.preempts ? r.preemptions : 0)
                faultsInjected += injected
                operations += r.payloadBytes / max(1, workload.messageBytes)
                bytesVerified += r.verifiedBytes
                lostPages += r.lostPages
                if !fault.mustFault {
                    dmaFaults += r.dmaFaults
                    traffic = traffic.map { TransmitResult.aggregate([$0, r]) } ?? r
                }
                let problem = fault.mustFault
                    ? (r.dmaFaults == 0 ? "the planted early unmap was not caught: no DMA fault"
                       : r.lostPages > 0 ? "\(r.lostPages) pages lost" : nil)
                    : Self.problem(in: r, fault: fault, injected: injected)
                let outcome = problem.map { "FAILED: \($0)" } ?? "ok"
                if problem != nil { failures += 1 }
                let blockMappings = r.blockDevice.map { "  (block device: \($0.mappings) mappings, \($0.failures) failed)" } ?? ""
                let drops = r.framesDropped > 0 ? "  (\(r.framesDropped) frames dropped, \(r.framesRetransmitted) retransmitted)" : ""
                let refused = r.refusedDeviceAllocations > 0 ? "  (\(r.refusedDeviceAllocations) requests for the removed NIC refused)" : ""
                let tornDown = r.platform == "iommu" && fault.plan.removeNICAfterBytes != nil ? "  (IOMMU: \(r.iommu.mappingsTornDown) mappings torn down with the NIC)" : ""
                let race = fault.preempts
                    ? "  (\(r.connectionsClosed) sockets freed; current_tx_socket: \(r.currentTXSocketSets) sets, \(r.misattributedLearnings) misattributed learnings, \(r.socketUseAfterFree) uses after free\(r.currentTXSocketSets > 0 ? ", expected: the patch's race" : ""))"
                    : ""
                print("  \(fault.name.padded(34)) \(kind.name.padded(15)) \(String(injected).leftPadded(7)) injected  "
                      + "\(String(r.verifiedBytes >> 20).leftPadded(6)) MiB verified  \(r.lostPages) lost  \(r.dmaFaults) DMA faults  \(outcome)\(blockMappings)\(drops)\(refused)\(tornDown)\(race)")
                if problem != nil {
                    print("  reproduce: txsim reliability --scenario \(fault.scenario.rawValue) --design \(kind.name) --run-seconds \(runSeconds)")
                }
            }
        }
        let threads = ModelThread.started - threadsBefore
        let t = traffic
        let written = t?.bytesWritten ?? 0, delivered = t?.payloadBytes ?? 0, discarded = t?.bytesDiscardedDeviceGone ?? 0
        let balance = written == delivered + discarded ? "=" : "!="
        print("reliability: operations \(operations), threads \(threads), faults injected \(faultsInjected), "
              + "bytes verified \(bytesVerified), pages lost \(lostPages), DMA faults \(dmaFaults), "
              + "frames dropped \(t?.framesDropped ?? 0), retransmitted \(t?.framesRetransmitted ?? 0), "
              + "bytes written \(written) \(balance) delivered \(delivered) + discarded with a removed NIC \(discarded), "
              + "failures \(failures)")
        if failures > 0 || lostPages > 0 || dmaFaults > 0 || balance != "=" { throw ExitCode(2) }
    }

    /// Operations per fuzz run.
    static let fuzzSteps = 3000

    /// What went wrong in a fault-injected run, or nil: a fault must be
    /// injected, and the run is judged by `TransmitResult.problem(judged:)`, the
    /// rule the tests use too.
    static func problem(in r: TransmitResult, fault: Fault, injected: Int) -> String? {
        if injected == 0 { return "no fault was injected" }
        if fault.preempts && r.connectionsClosed == 0 { return "no socket was closed: the storm freed nothing" }
        return r.problem(judged: fault.fallsBack ? .fallbacksExpected : fault.preempts ? .raceExpected : .faultInjected)
    }
}
