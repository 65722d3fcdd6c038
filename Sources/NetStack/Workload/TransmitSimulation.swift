@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// Faults injected into a run, on purpose. Removals fire from sender 0's
/// thread once it has sent a given number of payload bytes, so they land at
/// the same point of the traffic however loaded the machine is.
public struct FaultPlan: Sendable, Hashable {
    /// Remove the NIC's device once sender 0 has sent this many bytes.
    public var removeNICAfterBytes: Int?
    /// Remove another device (a block device) once sender 0 has sent this many
    /// bytes: the removal serial moves, so cached devices must be re-validated.
    public var removeOtherDeviceAfterBytes: Int?
    /// A block-style device maps and unmaps its own buffers (64 KiB each, up
    /// to 16 in flight) through swiotlb for the whole run, competing for slots.
    public var blockDeviceTraffic: Bool

    public init(removeNICAfterBytes: Int? = nil, removeOtherDeviceAfterBytes: Int? = nil, blockDeviceTraffic: Bool = false) {
        self.removeNICAfterBytes = removeNICAfterBytes
        self.removeOtherDeviceAfterBytes = removeOtherDeviceAfterBytes
        self.blockDeviceTraffic = blockDeviceTraffic
    }

    public static let none = FaultPlan()
}

/// What the block device did during a run with `blockDeviceTraffic`.
public struct BlockDeviceStatistics: Sendable, Hashable {
    public var mappings = 0
    public var failures = 0
    public var firstFailure: String?
}

