@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// Counters of a TX queue (written by its thread only).
public struct TXQueueStatistics: Sendable, Hashable {
    public var frames = 0
    public var fragments = 0
    /// Payload bytes mapped by each kind of mapping.
    public var bytesBounced = 0
    public var bytesDirect = 0
    public var bytesConvertedInPlace = 0
    /// Fragments that could not be mapped (counted, never silent).
    public var mapFailures = 0
    /// Frames put back on the qdisc after a failed map (`NETDEV_TX_BUSY`).
    public var requeues = 0
    /// Frames given up after `TXQueue.maxRequeues` failed attempts: their data
    /// did not reach the wire, and their socket sends them again.
    public var framesDropped = 0
    /// Frames (and their payload bytes) discarded because the queue's device was
    /// removed (expected after a removal; their pages still come home).
    public var framesDiscardedDeviceGone = 0
    public var bytesDiscardedDeviceGone = 0
    /// Frames still queued at the run's drain limit, discarded without being
    /// mapped (their pages still come home), and their payload bytes.
    public var framesAbandoned = 0
    public var bytesAbandoned = 0
    /// Mappings whose unmap failed (a failure of the design under test).
    public var unmapFailures = 0
    public var firstMapError: String?
    /// NAPI-style completion batches.
    public var completionBatches = 0
    /// Transmit sections preempted by another task of their CPU (modelled
    /// RT preemptions, `RTScheduling`).
    public var preemptions = 0
    /// Linear-head bytes mapped by a bounce (a `kmalloc`'d head: copied into
    /// a swiotlb slot at map, counted at every map, an attempt undone after a
    /// fragment's failed map included, as swiotlb counts it) and directly (a
    /// pre-decrypted slab object), and
    /// heads that could not be mapped (the frame is requeued, as for a fragment).
    public var headBytesBounced = 0
    public var headBytesDirect = 0
    public var headMapFailures = 0

    /// How each field adds up: the one list `+` is made from.
    static var fields: [FieldRule<Self>] {
        [.sum(\.frames), .sum(\.fragments), .sum(\.bytesBounced), .sum(\.bytesDirect), .sum(\.bytesConvertedInPlace),
         .sum(\.mapFailures), .sum(\.requeues), .sum(\.framesDropped),
         .sum(\.framesDiscardedDeviceGone), .sum(\.bytesDiscardedDeviceGone),
         .sum(\.framesAbandoned), .sum(\.bytesAbandoned), .sum(\.unmapFailures),
         .first(\.firstMapError), .sum(\.completionBatches), .sum(\.preemptions),
         .sum(\.headBytesBounced), .sum(\.headBytesDirect), .sum(\.headMapFailures)]
    }

    /// Two queues' counters added up (the first map error seen kept).
    public static func + (a: Self, b: Self) -> Self { fields.combine(a, b) }
}

/// A TX queue: a qdisc that senders enqueue clones into, and a transmit
/// routine that only one CPU runs at a time (the qdisc's running bit and
/// `HARD_TX_LOCK`), so everything it does — including copy 2 in the bounce
/// design — is serialised per queue.
///
/// As in `__dev_xmit_skb`, the sender that enqueues runs the qdisc itself when
/// no other CPU is running it; otherwise it leaves its frame for the CPU that
/// is. A run takes up to `budget` frames at a time, maps every fragment through
/// the design, hands the descriptors to its NIC ring, then completes the batch
/// (NAPI-like): unmaps, stamps the data as sent for the peer model, and frees
/// the clones. After `quota` batches the runner lets go (the kernel defers to
/// the TX softirq); senders that are waiting for acknowledgements pick up what
/// is left, as ksoftirqd would.
public final class TXQueue: @unchecked Sendable {
    public static let budget = 64
    /// Batches one run may take before it lets go (`dev_tx_weight`-like).
    public static let quota = 4
    /// Failed transmits before a frame is dropped for good.
    public static let maxRequeues = 8

