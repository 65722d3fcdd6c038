import ArgumentParser
import DMAPools

/// The default report: a confidential-VM layout and a short swiotlb exercise.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the default confidential-VM layout and a short swiotlb exercise.")

    @Option(help: "Guest memory in MiB.")
    var guestMiB: Int = 1024

    func run() throws {
        let memory = try GuestMemory(.init(guestBytes: guestMiB << 20))
        let c = memory.configuration
        print("Confidential VM layout")
        print("  guest memory      \(c.guestBytes >> 20) MiB, \(memory.pageCount) pages of \(PageGeometry.size) B")
        print("  private domain    \(memory.privatePages.count) pages (general allocator: jemalloc)")
        print("  swiotlb (shared)  \(c.swiotlbBytes >> 20) MiB (6% of memory clamped to 64 MiB..1 GiB)")
        print("  shared DMA bit    \(c.sharedBit)")
        print("  hypercall model   \(c.hypercall.perCallNanoseconds) ns/call + \(c.hypercall.perPageNanoseconds) ns/page (modelled, \(c.hypercall.charge.rawValue))")
    }
}
