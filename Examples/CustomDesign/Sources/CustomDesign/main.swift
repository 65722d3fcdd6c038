@_spi(PagePoolProvider) import DMAPools
import NetStack
import NetStackReports

#if canImport(Glibc)
import Glibc
#endif

// A user's design and provider in the same comparison as the built-ins.
//
//   swift run -c release CustomDesign [--duration SECONDS] [--rounds N]
//
// 1. Register the plug-ins, exactly as the built-ins are registered.
// 2. Resolve the designs by name and compare them on the default workload,
//    the NIC checking every byte (--verify), paired with bounce round by
//    round; print the same report as `txsim compare`.
// 3. Show that a region page which outlives its pool (released_refcnt) comes
//    home to the provider through the guest's free path.

func fail(_ message: String, status: Int32) -> Never {
    var text = "CustomDesign: \(message)\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(status)
}

/// `--duration` and `--rounds`, checked by the library's own rules.
func options() -> (Workload, Int) {
    var duration = 1.0, rounds = 2
    var arguments = CommandLine.arguments.dropFirst()
    while let option = arguments.popFirst() {
        guard let value = arguments.popFirst() else { fail("\(option) needs a value", status: 64) }
        switch option {
        case "--duration":
            guard let v = Double(value) else { fail("invalid --duration: '\(value)' is not a number of seconds", status: 64) }
            duration = v
        case "--rounds":
            guard let v = Int(value) else { fail("invalid --rounds: '\(value)' is not a whole number", status: 64) }
            rounds = v
        default:
            fail("unknown option \(option) (options: --duration SECONDS, --rounds N)", status: 64)
        }
    }
    do {
        return (try Workload(durationSeconds: duration, verify: true), rounds)
    } catch {
        fail("\(error)", status: 64)
    }
}

let (workload, rounds) = options()

// 1. The plug-ins go into the same registry txsim resolves names in.
let registry = DesignRegistry.shared
do {
    try registry.register(SharedRegionProviderKind())
    try registry.register(RegionPoolDesignKind())
} catch {
    fail("\(error)", status: 1)
}

// 2. The comparison: the user's design beside three built-ins, by name, and
//    the standard report (NetStackReports: also report.json(), .csv(), .svg()).
let report: Report
do {
    let kinds = try registry.designs(named: "bounce,frag-refill,page-pool,region-pool")
    report = try Report.compare(kinds, workload: workload, plan: ComparisonPlan(rounds: rounds, baseline: .bounce)) { kind, round in
        progressLine(kind.name, round)
    }
} catch {
    fail("\(error)", status: 64)
}
print(report.table())
let results = report.results

func progressLine(_ name: String, _ round: Int) {
    var text = "CustomDesign: round \(round + 1): \(name)\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

// 3. released_refcnt: a frame's clone holds a region page when the pool lets
//    it go, and still holds it after the pool is destroyed. Its last put comes
//    home through Guest.putPage -> the owner kind -> the provider.
func pageOutlivesItsPool() throws -> Bool {
    let guest = try Guest(GuestMemoryConfiguration(guestBytes: 256 << 20, swiotlbBytes: 32 << 20, hypercall: .free))
    let device = try guest.devices.add(name: "nic0", dmaMaskBits: 64)
    let region = try SharedRegionProvider(guest: guest, bytes: 2 << 20)
    var parameters = PagePoolParameters()
    parameters.order = PageGeometry.socketFragOrder
    parameters.flags = [.dmaMap, .transmit]
    parameters.dmaDirection = .toDevice
    parameters.device = device
    parameters.name = "demo"
    let pool = try PagePool(parameters, provider: region)
    let page = try pool.allocatePage()
    page.retain()                      // an skb clone takes a reference
    pool.put(page)                     // the pool lets go: released_refcnt
    pool.destroy()
    let destroyed = pool.waitForShutdown(timeout: .seconds(5))
    let heldWhileOut = guest.memory.census()[SharedRegionOwner.owner, default: 0]
    guest.putPage(page)                // the clone's last put: home, through the owner kind
    try region.close()
    let lost = guest.lostPages()
    print("""

    A region page that outlives its pool (released_refcnt):
      pool released_refcnt                 \(pool.statistics.recycling.releasedRefcount)
      pool destroyed while the page was out \(destroyed ? "yes" : "NO")
      region pages counted while it was out \(heldWhileOut) (shared-region owner)
      came home late through the guest     \(region.cameHomeLate.load(ordering: .relaxed))
      pages lost after closing the region  \(lost)
    """)
    return destroyed && pool.statistics.recycling.releasedRefcount == 1
        && region.cameHomeLate.load(ordering: .relaxed) == 1 && lost == 0
}

let cameHome: Bool
do { cameHome = try pageOutlivesItsPool() } catch { fail("\(error)", status: 1) }
if !cameHome || results.contains(where: { !$0.passed }) { exit(2) }
