import Foundation
import Synchronization
import Testing
@testable import DMAPools

/// A path that reaches a device from outside its quiesced queues (a pool's
/// refill from a sender) checks presence and acts in one `whilePresent`
/// section, which the device's removal waits for: a removal cannot fall
/// between the check and the DMA operation. (The race this closes: a
/// sender's refill mapped a new pool page just after the NIC was removed,
/// one run in ten of `txsim reliability --scenario iommu-nic-removed
/// --design page-pool` with the other core busy.)
@Suite struct DevicePresenceTests {
    /// The flags the three threads hand each other.
    final class Flags: Sendable {
        let entered = Atomic<Bool>(false)
        let leave = Atomic<Bool>(false)
        let removerStarted = Atomic<Bool>(false)
        let removed = Atomic<Bool>(false)
        let sectionSawDevicePresent = Atomic<Bool>(false)
        let sectionDone = Atomic<Bool>(false)
    }

    @Test func removalWaitsForASectionAndThenRefusesNewOnes() throws {
        let f = try SWIOTLBFixture()
        let device = try f.registry.add(name: "racing")
        let flags = Flags()
        Thread.detachNewThread {
            let ran: Bool? = device.whilePresent {
                flags.entered.store(true, ordering: .releasing)
                while !flags.leave.load(ordering: .acquiring) { sched_yield() }
                // The removal has started but waits for this section.
                flags.sectionSawDevicePresent.store(!device.isRemoved, ordering: .releasing)
                return true
            }
            #expect(ran == true)
            flags.sectionDone.store(true, ordering: .releasing)
        }
        while !flags.entered.load(ordering: .acquiring) { sched_yield() }
        Thread.detachNewThread {
            flags.removerStarted.store(true, ordering: .releasing)
            device.remove()
            flags.removed.store(true, ordering: .releasing)
        }
        while !flags.removerStarted.load(ordering: .acquiring) { sched_yield() }
        // Once the removal has begun, no new section starts...
        while device.whilePresent({ true }) != nil { sched_yield() }
        // ...and it cannot finish while the first section runs.
        let finishedEarly = flags.removed.load(ordering: .acquiring)
        #expect(!finishedEarly && !device.isRemoved)
        flags.leave.store(true, ordering: .releasing)
        while !flags.removed.load(ordering: .acquiring) || !flags.sectionDone.load(ordering: .acquiring) { sched_yield() }
        let sawPresent = flags.sectionSawDevicePresent.load(ordering: .acquiring)
        #expect(sawPresent)
        #expect(device.isRemoved)
        // An allocation for the removed device is refused, counted as such,
        // and nothing reached the device.
        #expect(throws: DMAError.deviceRemoved("racing")) {
            _ = try device.admittingAllocation { () throws(DMAError) in 1 }
        }
        #expect(device.refusedAllocationCount == 1 && device.staleAccessCount == 0)
    }

    @Test func aPresentDeviceRunsTheSection() throws {
        let f = try SWIOTLBFixture()
        #expect(f.device.whilePresent { 7 } == 7)
        #expect(try f.device.admittingAllocation { () throws(DMAError) in 8 } == 8)
        #expect(f.device.refusedAllocationCount == 0)
    }
}
