import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The built `txsim`: next to the test bundle (`.build/<configuration>/`), or
/// nil when it is missing, which fails every test that needs it.
let txsimPath: String? = {
    var candidates: [String] = []
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    if n > 0 {
        let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let slash = exe.lastIndex(of: "/") { candidates.append(String(exe[..<slash]) + "/txsim") }
    }
    // Tests/TXSimTests/BadInputTests.swift -> the package root's debug build.
    let file = #filePath
    var root = file
    for _ in 0..<3 { if let slash = root.lastIndex(of: "/") { root = String(root[..<slash]) } }
    candidates.append(root + "/.build/debug/txsim")
    return candidates.first { access($0, X_OK) == 0 }
}()

/// What one txsim run printed (standard output and error together) and its exit status.
struct Outcome {
    var status: Int32
    var output: String
    var seconds: Double
}

/// Runs txsim with `arguments`, collecting its output.
func txsim(_ arguments: [String]) throws -> Outcome {
    let path = try #require(txsimPath, "the built txsim was not found next to the test bundle or in .build/debug: run `swift build --build-tests` first")
    var pipe: [Int32] = [0, 0]
    #expect(Glibc.pipe(&pipe) == 0)
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, pipe[1], 2)
    posix_spawn_file_actions_addclose(&actions, pipe[0])
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var start = timespec(), end = timespec()
    clock_gettime(CLOCK_MONOTONIC, &start)
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
    close(pipe[1])
    #expect(spawned == 0, "could not start \(path): \(String(cString: strerror(spawned)))")
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = read(pipe[0], &chunk, chunk.count)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    close(pipe[0])
    var status: Int32 = 0
    _ = waitpid(pid, &status, 0)
    clock_gettime(CLOCK_MONOTONIC, &end)
    let exited = (status & 0x7f) == 0
    let code: Int32 = exited ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
    return Outcome(status: code, output: String(decoding: bytes, as: UTF8.self), seconds: seconds)
}

/// One bad input: the arguments, and what the error must say.
struct BadInput: CustomTestStringConvertible, Sendable {
    var arguments: [String]
    var message: String
    var testDescription: String { arguments.isEmpty ? "(no arguments)" : arguments.joined(separator: " ") }
}

/// Argument-parser's validation exit status (EX_USAGE).
let usageError: Int32 = 64