    public let index: Int
    public let device: Device
    public let nic: NICRing
    let design: TransmitDesign
    let cache: FrameCache
    private let sockets: [Socket]
    private let qdisc = Lock(FrameRing(capacity: 1024))
    /// Frames in the qdisc, readable without its lock.
    private let pending = Atomic<Int>(0)
    /// The qdisc's running bit: whoever sets it is the only CPU transmitting.
    private let running = Atomic<Bool>(false)
    /// `monotonicNanoseconds()` after which queued frames are abandoned, not
    /// transmitted (0: never).
    private let abandonAt = Atomic<UInt64>(0)
    /// Time spent running this queue, by any thread (the "queue" role), in
    /// nanoseconds of the monotonic clock from taking the running bit to
    /// letting it go. The kernel accounts softirq time the same way
    /// (`irqtime_account_irq`: `sched_clock` deltas). The thread's CPU clock
    /// (`CLOCK_THREAD_CPUTIME_ID`) would leave out time the vCPU was preempted
    /// mid-run, but it is a system call here (`txsim microbench`:
    /// `clock_thread_cputime_ns` about 670, `clock_monotonic_ns` 25), and two per run charged
    /// 1.3 µs to every run. With one sender, which runs the queue for each
    /// frame it enqueues, that was about a sixth of a bounced frame's queue
    /// work and more than page-pool's; with a backlog filling the batches it
    /// was next to nothing, so the queue's measured cost per frame depended
    /// on how many frames a run took (page-pool, 1 sender, 1 queue: 107 Gbps
    /// with the thread clock, 150 with this one; Design/netstack.md).
    private let runCPU = Atomic<UInt64>(0)
    private let batch: UnsafeMutablePointer<Frame>
    private let mappings: UnsafeMutablePointer<FragmentMapping>
    /// Each batch slot's head mapping (length 0: the frame has no head mapped).
    private let headMappings: UnsafeMutablePointer<FragmentMapping>
    /// The DMA API a `kmalloc`'d head is mapped through (`dma_map_single`).
    private let dma: DMAAPI
    /// What `transmit` did with each batch slot's frame, for its completion.
    private let outcomes: UnsafeMutablePointer<TransmitOutcome>
    /// Written only by the CPU holding `running`; read after the run is over.
    public private(set) var statistics = TXQueueStatistics()
    /// The modelled CPU running the queue now (`smp_processor_id()` in the
    /// transmit path): set by the runner when it takes the running bit.
    private(set) var cpu = 0
    /// The patch's per-CPU `current_tx_socket`, shared by every queue, or nil
    /// when no design sets it.
    let currentTXSocket: CurrentTXSocket?
    /// Under PREEMPT_RT, the interleaving of the running CPU's tasks over a
    /// batch's transmit sections; nil: each section runs to its end.
    private let scheduler: TransmitScheduler?
    /// `current_tx_socket` per task (`TXSocketPointer.perTask`) rather than per CPU.
    private let pointerPerTask: Bool
    /// The slot of `current_tx_socket` the section being run uses.
    private var pointerSlot = 0
    /// Sender threads: a socket's task on its CPU is its index among its
    /// sender's sockets (`flow / senders`), modulo the tasks per CPU.
    private let senders: Int
    /// Set when the run times copy 1: bounced fragments are tagged with
    /// the CPU that read them (`CopyTiming`).
    var copyTiming: CopyTiming?

    init(index: Int, device: Device, nic: NICRing, design: TransmitDesign, cache: FrameCache, sockets: [Socket],
         dma: DMAAPI, currentTXSocket: CurrentTXSocket? = nil, rtScheduling: RTScheduling? = nil, senders: Int = 1) {
        self.senders = max(1, senders)
        self.index = index
        self.dma = dma
        self.device = device
        self.nic = nic
        self.design = design
        self.cache = cache
        self.sockets = sockets
        self.currentTXSocket = design.setsCurrentTXSocket ? currentTXSocket : nil
        pointerPerTask = rtScheduling?.pointer == .perTask
        scheduler = rtScheduling.map { rt in
            TransmitScheduler(tasks: rt.tasksPerCPU, capacity: Self.budget,
                              source: PreemptionSource(every: rt.preemptEvery, seed: rt.seed &+ UInt64(index) &* 0x1_0000_0001))
        }
        batch = .allocate(capacity: Self.budget)
        mappings = .allocate(capacity: Self.budget * FrameData.maxFragments)
        headMappings = .allocate(capacity: Self.budget)
        headMappings.initialize(repeating: FragmentMapping(address: DMAAddress(0), length: 0, kind: .direct), count: Self.budget)
        outcomes = .allocate(capacity: Self.budget)
        outcomes.initialize(repeating: .sent(mapped: 0), count: Self.budget)
        design.queueStarted(self)
    }

