import Foundation
import Testing

/// `txsim project --validate --json` at its smallest (one round, the
/// shortest runs): every point it can run on this machine, each carrying the
/// keys Design/projection.md reads and what each round assumed. Gbps are
/// timing and are not checked here; copies per byte and zero-copy fraction
/// are what a design does, predicted and measured.
@Suite struct TXSimValidationTests {
    @Test func everyPointCarriesItsPairedErrorsItsDistancesAndTheSpeedupItAssumed() throws {
        let outcome = try txsim(["project", "--validate", "--designs", "bounce,page-pool", "--rounds", "1", "--duration", "0.15",
                                 "--seconds-per-run", "0.05", "--repetitions", "1", "--json", "--quiet"])
        #expect(outcome.status == 0, "\(outcome.output)")
        let objects = try jsonObjects(outcome)
        // 2 designs x (1, 2 senders) x (1, 2 queues) x (default, pressure).
        #expect(objects.count == 16)
        for workload in ["default", "pressure"] {
            for senders in [1, 2] {
                for queues in [1, 2] {
                    let names = objects.filter { $0["workload"] as? String == workload && $0["senders"] as? Int == senders && $0["queues"] as? Int == queues }
                        .compactMap { $0["design"] as? String }
                    #expect(names == ["bounce", "page-pool"], "\(workload) \(senders)x\(queues)")
                }
            }
        }
        for o in objects {
            for key in ["predicted_gbps", "measured_gbps", "gbps_error", "gbps_error_min", "gbps_error_max", "cpu_share", "predicted_bound",
                        "copies_per_byte_error", "zero_copy_fraction_error", "within_goal", "round_distances", "rounds_same_distance",
                        "gbps_error_same_distance", "round_parallel_speedups"] {
                #expect(o[key] != nil, "\(key) missing in \(o)")
            }
            #expect(o["rounds"] as? Int == 1)
            // One "calibration/run" pair per round, each near, far or -.
            let distances = try #require(o["round_distances"] as? String).split(separator: "/").map(String.init)
            #expect(distances.count == 2 && distances.allSatisfy { ["near", "far", "-"].contains($0) }, "\(distances)")
            let same = try #require(o["rounds_same_distance"] as? Int)
            #expect(same == (distances[0] != "-" && distances[0] == distances[1] ? 1 : 0))
            #expect((o["gbps_error_same_distance"] is NSNull) == (same == 0))
            // One sender runs on one CPU; two run on at most two.
            let speedups = try #require(o["round_parallel_speedups"] as? String)
            let speedup = try #require(Double(speedups), "\(speedups)")
            if o["senders"] as? Int == 1 { #expect(speedup == 1) } else { #expect(speedup > 0 && speedup <= 2) }
            // Bounce copies every byte twice and never zero-copies; page-pool
            // copies once into pages the device reads in place (a refill the
            // pool cannot serve falls back to a general page, which bounces:
            // under pressure that may happen, within the validation's goal).
            let bounce = o["design"] as? String == "bounce"
            let copies = try #require(o["measured_copies_per_byte"] as? Double)
            let zeroCopy = try #require(o["measured_zero_copy_fraction"] as? Double)
            if bounce {
                #expect(o["predicted_copies_per_byte"] as? Double == 2 && copies == 2 && zeroCopy == 0, "\(o)")
            } else {
                let predicted = try #require(o["predicted_copies_per_byte"] as? Double)
                #expect(predicted >= 1 && predicted <= 1.05, "\(o)")
                #expect(copies >= 1 && copies <= 1.05 && zeroCopy >= 0.95 && zeroCopy <= 1, "\(o)")
            }
            #expect(abs(try #require(o["copies_per_byte_error"] as? Double)) <= 0.05, "\(o)")
            #expect(abs(try #require(o["zero_copy_fraction_error"] as? Double)) <= 0.05, "\(o)")
        }
    }
}