let badInputs: [BadInput] = [
    // Negative numbers reach the range check instead of being taken for options.
    BadInput(arguments: ["--senders", "-1"], message: "invalid --senders: -1 must be in 1...64"),
    BadInput(arguments: ["--duration", "-1"], message: "invalid --duration: -1.0 must be in 0.05...3600 seconds"),
    BadInput(arguments: ["--rtt-us", "-5"], message: "invalid --rtt-us: -5 must be in 0...1000000 microseconds"),
    BadInput(arguments: ["--hypercall-ns", "-1"], message: "invalid --hypercall-ns: -1 must be in 0...1000000 ns"),
    BadInput(arguments: ["fuzz", "--seconds", "-1"], message: "invalid --seconds: -1.0 must be in (0, 86400]"),
    BadInput(arguments: ["reliability", "--fuzz-seconds", "-1"], message: "invalid --fuzz-seconds: -1.0 must be in (0, 86400]"),
    BadInput(arguments: ["layout", "--mappings", "-1"], message: "invalid --mappings: -1 must be in 1...10000000"),
    BadInput(arguments: ["run", "--queues", "-3"], message: "invalid --queues: -3 must be in 1...64"),
    // The option at fault is the one named.
    BadInput(arguments: ["--send-buffer", "0"], message: "invalid --send-buffer: 0 bytes must be in 4096...1073741824"),
    BadInput(arguments: ["--message", "0"], message: "invalid --message: 0 bytes must be in 1...send buffer"),
    // Combinations that used to fail deep inside, refused with the option to change.
    BadInput(arguments: ["--guest-mib", "64"],
             message: "invalid --swiotlb-mib: the swiotlb (64 MiB, the default: 6% of guest memory clamped to 64 MiB...1 GiB) must be smaller than guest memory (--guest-mib 64)"),
    BadInput(arguments: ["--swiotlb-mib", "1023"],
             message: "but the guest has 1 MiB private (--guest-mib 1024 less the 1023 MiB swiotlb): lower --flows or --send-buffer, raise --guest-mib, or give a smaller --swiotlb-mib"),
    BadInput(arguments: ["--senders", "64", "--queues", "64", "--flows", "4096"],
             message: "the workload does not fit the guest: 4096 flows need up to 24 GiB of private guest memory"),
    BadInput(arguments: ["--swiotlb-mib", "1"],
             message: "but the swiotlb has 1 MiB: raise --swiotlb-mib to at least 4, or lower --queues, --senders or --send-buffer"),
    BadInput(arguments: ["layout", "--swiotlb-mib", "2"], message: "invalid --swiotlb-mib: the exercise keeps up to 64 mappings of 64 KiB live"),
    // Modelled costs and rates have upper bounds.
    BadInput(arguments: ["--hypercall-ns", "1000000000"], message: "invalid --hypercall-ns: 1000000000 must be in 0...1000000 ns (1 ms)"),
    BadInput(arguments: ["--hypercall-page-ns", "1000000"], message: "invalid --hypercall-page-ns: 1000000 must be in 0...100000 ns"),
    BadInput(arguments: ["--rtt-us", "2000000"], message: "invalid --rtt-us: 2000000 must be in 0...1000000 microseconds"),
    BadInput(arguments: ["--line-rate-gbps", "0"], message: "invalid --line-rate-gbps: 0.0 must be in 0.001...10000 Gbps"),
    // --platform iommu and its modelled costs.
    BadInput(arguments: ["--platform", "tdx"], message: "invalid --platform: 'tdx' must be coco or iommu"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-mode", "eager"], message: "invalid --iommu-mode: 'eager' must be strict or lazy"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-map-ns", "-1"], message: "invalid --iommu-map-ns: -1 must be in 0...1000000 ns (1 ms)"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-pte-ns", "-1"], message: "invalid --iommu-pte-ns: -1 must be in 0...1000000 ns (1 ms)"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-invalidate-ns", "1000001"], message: "invalid --iommu-invalidate-ns: 1000001 must be in 0...1000000 ns (1 ms)"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-flush-ns", "2000000"], message: "invalid --iommu-flush-ns: 2000000 must be in 0...1000000 ns (1 ms)"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-flush-queue", "0"], message: "invalid --iommu-flush-queue: 0 must be in 1...65536"),
    BadInput(arguments: ["--platform", "iommu", "--iommu-charge", "x"], message: "invalid --iommu-charge: 'x' must be spin or account-only"),
    BadInput(arguments: ["--iommu-mode", "lazy"], message: "invalid --iommu-mode: applies only with --platform iommu (the platform is coco)"),
    BadInput(arguments: ["compare", "--iommu-flush-ns", "10"], message: "invalid --iommu-flush-ns: applies only with --platform iommu (the platform is coco)"),
    BadInput(arguments: ["--platform", "iommu", "--designs", "frag-refill"], message: "invalid --designs: frag-refill does not apply to --platform iommu"),
    BadInput(arguments: ["--platform", "iommu", "--provider", "swiotlb", "--designs", "page-pool"],
             message: "invalid --provider: swiotlb does not apply to --platform iommu"),
    BadInput(arguments: ["--provider", "system", "--designs", "page-pool"], message: "invalid --provider: system does not apply to --platform coco"),
    // Runs that would do nothing useful.
    BadInput(arguments: ["--svg", "/nonexistent/dir/x.svg"],
             message: "invalid --svg: cannot write /nonexistent/dir/x.svg: directory /nonexistent/dir does not exist"),
    BadInput(arguments: ["--svg", "/"], message: "invalid --svg: / is a directory"),
    BadInput(arguments: ["--designs", ""], message: "invalid --designs: '' names no design: give one or more of bounce, frag-refill"),
    BadInput(arguments: ["--designs", "bounce,"], message: "invalid --designs: 'bounce,' names no design"),
    BadInput(arguments: ["fuzz", "--input", "/"], message: "invalid --input: / is a directory, not a file of raw bytes"),
    BadInput(arguments: ["fuzz", "--input", "/nonexistent/corpus"], message: "invalid --input: cannot open /nonexistent/corpus: No such file or directory"),
    BadInput(arguments: ["--duration", "0.000001"], message: "invalid --duration: 1e-06 must be in 0.05...3600 seconds"),
    BadInput(arguments: ["--rounds", "100", "--duration", "0.01"], message: "invalid --duration: 0.01 must be in 0.05...3600 seconds"),
    BadInput(arguments: ["--rounds", "100", "--duration", "1"],
             message: "invalid --rounds: 100 rounds of --duration 1.0 s leave 0.01 s per round, less than the 0.05 s a round needs"),
    BadInput(arguments: ["--rounds", "0"], message: "invalid --rounds: 0 must be in 1...100"),
    // Values that used to be silently changed or repeated.
    BadInput(arguments: ["--designs", "page-pool,page-pool"], message: "invalid --designs: page-pool is named twice"),
    BadInput(arguments: ["--pool-ring", "20000"], message: "invalid --pool-ring: 20000 must be in 1...16384 (the kernel caps pool_size at 16384)"),
    // Names resolve through the registry; the error lists what is registered.
    BadInput(arguments: ["run", "--design", "page_pool"],
             message: "invalid --design: unknown design 'page_pool' (registered: bounce, frag-refill, page-pool, decrypted-pool, inline-decrypt)"),
    BadInput(arguments: ["--designs", "bounce,nope"], message: "invalid --designs: unknown design 'nope' (registered: bounce, frag-refill"),
    BadInput(arguments: ["--provider", "nonesuch"], message: "invalid --provider: unknown page_pool provider 'nonesuch' (registered: swiotlb, decrypted, system)"),
    // Paired comparisons: the baseline must run, the stability cap is a round count.
    BadInput(arguments: ["--baseline", "page_pool"],
             message: "invalid --baseline: unknown design 'page_pool' (registered: bounce, frag-refill, page-pool, decrypted-pool, inline-decrypt)"),
    BadInput(arguments: ["--designs", "page-pool,frag-refill", "--baseline", "bounce"],
             message: "invalid --baseline: bounce is not among the designs run (page-pool, frag-refill)"),
    BadInput(arguments: ["--until-stable", "3"], message: "invalid --until-stable: 3 must be in --rounds (40)...100"),
    BadInput(arguments: ["--rounds", "4", "--until-stable", "101"], message: "invalid --until-stable: 101 must be in --rounds (4)...100"),
    BadInput(arguments: ["--until-stable", "-1"], message: "invalid --until-stable: -1 must be in --rounds (40)...100"),
    BadInput(arguments: ["--memory", "lazy"], message: "invalid --memory: 'lazy' must be resident or on-demand"),
    BadInput(arguments: ["--direct-map", "1g"], message: "invalid --direct-map: '1g' must be 2m or 4k"),
    BadInput(arguments: ["calibrate", "--calibration-rtt-us", "-1"], message: "invalid --calibration-rtt-us: -1 must be in 0...1000000 microseconds"),
    BadInput(arguments: ["calibrate", "--calibration-flows", "0"], message: "invalid --calibration-flows: 0 must be in 1...4096"),
    BadInput(arguments: ["break-even", "--per-page-ns", "10,x"], message: "invalid --per-page-ns: 'x' must be a number in 0...100000"),
    BadInput(arguments: ["break-even", "--per-call-ns", "-5"], message: "invalid --per-call-ns: '-5' must be a number in 0...1000000"),
    BadInput(arguments: ["break-even", "--per-call-ns", "", "--per-page-ns", ""], message: "both are empty, nothing to sweep"),
    BadInput(arguments: ["break-even", "--rounds", "0"], message: "invalid --rounds: 0 must be in 1...100"),
    BadInput(arguments: ["zerocopy-mix", "--fractions", "0,1.5"], message: "invalid --fractions: '1.5' must be a number in 0.0...1.0"),
    BadInput(arguments: ["zerocopy-mix", "--msg-zerocopy"], message: "the sweep sets the mix itself"),
    BadInput(arguments: ["--zerocopy-mix", "2"], message: "invalid --zerocopy-mix: 2.0 must be in 0...1"),
    BadInput(arguments: ["block", "--request-kib", "4,256"], message: "invalid --request-kib: '256' must be a number in 1...128"),
    BadInput(arguments: ["block", "--queue-depth", "0"], message: "invalid --queue-depth: 0 must be in 1...64"),
    // PREEMPT_RT scheduling and short-lived connections.
    BadInput(arguments: ["--preempt-rt", "--rt-tasks-per-cpu", "0"], message: "invalid --rt-tasks-per-cpu: 0 must be in 1...64"),
    BadInput(arguments: ["--preempt-rt", "--rt-tasks-per-cpu", "65"], message: "invalid --rt-tasks-per-cpu: 65 must be in 1...64"),
    BadInput(arguments: ["--preempt-rt", "--preempt-every", "0"], message: "invalid --preempt-every: 0 must be in 1...1000000"),
    BadInput(arguments: ["--preempt-rt", "--preempt-every", "-2"], message: "invalid --preempt-every: -2 must be in 1...1000000"),
    BadInput(arguments: ["--preempt-every", "4"], message: "invalid --preempt-every: applies only with --preempt-rt"),
    BadInput(arguments: ["--rt-tasks-per-cpu", "4"], message: "invalid --rt-tasks-per-cpu: applies only with --preempt-rt"),
    BadInput(arguments: ["--preempt-seed", "4"], message: "invalid --preempt-seed: applies only with --preempt-rt"),
    BadInput(arguments: ["--preempt-rt", "--tx-socket-pointer", "global"], message: "invalid --tx-socket-pointer: 'global' must be per-cpu or per-task"),
    BadInput(arguments: ["--tx-socket-pointer", "per-task"], message: "invalid --tx-socket-pointer: applies only with --preempt-rt"),
    BadInput(arguments: ["--connection-bytes", "100"], message: "invalid --connection-bytes: 100 must be in 65536...1099511627776"),
    BadInput(arguments: ["--header-bytes", "4096"], message: "invalid --header-bytes: 4096 must be in 0...2048 bytes"),
    BadInput(arguments: ["run", "--header-bytes", "-1"], message: "invalid --header-bytes: -1 must be in 0...2048 bytes"),
    BadInput(arguments: ["shared", "--header-bytes", "2049"], message: "invalid --header-bytes: 2049 must be in 0...2048 bytes"),
    BadInput(arguments: ["shared", "--slab-batch", "0"], message: "invalid --slab-batch: 0 must be in 1...1024"),
    BadInput(arguments: ["shared", "--slab-sizes", "64,4096"], message: "invalid --slab-sizes: '4096' must be a number in 1...2048"),
    BadInput(arguments: ["shared", "--queue-depth", "65"], message: "invalid --queue-depth: 65 must be in 1...64"),
    BadInput(arguments: ["shared", "--request-kib", "0"], message: "invalid --request-kib: '0' must be a number in 1...128"),
    BadInput(arguments: ["shared", "--design", "nope"], message: "invalid --design"),
    BadInput(arguments: ["shared", "--general-design", "nope"], message: "invalid --general-design"),
    BadInput(arguments: ["shared", "--rounds", "0"], message: "invalid --rounds: 0 must be in 1...100"),
    BadInput(arguments: ["shared", "--platform", "iommu"], message: "invalid --platform: txsim shared runs on a confidential guest (coco) only"),
]

