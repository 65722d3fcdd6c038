import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `txsim calibrate` and `txsim project` on bad input, and `project` on a
/// hand-written profile (nothing is calibrated, so nothing is timed).
@Suite struct TXSimProjectTests {
    static let badInputs: [BadInput] = [
        BadInput(arguments: ["project", "--senders", "0"], message: "invalid --senders: '0' in '0' must be an integer in 1...64"),
        BadInput(arguments: ["project", "--queues", "1,100"], message: "invalid --queues: '100' in '1,100' must be an integer in 1...64"),
        BadInput(arguments: ["project", "--flows", "x"], message: "invalid --flows: 'x' in 'x' must be an integer in 1...4096"),
        BadInput(arguments: ["project", "--cpu-share", "2"], message: "invalid --cpu-share: 2.0 must be in (0, 1]"),
        BadInput(arguments: ["project", "--line-rate-gbps", "-1"], message: "invalid --line-rate-gbps: -1.0 must be in 0.001...10000 Gbps"),
        BadInput(arguments: ["project", "--zerocopy-percent", "95"], message: "invalid --zerocopy-percent: 95 must be in 1...90"),
        BadInput(arguments: ["project", "--swiotlb-mib", "0"], message: "invalid --swiotlb-mib: 0 MiB must be in 1...65536 MiB"),
        BadInput(arguments: ["project", "--memory-bandwidth-gbytes", "0"], message: "invalid --memory-bandwidth-gbytes: 0.0 must be in (0, 100000] GB/s"),
        BadInput(arguments: ["project", "--profile", "/nonexistent/profile.json"],
                 message: "invalid --profile: cannot read /nonexistent/profile.json: No such file or directory"),
        BadInput(arguments: ["project", "--designs", "bogus"], message: "invalid --designs: unknown design 'bogus'"),
        BadInput(arguments: ["project", "--json", "--csv"], message: "--json and --csv are exclusive"),
        BadInput(arguments: ["project", "--validate", "--rounds", "0"], message: "invalid --rounds: 0 must be in 1...100"),
        BadInput(arguments: ["project", "--validate", "--duration", "0.1"], message: "invalid --duration: 0.1 must be in 0.15"),
        BadInput(arguments: ["project", "--svg", "/nonexistent/dir/p.svg"], message: "invalid --svg: cannot write /nonexistent/dir/p.svg"),
        BadInput(arguments: ["calibrate", "--repetitions", "0"], message: "invalid --repetitions: 0 must be in 1...50"),
        BadInput(arguments: ["calibrate", "--seconds-per-run", "0.01"], message: "invalid --seconds-per-run: 0.01 must be in 0.05...10 seconds"),
        BadInput(arguments: ["calibrate", "--designs", "page-pool,page-pool"], message: "invalid --designs: page-pool is named twice"),
        BadInput(arguments: ["calibrate", "--profile", "/"], message: "invalid --profile: / is a directory"),
    ]

    @Test(arguments: badInputs)
    func isRefusedByNameBeforeAnythingRuns(_ input: BadInput) throws {
        let outcome = try txsim(input.arguments)
        #expect(outcome.status == usageError, "exit status \(outcome.status): \(outcome.output)")
        #expect(outcome.output.contains(input.message), "\(outcome.output)")
        #expect(outcome.seconds < 10)
    }

    /// A profile written by hand for a design of the user's: the projection
    /// runs on it, names the design, and says every cost was given.
    static let handWritten = """
        {"format": 1,
         "machine": {"cores": 64, "last_level_cache_bytes": 33554432, "date": "2026-12-01", "note": "written by hand"},
         "method": {"senders": 1, "queues": 1, "flows": 2, "rtt_us": 0, "message_bytes": [65536, 16384], "seconds_per_run": 0, "repetitions": 0},
         "machine_costs": {
           "copy_same_core_hot_ns_per_byte": {"value": 0.03, "source": "perf in a guest"},
           "copy_other_core_ns_per_byte": {"value": 0.05, "source": "perf in a guest"},
           "copy_cold_ns_per_byte": {"value": 0.1, "source": "perf in a guest"},
           "swiotlb_map_unmap_32k_ns": {"value": 1500, "source": "perf in a guest"},
           "swiotlb_map_unmap_32k_contended_ns": {"value": 2500, "source": "perf in a guest"},
           "pool_cache_recycle_ns": {"value": 20, "source": "perf in a guest"},
           "pool_ring_recycle_contended_ns": {"value": 100, "source": "perf in a guest"},
           "copy_bandwidth_1_thread_gbytes_per_s": {"value": 10, "source": "perf in a guest"},
           "copy_bandwidth_2_threads_gbytes_per_s": {"value": 18, "source": "perf in a guest"}},
         "designs": [
          {"design": "my-design", "page_source": "uncapped",
           "sender_ns_per_byte": {"value": 0.1, "source": "perf in a guest"},
           "sender_ns_per_frame": {"value": 2000, "source": "perf in a guest"},
           "queue_ns_per_byte": {"value": 0.01, "source": "perf in a guest"},
           "queue_ns_per_frame": {"value": 1000, "source": "perf in a guest"},
           "copies_per_byte": {"value": 1, "source": "perf in a guest"},
           "zero_copy_fraction": {"value": 1, "source": "perf in a guest"},
           "pool_recycles_per_byte": {"value": 0, "source": "perf in a guest"},
           "pool_ring_fraction": {"value": 0, "source": "perf in a guest"},
           "cpu_share": {"value": 1, "source": "perf in a guest"}}]}
        """

    @Test func projectsAHandWrittenProfileAndSaysItsCostsWereGiven() throws {
        let path = "/tmp/txsim-project-test-\(getpid()).json"
        let file = try #require(fopen(path, "w"))
        fputs(Self.handWritten, file)
        fclose(file)
        defer { unlink(path) }
        let json = try txsim(["project", "--profile", path, "--senders", "1,64", "--queues", "1", "--line-rate-gbps", "200", "--json"])
        #expect(json.status == 0, "\(json.output)")
        for key in ["\"design\": \"my-design\"", "\"senders\": 64", "\"queues\": 1", "\"gbps\": ", "\"bound\": ",
                    "\"copies_per_byte\": 1.000", "\"zero_copy_fraction\": 1.000"] {
            #expect(json.output.contains(key), "\(key) in \(json.output)")
        }
        let table = try txsim(["project", "--profile", path, "--senders", "8", "--queues", "2"])
        #expect(table.status == 0, "\(table.output)")
        #expect(table.output.contains("0 costs calibrated"), "\(table.output)")
        #expect(table.output.contains("given: my-design.sender_ns_per_byte: perf in a guest"), "\(table.output)")
        let svg = "/tmp/txsim-project-test-\(getpid()).svg"
        defer { unlink(svg) }
        let chart = try txsim(["project", "--profile", path, "--senders", "1,2,4", "--queues", "1,2", "--svg", svg, "--quiet"])
        #expect(chart.status == 0, "\(chart.output)")
        #expect(access(svg, R_OK) == 0)
        // A broken profile is refused by name.
        let broken = "/tmp/txsim-project-test-broken-\(getpid()).json"
        let f = try #require(fopen(broken, "w"))
        fputs("{\"format\": 1}", f)
        fclose(f)
        defer { unlink(broken) }
        let refused = try txsim(["project", "--profile", broken])
        #expect(refused.status != 0)
        #expect(refused.output.contains("invalid --profile: \(broken) is not a calibration profile"), "\(refused.output)")
    }
}
