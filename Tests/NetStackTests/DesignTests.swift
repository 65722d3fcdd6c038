import DMAPools
import Testing
@testable import NetStack

/// A small guest and a short verified workload, shared by the design tests.
enum Small {
    static let configuration: ExperimentConfiguration = {
        var c = ExperimentConfiguration()
        c.memory = GuestMemoryConfiguration(guestBytes: 256 << 20, swiotlbBytes: 32 << 20, hypercall: .free)
        c.zeroCopyPercent = 90
        return c
    }()

    static func workload(flows: Int = 2, message: Int = 65536, seconds: Double = 0.2, zeroCopy: Bool = false) -> Workload {
        var w = Workload()
        w.senders = 2
        w.queues = 1
        w.flows = flows
        w.messageBytes = message
        w.roundTripMicroseconds = 20
        w.durationSeconds = seconds
        w.verify = true
        w.zeroCopy = zeroCopy
        w.sendBufferBytes = 1 << 20
        return w
    }
}

@Suite struct DesignDataPathTests {
    @Test(arguments: DesignRegistry.shared.designs.map(\.name))
    func everyByteArrivesAndNothingIsLost(_ name: String) throws {
        let kind = try DesignRegistry.shared.design(named: name)
        let result = try Experiment.run(kind, workload: Small.workload(), configuration: Small.configuration)
        #expect(result.payloadBytes > 1 << 20, "\(kind) moved only \(result.payloadBytes) bytes")
        #expect(result.verifiedBytes == result.payloadBytes)
        #expect(result.corruptBytes == 0)
        #expect(result.dmaFaults == 0)
        #expect(result.lostPages == 0)
        #expect(result.framesDropped == 0)
        #expect(result.passed, "\(kind): \(result.firstProblem ?? "")")
    }

    @Test func bounceCopiesEveryByteTwice() throws {
        let r = try Experiment.run(.bounce, workload: Small.workload(), configuration: Small.configuration)
        #expect(r.bytesCopiedBySender == r.payloadBytes)
        #expect(r.bytesCopiedByDMALayer == r.payloadBytes)
        #expect(r.copiesPerByte == 2)
        #expect(r.zeroCopyFraction == 0)
    }

    @Test func fragRefillCopiesOnceAndUsesTheFreePathHook() throws {
        let w = Small.workload()
        let r = try Experiment.run(.fragRefill, workload: w, configuration: Small.configuration)
        // Until the transmit path has taught a socket its bounce device, the
        // socket fills general pages: at most its send buffer plus the page it
        // holds. Those bytes bounce; after that nothing is copied twice.
        let learningWindow = w.flows * (w.sendBufferBytes + PageGeometry.bytes(order: PageGeometry.socketFragOrder))
        #expect(r.bytesCopiedBySender == r.payloadBytes)
        #expect(r.bytesCopiedByDMALayer <= learningWindow)
        #expect(r.bytesMappedDirect >= r.payloadBytes - learningWindow)
        let checks = r.designFigures[named: "free-path hook checks"]?.count ?? 0
        let runs = r.designFigures[named: "zero-copy runs"]?.count ?? 0
        #expect(runs > 0)
        #expect(checks >= runs, "every free passes the hook")
    }

    @Test(arguments: DesignRegistry.shared.providers.filter { $0.unsupportedReason(on: .confidential) == nil }.map(\.name))
    func pagePoolCopiesOnceAndRecyclesThroughItsPools(_ provider: String) throws {
        var configuration = Small.configuration
        configuration.poolProvider = try DesignRegistry.shared.provider(named: provider)
        let r = try Experiment.run(.pagePool, workload: Small.workload(), configuration: configuration)
        #expect(r.passed, "\(provider): \(r.firstProblem ?? "")")
        #expect(r.bytesCopiedBySender == r.payloadBytes)
        #expect(r.bytesCopiedByDMALayer == 0, "pool pages never bounce")
        #expect(r.zeroCopyFraction == 1)
        let cached = r.designFigures[named: "recycle cached/cache_full"]?.counts.first ?? 0
        #expect(cached > 0, "pages freed on the sender recycle directly into its pool's cache")
        #expect(r.designFigures[named: "fallbacks to general pages"]?.count == 0)
        #expect(r.designFigures[named: "recycle cached/cache_full"]?.unit == "pages")
    }