/// The block device thread's counters, shared with the main thread.
final class BlockDeviceRecorder: Sendable {
    let statistics = Lock(BlockDeviceStatistics())
    /// Requests attempted (mapped or failed), for the minimum below.
    let attempts = Atomic<Int>(0)
    /// The block device makes at least this many requests however slowly its
    /// thread is scheduled, and sender 0 keeps sending until it has, as it does
    /// until its faults have fired: on a loaded machine a thread started for a
    /// 0.4 s run may not run before the deadline at all, and a run in which the
    /// fault never happened proves nothing.
    static let minimumAttempts = 64
    var hasMadeMinimumAttempts: Bool { attempts.load(ordering: .acquiring) >= Self.minimumAttempts }
}

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
    /// The slab cache the frames' linear heads come from (nil without heads):
    /// `kmalloc` over the general allocator, or the cache over the guest's
    /// pre-decrypted allocator, as the design's `linearHeadPlacement` says.
    public let heads: SlabCache?
    private let userBuffers: [Page]

    /// Builds sockets and queues. `device` is the NIC's device.
    /// - Parameters:
    ///   - rtScheduling: under PREEMPT_RT, how the tasks of each modelled CPU
    ///     interleave in the transmit path (nil: not RT).
    ///   - copyTiming: time copy 1 by where its destination was last bounced
    ///     (`CopyTiming`, a diagnostic that costs throughput).
    public init(guest: Guest, design: TransmitDesign, device: Device, workload: Workload,
                rtScheduling: RTScheduling? = nil, copyTiming: Bool = false) throws {
        try workload.validate()
        self.guest = guest
        self.design = design
        self.device = device
        self.workload = workload
        let heads: SlabCache?
        if workload.headerBytes == 0 {
            heads = nil
        } else {
            switch design.linearHeadPlacement {
            case .generalAllocator: heads = SlabCache(general: guest.allocator)
            case .preDecryptedSlab: heads = SlabCache(allocator: guest.decrypted)
            }
        }
        self.heads = heads
        var releaseHead: FrameCache.HeadRelease? = nil
        if let heads { releaseHead = { heads.free($0) } }
        let cache = FrameCache(releaseFragment: { [design] fragment, recycle in design.releaseFragment(fragment.page, ppRecycle: recycle) },
                               releaseHead: releaseHead)
        self.cache = cache
        // One user buffer per flow: private pages (an order-9 run) holding one
        // period of the flow's pattern plus a frame.
        var buffers: [Page] = []
        var sockets: [Socket] = []
        for flow in 0..<workload.flows {
            let head: Page
            do {
                head = try guest.allocator.allocatePages(order: PageGeometry.maxOrder, owner: .user)
            } catch {
                // Refused: give back what was taken, so nothing is lost.
                for buffer in buffers { guest.allocator.freePages(buffer) }
                throw error
            }
            buffers.append(head)
            sockets.append(Socket(flow: flow, queueIndex: flow % workload.queues, sender: flow % workload.senders,
                                  user: UserBuffer(head: head, flow: flow, period: PayloadPattern.defaultPeriod),
                                  sendBufferLimit: workload.sendBufferBytes, zeroCopy: workload.socketZeroCopy,
                                  zeroCopyFraction: workload.zeroCopyFraction, connectionBytes: workload.connectionBytes,
                                  heads: heads, headerBytes: workload.headerBytes))
        }
        self.userBuffers = buffers
        self.sockets = sockets
        // One modelled CPU per sender thread, and one for the main thread that
        // runs what is left after the senders finish.
        let pointerSlots = (workload.senders + 1) * (rtScheduling?.pointer == .perTask ? rtScheduling?.tasksPerCPU ?? 1 : 1)
        let current = CurrentTXSocket(cpus: pointerSlots) { [sockets] flow in sockets[flow].generation }
        self.currentTXSocket = current
        queues = (0..<workload.queues).map { index in
            TXQueue(index: index, device: device,
                    nic: NICRing(memory: guest.memory, device: device, verify: workload.verify,
                                 lineRateGbps: workload.lineRateGbps),
                    design: design, cache: cache, sockets: sockets, dma: guest.dma,
                    currentTXSocket: current, rtScheduling: rtScheduling, senders: workload.senders)
        }
        let timing = copyTiming ? CopyTiming(memory: guest.memory) : nil
        self.copyTiming = timing
        for socket in sockets { socket.copyTiming = timing }
        for queue in queues { queue.copyTiming = timing }
    }

    /// Copy 1's timing by destination, when the run times it.
    let copyTiming: CopyTiming?

    /// The patch's per-CPU `current_tx_socket` (read only by designs that set it).
    let currentTXSocket: CurrentTXSocket

    /// `netif_tx_disable` on every queue, then `device_del`: no transmit can be
    /// halfway through a mapping when the device goes; later transmits discard
    /// their frames, and the removal serial moves.
    public func removeNIC() {
        for queue in queues { queue.lockTransmit() }
        device.remove()
        for queue in queues.reversed() { queue.unlockTransmit() }
    }

    /// Runs the workload. `progress` is called about twice a second with the
    /// fraction of the sending time elapsed; `faults` are injected on time.
    /// Each of `alongside` runs on a thread of its own from the start, is
    /// given the sending deadline (`monotonicNanoseconds()`), and is joined
    /// before the teardown, so that other users of the guest (a block device,
    /// slab users: `SharedSimulation`) have given everything back when the
    /// run counts lost pages.
    public func run(progress: (@Sendable (Double) -> Void)? = nil, faults: FaultPlan = .none,
                    alongside: [@Sendable (_ deadline: UInt64) -> Void] = []) throws -> TransmitResult {
        let faultsAtStart = processPageFaults()
        let ticksAtStart = MachineTime.ticks()
        let processCPUAtStart = processCPUNanoseconds()
        let iommuAtStart = guest.iommu?.statistics
        let start = monotonicNanoseconds()
        let sendingNanoseconds = UInt64(workload.durationSeconds * 1e9)
        let deadline = start + sendingNanoseconds
        let roundTrip = UInt64(workload.roundTripMicroseconds) * 1000
        let message = workload.messageBytes
        // The drain limit: what is still queued then is abandoned, and the
        // peer's acknowledgements are no longer waited for.
        let abandonAt = deadline + roundTrip + UInt64(Workload.drainLimitSeconds * 1e9)
        for queue in queues { queue.abandon(at: abandonAt) }

        let other = faults.removeOtherDeviceAfterBytes == nil ? nil : try guest.devices.add(name: "blk-removed")
        let block = faults.blockDeviceTraffic ? try startBlockDevice(until: deadline) : nil
        let blockRecorder = block?.1
        let companions = alongside.enumerated().map { i, body in
            ModelThread.start(name: "alongside\(i)") { body(deadline) }
        }
        // Nanoseconds the senders spent yielding while they waited (`wait`).
        let senderIdle = Atomic<UInt64>(0)
        let senderThreads = (0..<workload.senders).map { sender in
            let mine = sockets.filter { $0.sender == sender }

            let myQueues = Array(Set(mine.map(\.queueIndex))).sorted().map { queues[$0] }
            return ModelThread.start(name: "sender\(sender)") { [self, cache, design, queues] in
                var removeNICAt = sender == 0 ? faults.removeNICAfterBytes : nil
                var removeOtherAt = sender == 0 ? faults.removeOtherDeviceAfterBytes : nil
                var sent = 0
                // Wall time of iterations that found nothing to do and
                // yielded (see `wait`), and the end of the last such one (0:
                // the last iteration did something).
                var idle: UInt64 = 0
                var idleSince: UInt64 = 0
                // Sender 0 keeps going past the deadline until its faults have
                // fired, then sends a few more messages, so traffic always follows
                // a fault however slow the machine is.
                var messagesAfterFault = 0
                // With short-lived connections, sender 0 keeps going until one
                // of its connections has been closed and its socket freed: a
                // slow machine (a sanitizer build) may not close one in a short
                // run, and a run that frees no socket proves nothing about them.
                // At most `closeWaitLimitSeconds` past the deadline (a connection
                // longer than a run can send never closes).
                var mustClose = sender == 0 && workload.connectionBytes != nil
                let closeWaitUntil = deadline + UInt64(Self.closeWaitLimitSeconds * 1e9)
                // Every sender sends at least one message, past the deadline if
                // it must (at most `lateStartLimitSeconds` past it): on a loaded
                // machine a thread started for a 0.2 s run may first run after
                // the deadline, and a run in which a sender sent nothing
                // measures nothing about it (its design's figures read 0).
                let lateStartUntil = deadline + UInt64(Self.lateStartLimitSeconds * 1e9)
                design.senderStarted(sender)
                var now = monotonicNanoseconds()
                while now < deadline || removeNICAt != nil || removeOtherAt != nil || messagesAfterFault > 0
                        || (sender == 0 && blockRecorder?.hasMadeMinimumAttempts == false) || (mustClose && now < closeWaitUntil)
                        || (sent == 0 && !mine.isEmpty && now < lateStartUntil) {
                    var progressed = false
                    var acknowledged = 0
                    for socket in mine {
                        acknowledged &+= socket.processAcknowledgements(now: now, roundTrip: roundTrip, cache: cache)
                        let queue = queues[socket.queueIndex]
                        socket.retransmitDropped(cache: cache) { queue.enqueue($0, cpu: sender) }
                        if socket.connectionFinished && socket.closeIfFinished(design: design) {
                            progressed = true
                            mustClose = false
                        }
                        if socket.canSend(message) {
                            sent += socket.send(message, design: design, cache: cache) { frame in
                                queue.enqueue(cache.clone(frame), cpu: sender)
                            }
                            if messagesAfterFault > 0 { messagesAfterFault -= 1 }
                            progressed = true
                        }
                    }
                    if let at = removeNICAt, sent >= at {
                        removeNICAt = nil
                        self.removeNIC()
                        messagesAfterFault = Self.messagesAfterFault
                    }
                    if let at = removeOtherAt, sent >= at {
                        removeOtherAt = nil
                        other?.remove()
                        messagesAfterFault = Self.messagesAfterFault
                    }
                    now = monotonicNanoseconds()
                    if !progressed && Self.wait(roundTrip: roundTrip, queues: myQueues, cpu: sender) && acknowledged == 0 {
                        // Idle from this iteration's start (the end of the
                        // previous one if that was idle too, else this one's
                        // clock read) to now.
                        let after = monotonicNanoseconds()
                        idle &+= after &- (idleSince != 0 ? idleSince : now)
                        idleSince = after
                    } else {
                        idleSince = 0
                    }
                }
                // Drain: wait for every frame to be acknowledged, up to the drain
                // limit; after it the queues abandon what they still hold and
                // every frame that left is released without waiting for its ACK.
                while mine.contains(where: { $0.unacknowledgedFrames > 0 }) {
                    let now = monotonicNanoseconds()
                    let wait = now >= abandonAt ? 0 : roundTrip
                    for socket in mine {
                        socket.processAcknowledgements(now: now, roundTrip: wait, cache: cache)
                        let queue = queues[socket.queueIndex]
                        socket.retransmitDropped(cache: cache) { queue.enqueue($0, cpu: sender) }
                    }
                    _ = Self.wait(roundTrip: roundTrip, queues: myQueues, cpu: sender)
                }
                // Relaxed: read after the thread is joined.
                senderIdle.wrappingAdd(idle, ordering: .relaxed)
                for socket in mine { socket.releaseFragmentPage(design: design) }
                design.senderFinished(sender)
            }
        }
        var nextProgress = start + 500_000_000
        while monotonicNanoseconds() < deadline {
            sleep(nanoseconds: 10_000_000)
            let now = monotonicNanoseconds()
            if let progress, now >= nextProgress {
                progress(min(1, Double(now - start) / Double(sendingNanoseconds)))
                nextProgress += 500_000_000
            }
        }
        var blockStatistics: BlockDeviceStatistics? = nil
        if let (thread, recorder) = block {
            thread.join()
            blockStatistics = recorder.statistics.withLock { $0 }
        }
        let threadCPU = senderThreads.reduce(UInt64(0)) { $0 + $1.join() }
        let end = monotonicNanoseconds()
        for companion in companions { _ = companion.join() }
        let faultsInWindow = processPageFaults() - faultsAtStart
        let ticksAtEnd = MachineTime.ticks()
        let processCPU = Double(processCPUNanoseconds() - processCPUAtStart) / 1e9
        let stolenTicks = ticksAtEnd.map { end in ticksAtStart.map { end.steal - $0.steal } ?? 0 } ?? 0
        let busyTicks = ticksAtEnd.map { end in ticksAtStart.map { end.busy - $0.busy } ?? 0 } ?? 0
        for queue in queues { queue.runIfIdle(cpu: workload.senders) }
        precondition(queues.allSatisfy { $0.backlog == 0 }, "frames left in a qdisc after every sender finished")
        let queueCPU = queues.reduce(UInt64(0)) { $0 + $1.cpuNanoseconds }
        let iommuInWindow = guest.iommu.flatMap { iommu in iommuAtStart.map { iommu.statistics.since($0) } }
        var result = try finish(seconds: Double(end - start) / 1e9, senderCPU: threadCPU - min(threadCPU, queueCPU),
                                queueCPU: queueCPU)
        let c = guest.memory.configuration
        let resident = c.residentAtBoot
            ? "swiotlb and the first \(guest.memory.residentPrivateBytes >> 20) MiB of private memory faulted in at boot, outside the timed window"
            : "memory faulted in on first touch (inside the timed window)"
        let directMap = guest.memory.hugePagesAdvised ? "direct map on 2 MiB pages" : "direct map on 4 KiB pages"
        result.guestDescription = "\(c.guestBytes >> 20) MiB (private \(guest.memory.privatePages.count >> 8) MiB), swiotlb \(c.swiotlbBytes >> 20) MiB = \(guest.swiotlb.nslabs) slots in \(guest.swiotlb.areaCount) areas, \(resident), \(directMap); hypercall \(c.hypercall.perCallNanoseconds) ns + \(c.hypercall.perPageNanoseconds) ns/page (modelled, an assumption: \(c.hypercall.charge.rawValue))"
        result.timedWindowPageFaults = faultsInWindow
        result.stolenCPUSeconds = Double(stolenTicks) / MachineTime.ticksPerSecond
        result.senderIdleSeconds = min(result.senderCPUSeconds, Double(senderIdle.load(ordering: .relaxed)) / 1e9)
        result.othersCPUSeconds = max(0, Double(busyTicks) / MachineTime.ticksPerSecond - processCPU)
        result.modelledTimeSpun = c.hypercall.charge == .spin
        result.zeroCopyPercent = guest.swiotlb.zeroCopyPercent
        result.blockDevice = blockStatistics
        result.platform = guest.platform.name
        if let iommuInWindow, let c = guest.platform.iommu {
            result.iommu = iommuInWindow
            result.iommuTimeSpun = c.costs.charge == .spin
            let costs = c.costs
            result.guestDescription += "; IOMMU \(c.mode.rawValue), \(guest.iommu?.iovaPages ?? 0) IOVA pages, flush queue \(c.flushQueueSize), "
                + "modelled (an assumption): map \(costs.mapNanoseconds) ns, PTE \(costs.pteNanoseconds) ns, invalidation \(costs.invalidateNanoseconds) ns, flush \(costs.flushNanoseconds) ns (\(costs.charge.rawValue)); no memory encryption, nothing bounces"
        }
        return result
    }

    /// How long past its duration sender 0 keeps sending, with short-lived
    /// connections, until one of its connections has closed.
    static let closeWaitLimitSeconds = 10.0

    /// How long past its duration a sender that has sent nothing yet keeps
    /// trying to send its first message (a design that can send nothing at all
    /// stops there, and its run reports no payload).
    static let lateStartLimitSeconds = 10.0

    /// Messages sender 0 still sends after injecting a fault.
    static let messagesAfterFault = 16

    /// What a sender does while all its sockets wait for acknowledgements: runs
    /// queue work left behind (ksoftirqd), else waits a little. Returns
    /// whether it yielded: found no queue work and, with a round trip under
    /// 200 µs, gave the CPU up with `sched_yield`, which (unlike the sleep
    /// for longer round trips) leaves the time spent waiting in the sender
    /// thread's CPU time (`TransmitResult.senderIdleSeconds`).
    private static func wait(roundTrip: UInt64, queues: [TXQueue], cpu: Int) -> Bool {
        var ran = false
        for queue in queues where queue.runIfIdle(cpu: cpu) { ran = true }
        if ran { return false }
        if roundTrip >= 200_000 {
            sleep(nanoseconds: 50_000)
            return false
        }
        sched_yield()
        return true
    }

    /// A block device doing its own streaming mappings until `deadline`.
    private func startBlockDevice(until deadline: UInt64) throws -> (ModelThread, BlockDeviceRecorder) {
        let disk = try guest.devices.add(name: "blk0", dmaMaskBits: 64)
        let buffer = try guest.allocator.allocatePages(order: 8)  // 1 MiB of private pages: 16 x 64 KiB requests
        let recorder = BlockDeviceRecorder()
        let guest = self.guest
        let thread = ModelThread.start(name: "blk0") {
            var inFlight: [(DMAAddress, Int)] = []
            var request = 0
            while monotonicNanoseconds() < deadline || !recorder.hasMadeMinimumAttempts {
                let offset = (request % 16) * 65536
                request += 1
                let direction: DMADirection = request % 2 == 0 ? .toDevice : .fromDevice
                do {
                    let address = try guest.dma.mapPage(buffer, offset: offset, size: 65536, direction: direction, device: disk)
                    inFlight.append((address, direction.rawValue == DMADirection.toDevice.rawValue ? 1 : 2))
                    recorder.statistics.withLock { $0.mappings += 1 }
                } catch {
                    recorder.statistics.withLock { s in
                        s.failures += 1
                        if s.firstFailure == nil { s.firstFailure = "\(error)" }
                    }
                }
                recorder.attempts.wrappingAdd(1, ordering: .releasing)
                if inFlight.count == 16 || monotonicNanoseconds() >= deadline {
                    for (address, kind) in inFlight {
                        try? guest.dma.unmapPage(address, size: 65536, direction: kind == 1 ? .toDevice : .fromDevice, device: disk)
                    }
                    inFlight.removeAll(keepingCapacity: true)
                    sleep(nanoseconds: 100_000)  // a disk is slower than memory
                }
            }
            for (address, kind) in inFlight {
                try? guest.dma.unmapPage(address, size: 65536, direction: kind == 1 ? .toDevice : .fromDevice, device: disk)
            }
            guest.allocator.freePages(buffer)
        }
        return (thread, recorder)
    }

    private func finish(seconds: Double, senderCPU: UInt64, queueCPU: UInt64) throws -> TransmitResult {
        let socketStats = sockets.reduce(SocketStatistics()) { $0 + $1.statistics }
        let queueStats = queues.reduce(TXQueueStatistics()) { $0 + $1.statistics }
        let nicStats = queues.reduce(NICStatistics()) { $0 + $1.nic.statistics }
        precondition(cache.statistics.liveFrames == 0, "\(cache.statistics.liveFrames) frames still live after the drain")
        let designFigures = design.reportFigures()
        try design.shutdown()
        for head in userBuffers { guest.allocator.freePages(head) }
        let headSlab = heads?.statistics
        let headObjectsLost = heads?.shrink() ?? 0
        let swiotlb = guest.swiotlb.statistics
        let conversions = guest.memory.conversionStatistics
        var result = TransmitResult(
            design: design.name, workload: workload, seconds: seconds,
            payloadBytes: nicStats.bytes,
            bytesCopiedBySender: socketStats.bytesCopied,
            bytesCopiedByDMALayer: swiotlb.bytesBouncedToDevice + swiotlb.bytesBouncedToCPU - queueStats.headBytesBounced,
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
            designFigures: designFigures,
            framesDiscardedDeviceGone: queueStats.framesDiscardedDeviceGone,
            framesAbandoned: queueStats.framesAbandoned, bytesAbandoned: queueStats.bytesAbandoned,
            staleDeviceAccesses: device.staleAccessCount,
            conversionPages: conversions.pagesDecrypted + conversions.pagesEncrypted)
        result.bytesWritten = socketStats.bytesSent
        if copyTiming != nil { result.copyTiming = socketStats.copyTiming }
        result.queueFrames = queueStats.frames
        result.queueBatches = queueStats.completionBatches
        result.framesRetransmitted = socketStats.framesRetransmitted
        result.framesGivenUp = socketStats.framesGivenUp
        result.bytesGivenUp = socketStats.bytesGivenUp
        result.unmapFailures = queueStats.unmapFailures
        result.bytesDiscardedDeviceGone = queueStats.bytesDiscardedDeviceGone
        result.refusedDeviceAllocations = device.refusedAllocationCount
        result.connectionsClosed = socketStats.connectionsClosed
        result.preemptions = queueStats.preemptions
        result.currentTXSocketSets = currentTXSocket.sets
        result.misattributedLearnings = currentTXSocket.misattributedLearnings
        result.socketUseAfterFree = currentTXSocket.useAfterFree
        result.missedLearnings = currentTXSocket.missedLearnings
        result.headBytes = nicStats.headBytes
        result.headVerifiedBytes = nicStats.headVerifiedBytes
        result.headBytesBounced = queueStats.headBytesBounced
        result.headBytesDirect = queueStats.headBytesDirect
        result.headAllocationFailures = socketStats.headAllocationFailures
        result.headObjectsLost = headObjectsLost
        result.headSlabPeakPages = headSlab?.peakPages ?? 0
        return result
    }
}

/// The machine's own clock of time taken from it: on a virtual machine the
/// hypervisor counts the time its vCPUs were ready but not running (steal,
/// the eighth figure of /proc/stat's `cpu` line, in clock ticks).
enum MachineTime {
    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// All CPUs' busy ticks (user, nice, system, irq and softirq: the
    /// first, second, third, sixth and seventh figures) and steal ticks
    /// (the eighth) so far, or nil where /proc/stat cannot be read.
    static func ticks() -> (busy: Int, steal: Int)? {
        guard let file = fopen("/proc/stat", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        guard fgets(&line, Int32(line.count), file) != nil else { return nil }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fields = text.split(separator: " ")
        guard fields.first == "cpu", fields.count > 8 else { return nil }
        let numbers = fields.dropFirst().prefix(8).compactMap { Int($0) }
        guard numbers.count == 8 else { return nil }
        return (numbers[0] + numbers[1] + numbers[2] + numbers[5] + numbers[6], numbers[7])
    }
}

/// Page faults (minor and major) the whole process has taken so far.
func processPageFaults() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return Int(usage.ru_minflt) + Int(usage.ru_majflt)
}

#if canImport(Glibc)
import Glibc
#endif
