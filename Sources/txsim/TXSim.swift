import ArgumentParser
import DMAPools

@main
struct TXSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txsim",
        abstract: "Run and compare confidential-VM transmit designs over modelled page_pool and swiotlb.",
        subcommands: [Compare.self, Run.self, Layout.self, Microbench.self, Fuzz.self, Reliability.self],
        defaultSubcommand: Compare.self
    )
}
