import ArgumentParser
import DMAPools

@main
struct TXSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txsim",
        abstract: "Run and compare confidential-VM transmit designs over modelled page_pool and swiotlb.",
        subcommands: [Report.self, Microbench.self],
        defaultSubcommand: Report.self
    )
}