@Suite struct TXSimBadInputTests {
    /// Every bad input: its message, the usage exit status, nothing run (no
    /// report, no leak warning), and quickly.
    @Test(arguments: badInputs)
    func isRefusedByNameBeforeAnythingRuns(_ input: BadInput) throws {
        let outcome = try txsim(input.arguments)
        #expect(outcome.status == usageError, "exit status \(outcome.status): \(outcome.output)")
        #expect(outcome.output.contains(input.message), "\(outcome.output)")
        #expect(!outcome.output.contains("Workload:"), "a report was printed: \(outcome.output)")
        #expect(!outcome.output.contains("still live"), "pages were left behind: \(outcome.output)")
        #expect(!outcome.output.contains("Missing value"), "\(outcome.output)")
    }

    /// A wire far slower than the senders: the run stops at its drain limit
    /// (one RTT plus a second after its duration) instead of draining every
    /// send buffer at line rate (34 s before), and says what it abandoned.
    @Test func aSlowWireCannotHoldARunPastItsDrainLimit() throws {
        let outcome = try txsim(["run", "--design", "bounce", "--line-rate-gbps", "0.001", "--duration", "0.3", "--quiet", "--json"])
        #expect(outcome.status == 0, "\(outcome.output)")
        #expect(outcome.seconds < 20, "took \(outcome.seconds) s")
        #expect(outcome.output.contains("\"lost_pages\": 0"), "\(outcome.output)")
        #expect(!outcome.output.contains("\"frames_abandoned\": 0,"), "nothing was abandoned: \(outcome.output)")
    }

    /// The cap each design ran with is reported as used: page-pool over the
    /// pre-decrypted provider takes no swiotlb runs (0), frag-refill does (90).
    @Test func eachDesignReportsTheZeroCopyCapItRanWith() throws {
        let outcome = try txsim(["compare", "--designs", "frag-refill,page-pool", "--provider", "decrypted",
                                 "--duration", "0.05", "--rounds", "1", "--quiet", "--json"])
        #expect(outcome.status == 0, "\(outcome.output)")
        let lines = outcome.output.split(separator: "\n")
        let fragRefill = try #require(lines.first { $0.contains("\"design\": \"frag-refill\"") })
        let pagePool = try #require(lines.first { $0.contains("\"design\": \"page-pool\"") })
        #expect(fragRefill.contains("\"zerocopy_tx_percent\": 90"))
        #expect(pagePool.contains("\"zerocopy_tx_percent\": 0"))
    }

    /// The test finds the binary it is about (it fails, never skips, without it).
    @Test func theBuiltTXSimIsFound() throws {
        let path = try #require(txsimPath)
        #expect(path.hasSuffix("/txsim"))
    }
}
