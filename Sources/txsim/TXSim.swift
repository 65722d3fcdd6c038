import ArgumentParser
import DMAPools

@main
struct TXSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txsim",
        abstract: "Run and compare confidential-VM transmit designs over modelled page_pool and swiotlb.",
        discussion: """
            Allocators: jemalloc serves the modelled guest's general allocator (its own \
            arena over the guest's private memory); txsim's own malloc stays glibc's, as \
            in any client of DMAPools. To run txsim with jemalloc as its process malloc \
            too, start it with LD_PRELOAD=libjemalloc.so.2.
            """,
        subcommands: [Compare.self, Run.self, BreakEven.self, IOMMUSweep.self, ZeroCopyMix.self, Block.self, Designs.self, Layout.self, Microbench.self, Fuzz.self, Reliability.self, Calibrate.self, Project.self],
        defaultSubcommand: Compare.self
    )
}