    deinit {
        batch.deallocate()
        mappings.deallocate()
        headMappings.deallocate()
        outcomes.deallocate()
    }

    /// Nanoseconds spent transmitting and completing on this queue (see `runCPU`).
    public var cpuNanoseconds: UInt64 { runCPU.load(ordering: .acquiring) }

    /// From `nanoseconds` (`monotonicNanoseconds()`) on, frames still queued
    /// are abandoned (counted, released without being mapped) and the NIC
    /// stops pacing, so a slow wire cannot hold a run past its drain limit.
    func abandon(at nanoseconds: UInt64) {
        abandonAt.store(nanoseconds, ordering: .sequentiallyConsistent)
        nic.stopPacing(at: nanoseconds)
    }

    /// Frames waiting in the qdisc.
    public var backlog: Int { pending.load(ordering: .acquiring) }

    /// `dev_queue_xmit` from a sender on modelled CPU `cpu`: enqueue a clone,
    /// then run the qdisc if no other CPU is running it.
    func enqueue(_ clone: Frame, cpu: Int) {
        qdisc.withLock { $0.append(clone) }
        pending.wrappingAdd(1, ordering: .sequentiallyConsistent)
        runIfIdle(cpu: cpu)
    }

    /// `__qdisc_run` if the running bit is free: transmits up to `quota` batches.
    /// Returns whether this call ran the queue.
    @discardableResult
    func runIfIdle(cpu: Int) -> Bool {
        var ran = false
        // Re-check after letting go: a frame enqueued while we ran, whose sender
        // found the bit taken, must not be stranded.
        while pending.load(ordering: .sequentiallyConsistent) > 0 {
            guard running.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else {
                return ran
            }
            ran = true
            self.cpu = cpu
            let start = monotonicNanoseconds()
            var batches = 0
            while batches < Self.quota {
                let taken = takeBatch()
                if taken == 0 { break }
                transmitSections(taken)
                complete(taken)
                batches += 1
            }
            runCPU.wrappingAdd(monotonicNanoseconds() &- start, ordering: .relaxed)
            running.store(false, ordering: .sequentiallyConsistent)
            if batches == Self.quota { return ran }  // deferred: the next CPU to come by continues
        }
        return ran
    }

    /// Takes the queue's running bit, waiting for a transmit in progress to
    /// finish (`netif_tx_lock`). Pair with `unlockTransmit()`.
    func lockTransmit() {
        while !running.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged {
            sched_yield()
        }
    }

    func unlockTransmit() {
        running.store(false, ordering: .sequentiallyConsistent)
    }

    private func takeBatch() -> Int {
        let taken = qdisc.withLock { ring -> Int in
            var n = 0
            while n < Self.budget, let frame = ring.removeFirst() {
                batch[n] = frame
                n += 1
            }
            return n
        }
        if taken > 0 { pending.wrappingSubtract(taken, ordering: .sequentiallyConsistent) }
        return taken
    }

    /// `netdev_start_xmit` for each frame of the batch: the patch's set of
    /// `current_tx_socket` (for a design that sets it), `ndo_start_xmit`,
    /// the restore. Under PREEMPT_RT the CPU's tasks interleave at the
    /// preemption points; otherwise each section runs to its end.
    private func transmitSections(_ count: Int) {
        guard let scheduler else {
            for i in 0..<count {
                let old = enterSection(slot: i)
                transmit(batch[i], slot: i)
                exitSection(slot: i, old)
            }
            return
        }
        let before = scheduler.preemptions
        scheduler.run(count: count, task: { task(of: $0) },
                      enter: { enterSection(slot: $0) },
                      body: { slot in
                          pointerSlot = pointerSlot(for: slot, tasks: scheduler.tasks)
                          transmit(batch[slot], slot: slot)
                      },
                      exit: { exitSection(slot: $0, $1) })
        statistics.preemptions += scheduler.preemptions - before
    }

    /// The `current_tx_socket` slot of batch slot `slot`'s section: its CPU's,
    /// or, per task, its task's on that CPU (the frame's socket's task).
    private func pointerSlot(for slot: Int, tasks: Int) -> Int {
        pointerPerTask ? cpu * tasks + task(of: slot) % tasks : cpu
    }

