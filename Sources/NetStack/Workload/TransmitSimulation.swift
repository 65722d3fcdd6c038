import DMAPools
import Synchronization

/// Runs one workload through one design on one guest, with real threads: the
/// senders (copy 1 in process context), one thread per TX queue (map, NIC,
/// completion), and the peer model acknowledging frames one round-trip after
/// the NIC sent them. Afterwards it tears everything down and checks that every
/// page is back with its owner.
public final class TransmitSimulation: @unchecked Sendable {
    public let guest: Guest
    public let design: TransmitDesign
    public let device: Device
    public let workload: Workload
    public let cache: FrameCache
    public let sockets: [Socket]
    public let queues: [TXQueue]
    private let userBuffers: [Page]

    /// Builds sockets and queues. `device` is the NIC's device.
    public init(guest: Guest, design: TransmitDesign, device: Device, workload: Workload) throws {
        try workload.validate()
        self.guest = guest
        self.design = design
        self.device = device
        self.workload = workload
        let cache = FrameCache { [design] fragment, recycle in design.releaseFragment(fragment.page, ppRecycle: recycle) }
        self.cache = cache
        // One user buffer per flow: private pages (an order-9 run) holding one
        // period of the flow's pattern plus a frame.
        var buffers: [Page] = []
        var sockets: [Socket] = []
        for flow in 0..<workload.flows {
            let head = try guest.allocator.allocatePages(order: PageGeometry.maxOrder, owner: .user)
            buffers.append(head)
            sockets.append(Socket(flow: flow, queueIndex: flow % workload.queues, sender: flow % workload.senders,
                                  user: UserBuffer(head: head, flow: flow, period: PayloadPattern.defaultPeriod),
                                  sendBufferLimit: workload.sendBufferBytes, zeroCopy: workload.zeroCopy))
        }
        self.userBuffers = buffers
        self.sockets = sockets
        queues = (0..<workload.queues).map { index in
            TXQueue(index: index, device: device,
                    nic: NICRing(memory: guest.memory, device: device, verify: workload.verify,
                                 lineRateGbps: workload.lineRateGbps),
                    design: design, cache: cache, sockets: sockets)
        }
    }

    /// Runs the workload. `progress` is called about twice a second with the
    /// fraction of the sending time elapsed.
    public func run(progress: (@Sendable (Double) -> Void)? = nil) throws -> TransmitResult {
        let start = monotonicNanoseconds()
        let sendingNanoseconds = UInt64(workload.durationSeconds * 1e9)
        let deadline = start + sendingNanoseconds
        let roundTrip = UInt64(workload.roundTripMicroseconds) * 1000
        let message = workload.messageBytes

        let senderThreads = (0..<workload.senders).map { sender in
            let mine = sockets.filter { $0.sender == sender }
            let myQueues = Array(Set(mine.map(\.queueIndex))).sorted().map { queues[$0] }
            return ModelThread.start(name: "sender\(sender)") { [cache, design, queues] in
                design.senderStarted(sender)
                var now = monotonicNanoseconds()
                while now < deadline {
                    var progressed = false
                    for socket in mine {
                        socket.processAcknowledgements(now: now, roundTrip: roundTrip, cache: cache)
                        if socket.canSend(message) {
                            let queue = queues[socket.queueIndex]
                            _ = socket.send(message, design: design, cache: cache) { frame in
                                queue.enqueue(cache.clone(frame))
                            }
                            progressed = true
                        }
                    }
                    now = monotonicNanoseconds()
                    if !progressed { Self.wait(roundTrip: roundTrip, queues: myQueues) }
                }
                // Drain: wait for every frame to be acknowledged.
                while mine.contains(where: { $0.unacknowledgedFrames > 0 }) {
                    let now = monotonicNanoseconds()
                    for socket in mine { socket.processAcknowledgements(now: now, roundTrip: roundTrip, cache: cache) }
                    Self.wait(roundTrip: roundTrip, queues: myQueues)
                }
                for socket in mine { socket.releaseFragmentPage(design: design) }
                design.senderFinished(sender)
            }
        }
        if let progress {
            while monotonicNanoseconds() < deadline {
                sleep(nanoseconds: 500_000_000)
                progress(min(1, Double(monotonicNanoseconds() - start) / Double(sendingNanoseconds)))
            }
        }
        let threadCPU = senderThreads.reduce(UInt64(0)) { $0 + $1.join() }
        let end = monotonicNanoseconds()
        for queue in queues { queue.runIfIdle() }
        precondition(queues.allSatisfy { $0.backlog == 0 }, "frames left in a qdisc after every sender finished")
        let queueCPU = queues.reduce(UInt64(0)) { $0 + $1.cpuNanoseconds }
        return try finish(seconds: Double(end - start) / 1e9, senderCPU: threadCPU - min(threadCPU, queueCPU),
                          queueCPU: queueCPU)
    }

    /// What a sender does while all its sockets wait for acknowledgements: runs
    /// queue work left behind (ksoftirqd), else waits a little.
    private static func wait(roundTrip: UInt64, queues: [TXQueue]) {
        var ran = false
        for queue in queues where queue.runIfIdle() { ran = true }
        if ran { return }
        if roundTrip >= 200_000 { sleep(nanoseconds: 50_000) } else { sched_yield() }
    }

    private func finish(seconds: Double, senderCPU: UInt64, queueCPU: UInt64) throws -> TransmitResult {
        let socketStats = sockets.reduce(SocketStatistics()) { $0 + $1.statistics }
        let queueStats = queues.reduce(TXQueueStatistics()) { $0 + $1.statistics }
        let nicStats = queues.reduce(NICStatistics()) { $0 + $1.nic.statistics }
        precondition(cache.statistics.liveFrames == 0, "\(cache.statistics.liveFrames) frames still live after the drain")
        let designFigures = design.reportFigures()
        try design.shutdown()
        for head in userBuffers { guest.allocator.freePages(head) }
        let swiotlb = guest.swiotlb.statistics
        let conversions = guest.memory.conversionStatistics
        return TransmitResult(
            design: design.name, workload: workload, seconds: seconds,
            payloadBytes: nicStats.bytes,
            bytesCopiedBySender: socketStats.bytesCopied,
            bytesCopiedByDMALayer: swiotlb.bytesBouncedToDevice + swiotlb.bytesBouncedToCPU,
            bytesMappedDirect: queueStats.bytesDirect, bytesMappedBounced: queueStats.bytesBounced,
            bytesConvertedInPlace: queueStats.bytesConvertedInPlace,
            senderCPUSeconds: Double(senderCPU) / 1e9, queueCPUSeconds: Double(queueCPU) / 1e9,
            swiotlbSlots: swiotlb.nslabs, swiotlbPeakSlots: swiotlb.usedHighWater,
            conversionCalls: conversions.calls,
            conversionModelledSeconds: Double(conversions.modelledNanoseconds) / 1e9,
            dmaFaults: nicStats.dmaFaults, verifiedBytes: nicStats.verifiedBytes, corruptBytes: nicStats.corruptBytes,
            framesDropped: queueStats.framesDropped, requeues: queueStats.requeues,
            lostPages: guest.lostPages(),
            refillFailures: socketStats.refillFailures,
            firstProblem: nicStats.firstProblem ?? queueStats.firstMapError,
            designFigures: designFigures)
    }
}

#if canImport(Glibc)
import Glibc
#endif
