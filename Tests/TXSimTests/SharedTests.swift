import Foundation
import Testing

/// `txsim shared --json`: one object per buffer source with every user's
/// figures, the allocator's and the hook's, and nothing lost.
@Suite struct TXSimSharedTests {
    @Test func theJSONCarriesEachUsersFiguresAndNothingIsLost() throws {
        let outcome = try txsim(["shared", "--duration", "0.1", "--rounds", "1", "--json", "--quiet", "--guest-mib", "256", "--swiotlb-mib", "32"])
        #expect(outcome.status == 0, "\(outcome.output)")
        let objects = try jsonObjects(outcome)
        #expect(objects.map { $0["source"] as? String } == ["general", "pre-decrypted"])
        for key in ["tx_gbps", "tx_copies_per_byte", "tx_head_copies_per_byte", "block_gbyte_per_s", "block_copies_per_byte",
                    "slab_gbyte_per_s", "slab_copies_per_byte", "chunks_converted", "peak_shared_bytes", "chunks_held_end",
                    "hook_checks", "hook_checks_unrelated_to_networking", "hook_time_unrelated_us_estimated", "lost_pages"] {
            #expect(objects.allSatisfy { $0[key] != nil }, "\(key) missing")
        }
        for o in objects {
            #expect(o["passed"] as? Bool == true && o["lost_pages"] as? Int == 0 && o["slab_objects_lost"] as? Int == 0)
        }
        let pooled = objects[1]
        #expect(pooled["block_copies_per_byte"] as? Double == 0 && pooled["slab_copies_per_byte"] as? Double == 0)
        #expect(pooled["tx_head_copies_per_byte"] as? Double == 0 && pooled["live_pages_end"] as? Int == 0)
        #expect((objects[0]["hook_checks_unrelated_to_networking"] as? Int ?? 0) > 0)
    }
}