    /// The task that transmits batch slot `slot`'s frame: its socket's
    /// (the scheduler takes it modulo the tasks per CPU).
    private func task(of slot: Int) -> Int { cache.flow(of: batch[slot]) / senders }

    private func enterSection(slot: Int) -> UInt64 {
        guard let currentTXSocket else { return 0 }
        let socket = sockets[cache.flow(of: batch[slot])]
        pointerSlot = pointerSlot(for: slot, tasks: scheduler?.tasks ?? 1)
        return currentTXSocket.set(flow: socket.flow, generation: socket.generation, cpu: pointerSlot)
    }

    private func exitSection(slot: Int, _ old: UInt64) {
        guard let currentTXSocket else { return }
        currentTXSocket.restore(old, cpu: pointerSlot(for: slot, tasks: scheduler?.tasks ?? 1))
    }

    /// `dma_learn_bounce_device`'s `this_cpu_read(current_tx_socket)`, from a
    /// design's map of `socket`'s frame: the socket the pointer leads to (the
    /// frame's own, another live one, or the flow's socket that now occupies
    /// a freed one's place), or nil for NULL. Counted by kind.
    public func currentTXSocket(mapping socket: Socket) -> Socket? {
        guard let currentTXSocket else { return nil }
        switch currentTXSocket.read(cpu: pointerSlot, mapping: socket.flow) {
        case .none: return nil
        case .own(let flow), .other(let flow), .freed(let flow): return sockets[flow]
        }
    }

    /// `ndo_start_xmit`: map every fragment and post the descriptors.
    private func transmit(_ frame: Frame, slot: Int) {
        headMappings[slot].length = 0
        if device.isRemoved {
            // The carrier is gone: discard without touching the device.
            statistics.framesDiscardedDeviceGone += 1
            statistics.bytesDiscardedDeviceGone += cache.length(of: frame)
            outcomes[slot] = .sent(mapped: 0)
            return
        }
        let abandonAt = abandonAt.load(ordering: .relaxed)
        if abandonAt != 0 && monotonicNanoseconds() >= abandonAt {
            // Past the drain limit: released as if sent, counted apart.
            statistics.framesAbandoned += 1
            statistics.bytesAbandoned += cache.length(of: frame)
            outcomes[slot] = .sent(mapped: 0)
            return
        }
        let flow = cache.flow(of: frame)
        let socket = sockets[flow]
        var streamOffset = cache.streamOffset(of: frame)
        let base = mappings + slot * FrameData.maxFragments
        var mapped = 0
        statistics.frames += 1
        if let head = cache.head(of: frame) {
            do {
                let m = try mapHead(head.object, length: head.length)
                headMappings[slot] = m
                // Counted at map: a bounce is a copy even if the attempt is undone.
                switch m.kind {
                case .bounced: statistics.headBytesBounced += m.length
                case .direct, .convertedInPlace, .translated: statistics.headBytesDirect += m.length
                }
            } catch {
                statistics.headMapFailures += 1
                if statistics.firstMapError == nil { statistics.firstMapError = "\(design.name): linear head: \(error)" }
                requeueOrDrop(frame, slot: slot)
                return
            }
        }
        for fragment in cache.fragments(of: frame) {
            do {
                base[mapped] = try design.map(fragment, socket: socket, queue: self)
                mapped += 1
            } catch {
                statistics.mapFailures += 1
                if statistics.firstMapError == nil { statistics.firstMapError = "\(design.name): \(error)" }
                break
            }
        }
        if mapped < cache.fragments(of: frame).count {
            // Undo what was mapped; the NIC sees nothing of this attempt.
            unmapAll(base, count: mapped, frame: frame)
            unmapHead(slot)
            requeueOrDrop(frame, slot: slot)
            return
        }
        outcomes[slot] = .sent(mapped: mapped)
        let head = headMappings[slot]
        if head.length > 0 {
            // The head goes out first, as a driver posts it: the protocol headers.
            nic.consumeHead(head.address, length: head.length, flow: flow, streamOffset: streamOffset)
        }
        for (i, fragment) in cache.fragments(of: frame).enumerated() {
            let m = base[i]
            switch m.kind {
            case .bounced:
                statistics.bytesBounced += m.length
                copyTiming?.noteBounced(fragment)
            case .direct, .translated: statistics.bytesDirect += m.length
            case .convertedInPlace: statistics.bytesConvertedInPlace += m.length
            }
            statistics.fragments += 1
            nic.consume(m.address, length: m.length, flow: flow, streamOffset: streamOffset)
            streamOffset += UInt64(fragment.length)
        }
    }

