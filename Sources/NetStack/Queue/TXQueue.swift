import DMAPools
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
    /// never reached the wire (a failure of the design under test).
    public var framesDropped = 0
    public var unmapFailures = 0
    public var firstMapError: String?
    /// NAPI-style completion batches.
    public var completionBatches = 0

    public static func + (a: Self, b: Self) -> Self {
        var s = a
        s.frames += b.frames; s.fragments += b.fragments; s.bytesBounced += b.bytesBounced
        s.bytesDirect += b.bytesDirect; s.bytesConvertedInPlace += b.bytesConvertedInPlace
        s.mapFailures += b.mapFailures; s.requeues += b.requeues; s.framesDropped += b.framesDropped
        s.unmapFailures += b.unmapFailures
        s.firstMapError = a.firstMapError ?? b.firstMapError
        s.completionBatches += b.completionBatches
        return s
    }
}

/// A TX queue: a qdisc that senders enqueue clones into, and a transmit loop run
/// by one thread (the TX softirq under `HARD_TX_LOCK`), so everything it does —
/// including copy 2 in the bounce design — is serialised per queue.
///
/// The loop takes up to `budget` frames, maps every fragment through the design,
/// hands the descriptors to its NIC ring, then completes the batch (NAPI-like):
/// unmaps, stamps the data as sent for the peer model, and frees the clones.
public final class TXQueue: @unchecked Sendable {
    public static let budget = 64
    /// Failed transmits before a frame is dropped for good.
    public static let maxRequeues = 8

    public let index: Int
    public let device: Device
    public let nic: NICRing
    let design: TransmitDesign
    let cache: FrameCache
    private let sockets: [Socket]
    private let qdisc = Mutex(FrameRing(capacity: 1024))
    private let parker = Parker()
    private let stopping = Atomic<Bool>(false)
    private let batch: UnsafeMutablePointer<Frame>
    private let mappings: UnsafeMutablePointer<FragmentMapping>
    private let mappingCounts: UnsafeMutablePointer<Int>
    public private(set) var statistics = TXQueueStatistics()

    init(index: Int, device: Device, nic: NICRing, design: TransmitDesign, cache: FrameCache, sockets: [Socket]) {
        self.index = index
        self.device = device
        self.nic = nic
        self.design = design
        self.cache = cache
        self.sockets = sockets
        batch = .allocate(capacity: Self.budget)
        mappings = .allocate(capacity: Self.budget * FrameData.maxFragments)
        mappingCounts = .allocate(capacity: Self.budget)
    }

    deinit {
        batch.deallocate()
        mappings.deallocate()
        mappingCounts.deallocate()
    }

    /// `dev_queue_xmit` from a sender: enqueue a clone and raise the softirq.
    func enqueue(_ clone: Frame) {
        let wasEmpty = qdisc.withLock { ring in
            let empty = ring.isEmpty
            ring.append(clone)
            return empty
        }
        if wasEmpty { parker.signal() }
    }

    /// Asks the loop to finish once the qdisc is empty.
    func stop() {
        stopping.store(true, ordering: .releasing)
        parker.signal()
    }

    /// The transmit loop; returns when stopped and drained.
    func run() {
        design.queueStarted(self)
        while true {
            let taken = qdisc.withLock { ring -> Int in
                var n = 0
                while n < Self.budget, let frame = ring.removeFirst() {
                    batch[n] = frame
                    n += 1
                }
                return n
            }
            if taken == 0 {
                if stopping.load(ordering: .acquiring) && qdisc.withLock({ $0.isEmpty }) { return }
                parker.park(timeoutNanoseconds: 1_000_000)
                continue
            }
            for i in 0..<taken { transmit(batch[i], slot: i) }
            complete(taken)
        }
    }

    /// `ndo_start_xmit`: map every fragment and post the descriptors.
    private func transmit(_ frame: Frame, slot: Int) {
        mappingCounts[slot] = -1
        let flow = cache.flow(of: frame)
        let socket = sockets[flow]
        var streamOffset = cache.streamOffset(of: frame)
        let base = mappings + slot * FrameData.maxFragments
        var mapped = 0
        statistics.frames += 1
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
            if cache.noteRequeue(frame) <= Self.maxRequeues {
                statistics.requeues += 1
                mappingCounts[slot] = -2  // completion puts it back on the qdisc
            } else {
                statistics.framesDropped += 1
                mappingCounts[slot] = 0   // completion releases it as if sent
            }
            return
        }
        mappingCounts[slot] = mapped
        for (i, fragment) in cache.fragments(of: frame).enumerated() {
            let m = base[i]
            switch m.kind {
            case .bounced: statistics.bytesBounced += m.length
            case .direct: statistics.bytesDirect += m.length
            case .convertedInPlace: statistics.bytesConvertedInPlace += m.length
            }
            statistics.fragments += 1
            nic.consume(m.address, length: m.length, flow: flow, streamOffset: streamOffset)
            streamOffset += UInt64(fragment.length)
        }
    }

    /// The completion: unmap, stamp as sent, free the clones.
    private func complete(_ count: Int) {
        let now = monotonicNanoseconds()
        for slot in 0..<count {
            let frame = batch[slot]
            if mappingCounts[slot] == -2 {
                qdisc.withLock { $0.append(frame) }
                continue
            }
            unmapAll(mappings + slot * FrameData.maxFragments, count: mappingCounts[slot], frame: frame)
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
