import DMAPools
import Testing
@testable import NetStack

/// The library boundary refuses what txsim refuses, with the same messages.
@Suite struct ExperimentCheckTests {
    /// A parameter and the start of the message its error must carry.
    func expectRefused(_ parameter: String, _ message: String, _ body: () throws -> Void) {
        #expect {
            try body()
        } throws: { error in
            let named: String? = switch error {
            case let e as ParameterError: e.parameter
            case ExperimentError.invalid(let e): e.parameter
            case ExperimentError.doesNotFit: "fit"
            default: nil
            }
            return named == parameter && "\(error)".contains(message)
        }
    }

    @Test func workloadInitialiserNamesTheParameterAndItsRange() {
        expectRefused("senders", "invalid --senders: -1 must be in 1...64") { _ = try Workload(senders: -1) }
        expectRefused("duration", "invalid --duration: -1.0 must be in 0.05...3600 seconds") { _ = try Workload(durationSeconds: -1) }
        expectRefused("duration", "invalid --duration: 1e-06") { _ = try Workload(durationSeconds: 0.000001) }
        expectRefused("rtt-us", "invalid --rtt-us: -5 must be in 0...1000000") { _ = try Workload(roundTripMicroseconds: -5) }
        // The send buffer is blamed, not the message checked against it.
        expectRefused("send-buffer", "invalid --send-buffer: 0 bytes") { _ = try Workload(sendBufferBytes: 0) }
        expectRefused("line-rate-gbps", "0.001...10000") { _ = try Workload(lineRateGbps: 0) }
        #expect(throws: Never.self) { _ = try Workload(senders: 4, flows: 4, durationSeconds: 0.05) }
    }

    @Test func configurationInitialiserNamesTheParameterAndItsRange() {
        expectRefused("swiotlb-mib", "the swiotlb (64 MiB, the default") {
            _ = try ExperimentConfiguration(memory: GuestMemoryConfiguration(guestBytes: 64 << 20))
        }
        expectRefused("guest-mib", "invalid --guest-mib: 63 MiB must be an even number") {
            _ = try ExperimentConfiguration(memory: GuestMemoryConfiguration(guestBytes: 63 << 20, swiotlbBytes: 8 << 20))
        }
        expectRefused("pool-ring", "invalid --pool-ring: 20000 must be in 1...16384") { _ = try ExperimentConfiguration(poolRingSize: 20000) }
        expectRefused("zerocopy-percent", "invalid --zerocopy-percent: 95") { _ = try ExperimentConfiguration(zeroCopyPercent: 95) }
        expectRefused("hypercall-ns", "invalid --hypercall-ns: 1000000000 must be in 0...1000000") {
            var memory = GuestMemoryConfiguration()
            memory.hypercall.perCallNanoseconds = 1_000_000_000
            _ = try ExperimentConfiguration(memory: memory)
        }
        expectRefused("hypercall-page-ns", "invalid --hypercall-page-ns: -1") {
            var memory = GuestMemoryConfiguration()
            memory.hypercall.perPageNanoseconds = -1
            _ = try ExperimentConfiguration(memory: memory)
        }
        #expect(throws: Never.self) { try ExperimentConfiguration().validate() }
    }

    @Test func anExperimentIsCheckedBeforeAnythingIsAllocated() throws {
        let c = ExperimentConfiguration()
        expectRefused("designs", "no design given") { try Experiment.check([], workload: Workload(), configuration: c) }
        let registry = DesignRegistry.shared
        expectRefused("designs", "page-pool is named twice") { _ = try registry.designs(named: "page-pool,page-pool") }
        expectRefused("designs", "'' names no design") { _ = try registry.designs(named: "") }
        expectRefused("designs", "unknown design 'page_pool' (registered: bounce, frag-refill, page-pool, decrypted-pool, inline-decrypt)") {
            _ = try registry.designs(named: "bounce,page_pool")
        }
        #expect(try registry.designs(named: "bounce,page-pool").map(\.name) == ["bounce", "page-pool"])
        expectRefused("provider", "unknown page_pool provider 'nonesuch' (registered: swiotlb, decrypted, system)") {
            _ = try registry.provider(named: "nonesuch")
        }
        expectRefused("rounds", "invalid --rounds: 0 must be in 1...100") {
            _ = try Experiment.compare([.bounce], workload: Workload(), rounds: 0, configuration: c)
        }
        expectRefused("rounds", "100 rounds of --duration 1.0 s leave 0.01 s per round") {
            _ = try Experiment.compare([.bounce], workload: Workload(), rounds: 100, configuration: c)
        }
        // The shortest rounds are taken at the nanosecond: 0.15 s in 3 rounds is
        // 0.05 s a round (0.15 / 3 is 0.049999999999999996 in binary floating point).
        #expect(Experiment.roundSeconds(duration: 0.15, rounds: 3) == Workload.durationRange.lowerBound)
        #expect(throws: Never.self) { try Experiment.check([.bounce], workload: Workload(durationSeconds: 0.15), rounds: 3, configuration: c) }
        expectRefused("rounds", "raise --duration to at least 0.15") {
            try Experiment.check([.bounce], workload: Workload(durationSeconds: 0.149), rounds: 3, configuration: c)
        }
        // Too many flows for private memory, and a bounce pool too small for a batch.
        expectRefused("fit", "4096 flows need up to 24 GiB of private guest memory") {
            var w = Workload()
            w.senders = 64; w.queues = 64; w.flows = 4096
            _ = try Experiment.run(.bounce, workload: w, configuration: c)
        }
        expectRefused("fit", "raise --swiotlb-mib to at least 4") {
            var small = c
            small.memory.swiotlbBytes = 1 << 20
            _ = try Experiment.prepare(.pagePool, workload: Workload(), configuration: small)
        }
        // A workload that sets its fields directly is checked all the same.
        expectRefused("senders", "invalid --senders: 0") {
            var w = Workload()
            w.senders = 0
            _ = try Experiment.run(.bounce, workload: w, configuration: c)
        }
    }

    /// A simulation refused part-way through taking its user buffers gives
    /// every one back: nothing is lost.
    @Test func aRefusedSimulationGivesBackWhatItTook() throws {
        let guest = try Guest(GuestMemoryConfiguration(guestBytes: 128 << 20, swiotlbBytes: 64 << 20, hypercall: .free))
        let device = try guest.devices.add(name: "nic0", dmaMaskBits: 64)
        let design = BounceDesign(guest: guest, device: device)
        var w = Workload()
        w.flows = 64   // 64 x 2 MiB user buffers in 64 MiB of private memory
        w.sendBufferBytes = 1 << 20
        #expect(throws: AllocatorError.self) { _ = try TransmitSimulation(guest: guest, design: design, device: device, workload: w) }
        #expect(guest.lostPages() == 0)
    }

    /// What is still queued at the drain limit is abandoned, counted, and its
    /// pages come home; the run ends within duration + RTT + the limit (checked
    /// with a generous bound: before, this run drained 4 MiB at 1 Mbit/s).
    @Test func aRunEndsAtItsDrainLimitAndLosesNothing() throws {
        var w = Small.workload(seconds: 0.1)
        w.lineRateGbps = 0.001
        w.verify = false
        let r = try Experiment.run(.bounce, workload: w, configuration: Small.configuration)
        #expect(r.framesAbandoned > 0 && r.bytesAbandoned > 0)
        #expect(r.lostPages == 0)
        #expect(r.payloadBytes > 0 && r.passed, "\(r.firstProblem ?? "")")
        #expect(r.seconds < w.durationSeconds + Workload.drainLimitSeconds + 10, "ran \(r.seconds) s")
    }
}