    private func requeueOrDrop(_ frame: Frame, slot: Int) {
        if cache.noteRequeue(frame) <= Self.maxRequeues {
            statistics.requeues += 1
            outcomes[slot] = .requeue
        } else {
            statistics.framesDropped += 1
            outcomes[slot] = .dropped   // completion tells the socket to send it again
        }
    }

    /// `dma_map_single` of a linear head: a pre-decrypted slab object by its
    /// page's stored DMA address plus its offset (nothing copied); a
    /// `kmalloc`'d one through the DMA API, which bounces it (a real copy into
    /// a swiotlb slot).
    private func mapHead(_ head: SlabCache.Object, length: Int) throws(DMAError) -> FragmentMapping {
        if head.page.head.owner == .decryptedAllocator {
            guard device.canAddress(head.dmaAddress, size: length) else {
                throw .addressNotReachable(device: device.name, address: head.dmaAddress, size: length)
            }
            return FragmentMapping(address: head.dmaAddress, length: length, kind: .direct)
        }
        let mapping = try dma.map(head.page, offset: head.bytes - head.page.bytes, size: length, direction: .toDevice, device: device)
        let kind: FragmentMapping.Kind = switch mapping.kind {
        case .bounced: .bounced
        case .translated: .translated   // behind an IOMMU: an IOVA, unmapped at completion
        case .direct, .zeroCopyRun: .direct
        }
        return FragmentMapping(address: mapping.address, length: length, kind: kind)
    }

    /// Undoes a head's mapping, if the slot has one (a bounce releases its
    /// slot; an IOMMU mapping clears its entries).
    private func unmapHead(_ slot: Int) {
        let head = headMappings[slot]
        guard head.length > 0 else { return }
        headMappings[slot].length = 0
        guard head.kind == .bounced || head.kind == .translated else { return }
        do {
            try dma.unmapPage(head.address, size: head.length, direction: .toDevice, device: device)
        } catch {
            statistics.unmapFailures += 1
        }
    }

    /// The completion: unmap, stamp as sent, free the clones.
    private func complete(_ count: Int) {
        let now = monotonicNanoseconds()
        for slot in 0..<count {
            let frame = batch[slot]
            let mapped: Int
            switch outcomes[slot] {
            case .requeue:
                qdisc.withLock { $0.append(frame) }
                pending.wrappingAdd(1, ordering: .sequentiallyConsistent)
                continue
            case .dropped:
                // Dropped: the data never reached the wire. Mark it so before the
                // socket hears of it; it retransmits from its own queue.
                cache.markDropped(frame)
                sockets[cache.flow(of: frame)].noteDropped()
                cache.free(frame)
                continue
            case .sent(let count):
                mapped = count
            }
            unmapAll(mappings + slot * FrameData.maxFragments, count: mapped, frame: frame)
            unmapHead(slot)
            cache.markTransmitted(frame, at: now)
            cache.free(frame)
        }
        statistics.completionBatches += 1
    }

    private func unmapAll(_ base: UnsafeMutablePointer<FragmentMapping>, count: Int, frame: Frame) {
        let fragments = cache.fragments(of: frame)
        for i in 0..<count {
            do {
                try design.unmap(base[i], fragment: fragments[i], queue: self)
            } catch {
                statistics.unmapFailures += 1
            }
        }
    }
}

/// What `TXQueue.transmit` did with a frame, for its completion.
enum TransmitOutcome {
    /// Posted with `mapped` fragments mapped (0: discarded because the device
    /// is gone, or abandoned at the drain limit; released as if sent).
    case sent(mapped: Int)
    /// A mapping failed and was undone: the completion puts the frame back on
    /// the qdisc.
    case requeue
    /// Given up after `TXQueue.maxRequeues` failed maps: nothing reached the
    /// wire, and the completion tells the socket to send the data again.
    case dropped
}

#if canImport(Glibc)
import Glibc
#endif