    @Test func inlineDecryptionConvertsBackEverythingItConverted() throws {
        let r = try Experiment.run(.inlineDecrypt, workload: Small.workload(), configuration: Small.configuration)
        #expect(r.copiesPerByte == 1)
        #expect(r.conversionCalls > 0)
        let pages = r.designFigures[named: "pages decrypted/encrypted"]?.counts ?? []
        #expect(pages.count == 2 && pages[0] == pages[1] && pages[0] > 0)
    }

    @Test func msgZeroCopyGainsNothingFromSocketPages() throws {
        // MSG_ZEROCOPY sends the user's private pages: no copy 1, but every byte
        // bounces, whatever the socket's page source (Eric Dumazet's point).
        for kind in [BounceDesignKind.bounce, .fragRefill] as [any TransmitDesignKind] {
            let r = try Experiment.run(kind, workload: Small.workload(zeroCopy: true), configuration: Small.configuration)
            #expect(r.bytesCopiedBySender == 0)
            #expect(r.bytesCopiedByDMALayer == r.payloadBytes)
            #expect(r.passed, "\(kind): \(r.firstProblem ?? "")")
        }
    }

    @Test func smallMessagesCutIntoManyFrames() throws {
        let r = try Experiment.run(.bounce, workload: Small.workload(flows: 4, message: 1500), configuration: Small.configuration)
        #expect(r.passed)
        #expect(r.verifiedBytes == r.payloadBytes && r.payloadBytes > 0)
    }
}

/// A design that corrupts one byte of every 1000th fragment after mapping it:
/// the NIC in verify mode must notice.
final class CorruptingDesign: GuestDesign, @unchecked Sendable {
    override var name: String { "corrupting" }
    private var mapped = 0
    override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        let mapping = try mapThroughDMAAPI(fragment, queue: queue)
        mapped += 1
        if mapped % 1000 == 1, let physical = guest.memory.physicalAddress(ofShared: mapping.address),
           let byte = try? guest.memory.pointer(to: physical + mapping.length / 2) {
            byte.storeBytes(of: byte.load(as: UInt8.self) ^ 0x40, as: UInt8.self)
        }
        return mapping
    }
}

/// A broken design that hands the NIC the private page itself.
final class PrivateDMADesign: GuestDesign, @unchecked Sendable {
    override var name: String { "private-dma" }
    override func map(_ fragment: Fragment, socket: Socket, queue: TXQueue) throws(DMAError) -> FragmentMapping {
        // Pretend the page were shared: the address names private memory.
        FragmentMapping(address: guest.memory.unencryptedDMAAddress(of: fragment.page.physicalAddress + fragment.offset),
                        length: fragment.length, kind: .direct)
    }
    override func unmap(_ mapping: FragmentMapping, fragment: Fragment, queue: TXQueue) throws(DMAError) {}
}

@Suite struct NICTests {
    func run(_ make: (Guest, Device) -> TransmitDesign) throws -> TransmitResult {
        let guest = try Guest(Small.configuration.memory)
        let device = try guest.devices.add(name: "nic0")
        let design = make(guest, device)
        return try TransmitSimulation(guest: guest, design: design, device: device, workload: Small.workload()).run()
    }

    @Test func verifyModeCatchesACorruptedByte() throws {
        let r = try run { CorruptingDesign(guest: $0, device: $1) }
        #expect(r.corruptBytes > 0)
        #expect(!r.passed)
        #expect(r.firstProblem?.contains("differs from what the sender wrote") == true)
        #expect(r.lostPages == 0)
    }

    @Test func aDMAToPrivateMemoryIsRefusedAndCounted() throws {
        let r = try run { PrivateDMADesign(guest: $0, device: $1) }
        #expect(r.dmaFaults > 0)
        #expect(r.verifiedBytes == 0, "the NIC must not read memory it refused")
        #expect(r.firstProblem?.contains("private") == true)
        #expect(!r.passed)
        #expect(r.lostPages == 0)
    }

