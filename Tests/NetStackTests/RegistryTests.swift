import DMAPools
import NetStack
import Testing

// Plain `import NetStack` (not `@testable`): a user's kind needs only the public API.

/// A user's design: today's bounce path under a name of its own, which also
/// asks for the free-path hook so the test can see the guest it got.
final class RenamedBounceDesign: GuestDesign, @unchecked Sendable {
    override var name: String { "test-renamed-bounce" }
}

struct RenamedBounceKind: TransmitDesignKind {
    var name: String { "test-renamed-bounce" }
    var summary: String { "bounce under another name, on a guest with the free-path hook" }
    func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements {
        GuestRequirements(freePath: .swiotlbHook)
    }
    func makeDesign(in context: DesignContext) throws -> any TransmitDesign {
        RenamedBounceDesign(guest: context.guest, device: context.device)
    }
}

/// A kind that refuses every workload with more than one queue.
struct OneQueueKind: TransmitDesignKind {
    var name: String { "test-one-queue" }
    var summary: String { "refuses more than one queue" }
    func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements { .init() }
    func check(workload: Workload, configuration: ExperimentConfiguration) throws(ExperimentError) {
        if workload.queues > 1 { throw .invalid(.invalid(parameter: "queues", reason: "\(workload.queues) must be 1 for test-one-queue")) }
    }
    func makeDesign(in context: DesignContext) throws -> any TransmitDesign { BounceDesign(guest: context.guest, device: context.device) }
}

@Suite struct DesignRegistryTests {
    @Test func theBuiltInsAreRegisteredInReportOrder() {
        let registry = DesignRegistry()
        #expect(registry.designs.map(\.name) == ["bounce", "frag-refill", "page-pool", "decrypted-pool", "inline-decrypt"])
        #expect(registry.providers.map(\.name) == ["swiotlb", "decrypted", "system"])
        #expect(registry.designs.allSatisfy { !$0.summary.isEmpty })
        #expect(DesignRegistry(builtIns: false).designs.isEmpty)
    }

    @Test func aUsersKindRegistersAndResolvesLikeABuiltIn() throws {
        let registry = DesignRegistry()
        try registry.register(RenamedBounceKind())
        #expect(try registry.design(named: "test-renamed-bounce").summary == RenamedBounceKind().summary)
        #expect(try registry.designs(named: "bounce,test-renamed-bounce").map(\.name) == ["bounce", "test-renamed-bounce"])
        #expect(registry.designNames.hasSuffix(", inline-decrypt, test-renamed-bounce"))
        // The error lists what is registered, the user's kind included.
        #expect {
            _ = try registry.design(named: "nope")
        } throws: { error in
            "\(error)" == "invalid --design: unknown design 'nope' (registered: bounce, frag-refill, page-pool, decrypted-pool, inline-decrypt, test-renamed-bounce)"
        }
    }

    @Test func namesAreUniqueAndPlain() {
        let registry = DesignRegistry()
        #expect(throws: RegistryError.duplicateName("bounce", of: "design")) { try registry.register(BounceDesignKind()) }
        #expect(throws: RegistryError.duplicateName("swiotlb", of: "provider")) { try registry.register(SWIOTLBProviderKind()) }
        struct Badly: TransmitDesignKind {
            var name: String
            var summary: String { "" }
            func requirements(workload: Workload, configuration: ExperimentConfiguration) -> GuestRequirements { .init() }
            func makeDesign(in context: DesignContext) throws -> any TransmitDesign { BounceDesign(guest: context.guest, device: context.device) }
        }
        for name in ["", "Page-Pool", "a,b", "two words"] {
            #expect(throws: RegistryError.invalidName(name, of: "design")) { try registry.register(Badly(name: name)) }
        }
    }

    /// The guest a design gets is the one its kind asks for.
    @Test func eachKindGetsTheGuestItRequires() throws {
        let c = Small.configuration
        let w = Small.workload()
        let (fragRefill, _, _) = try Experiment.prepare(.fragRefill, workload: w, configuration: c)
        #expect(fragRefill.freePath == .swiotlbHook && fragRefill.swiotlb.zeroCopyPercent == c.zeroCopyPercent)
        let (bounce, _, _) = try Experiment.prepare(.bounce, workload: w, configuration: c)
        #expect(bounce.freePath == .plain && bounce.swiotlb.zeroCopyPercent == 0)
        var decrypted = c
        decrypted.poolProvider = .decrypted
        let (pagePool, _, design) = try Experiment.prepare(.pagePool, workload: w, configuration: decrypted)
        #expect(pagePool.swiotlb.zeroCopyPercent == 0, "pools over pre-decrypted pages take no swiotlb runs")
        #expect((design as? PagePoolDesign)?.provider is DecryptedPageProvider)
        let (renamed, _, _) = try Experiment.prepare(RenamedBounceKind(), workload: w, configuration: c)
        #expect(renamed.freePath == .swiotlbHook)
        try design.shutdown()
    }

    @Test func aKindsOwnCheckRefusesBeforeAnythingRuns() {
        var w = Small.workload()
        w.queues = 2
        #expect {
            try Experiment.check([.bounce, OneQueueKind()], workload: w, configuration: Small.configuration)
        } throws: { error in
            "\(error)" == "invalid --queues: 2 must be 1 for test-one-queue"
        }
    }

    /// A user's kind runs in the same comparison as the built-ins, and its
    /// set-up is reported apart from the timed window.
    @Test func aUsersKindIsComparedBesideTheBuiltIns() throws {
        let results = try Experiment.compare([.bounce, RenamedBounceKind(), .pagePool], workload: Small.workload(seconds: 0.2),
                                             configuration: Small.configuration)
        #expect(results.map(\.design) == ["bounce", "test-renamed-bounce", "page-pool"])
        for r in results {
            #expect(r.passed, "\(r.design): \(r.firstProblem ?? "")")
            #expect(r.setupSeconds > 0)
        }
        #expect(results[1].copiesPerByte == 2)
    }

    @Test func configurationsCompareByProviderName() throws {
        var a = ExperimentConfiguration(), b = ExperimentConfiguration()
        #expect(a == b && a.hashValue == b.hashValue)
        b.poolProvider = .decrypted
        #expect(a != b)
        a.poolProvider = try DesignRegistry.shared.provider(named: "decrypted")
        #expect(a == b)
    }
}
