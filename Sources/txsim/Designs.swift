import ArgumentParser
import NetStackReports
import NetStack

struct Designs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the registered TX designs and page_pool providers, each with a line on what it does.")

    func run() {
        let registry = DesignRegistry.shared
        print("designs (--designs, --design):")
        for kind in registry.designs { print("  " + kind.name.padded(16) + kind.summary) }
        print("page_pool providers (--provider, for page-pool):")
        for kind in registry.providers { print("  " + kind.name.padded(16) + kind.summary) }
        print("Each design runs on a fresh guest set up to what it needs (zero-copy cap, free-path hook, reserves) before the clock starts: set-up is not timed.")
    }
}