    @Test func theNICRefusesAddressesBeyondItsMask() throws {
        let guest = try Guest(Small.configuration.memory)
        let narrow = try guest.devices.add(name: "nic32", dmaMaskBits: 32)
        let ring = NICRing(memory: guest.memory, device: narrow, verify: false)
        let page = guest.memory.page(at: guest.memory.swiotlbPages.lowerBound)
        #expect(!ring.consume(guest.memory.unencryptedDMAAddress(of: page.physicalAddress), length: 64, flow: 0, streamOffset: 0))
        #expect(ring.statistics.dmaFaults == 1)
        #expect(ring.statistics.firstProblem?.contains("mask") == true)
        let wide = NICRing(memory: guest.memory, device: try guest.devices.add(name: "nic64"), verify: false)
        #expect(wide.consume(guest.memory.unencryptedDMAAddress(of: page.physicalAddress), length: 64, flow: 0, streamOffset: 0))
        #expect(!wide.consume(DMAAddress(page.physicalAddress.rawValue), length: 64, flow: 0, streamOffset: 0),
                "an address without the shared bit names private memory")
    }
}

@Suite struct WorkloadValidationTests {
    @Test func everyBadParameterIsNamed() {
        func expectInvalid(_ parameter: String, _ change: (inout Workload) -> Void) {
            var w = Workload()
            change(&w)
            #expect {
                try w.validate()
            } throws: { error in
                guard case ParameterError.invalid(let name, _) = error else { return false }
                return name == parameter
            }
        }
        expectInvalid("senders") { $0.senders = 0 }
        expectInvalid("queues") { $0.queues = 0 }
        expectInvalid("flows") { $0.flows = 1; $0.senders = 2 }
        expectInvalid("message") { $0.messageBytes = 0 }
        expectInvalid("message") { $0.messageBytes = 8 << 20 }
        expectInvalid("rtt-us") { $0.roundTripMicroseconds = -1 }
        expectInvalid("duration") { $0.durationSeconds = 0 }
        expectInvalid("line-rate-gbps") { $0.lineRateGbps = 0 }
        expectInvalid("send-buffer") { $0.sendBufferBytes = 100; $0.messageBytes = 50 }
        #expect(throws: ParameterError.self) { try DesignRegistry.shared.design(named: "page_pool") }
    }
}

@Suite struct CompareTests {
    @Test func interleavedRoundsAddUpAndKeepEachRoundsThroughput() throws {
        let w = Small.workload(seconds: 0.4)
        let results = try Experiment.compare([.bounce, .pagePool], workload: w, rounds: 2, configuration: Small.configuration)
        #expect(results.map(\.design) == ["bounce", "page-pool"])
        for r in results {
            #expect(r.roundGbps.count == 2)
            #expect(r.gbpsRange.lowerBound <= r.gbps && r.gbps <= r.gbpsRange.upperBound)
            #expect(r.workload.durationSeconds == 0.4, "the report shows the whole duration, not a round's")
            #expect(r.verifiedBytes == r.payloadBytes && r.payloadBytes > 0)
            #expect(r.passed)
        }
        #expect(results[0].copiesPerByte == 2)
        #expect(results[1].copiesPerByte == 1)
    }

    @Test func aggregateSumsCountersAndTakesPeaks() throws {
        let one = try Experiment.run(.bounce, workload: Small.workload(seconds: 0.1), configuration: Small.configuration)
        var two = one
        two.swiotlbPeakSlots = one.swiotlbPeakSlots + 5
        two.payloadBytes = 3
        let total = TransmitResult.aggregate([one, two])
        #expect(total.payloadBytes == one.payloadBytes + 3)
        #expect(total.swiotlbPeakSlots == one.swiotlbPeakSlots + 5)
        #expect(total.bytesCopiedBySender == 2 * one.bytesCopiedBySender)
        #expect(total.roundGbps.count == 2)
    }
}
