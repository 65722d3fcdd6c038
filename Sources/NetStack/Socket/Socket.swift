@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// Per-socket counters (written by the owning sender only).
public struct SocketStatistics: Sendable, Hashable {
    /// Payload bytes accepted by `sendmsg`.
    public var bytesSent = 0
    /// Bytes copied from the user buffer into socket pages (copy 1).
    public var bytesCopied = 0
    /// Bytes sent by reference to user pages (MSG_ZEROCOPY).
    public var bytesReferenced = 0
    public var framesSent = 0
    /// Page-fragment refills by order, and refills that restarted a page the
    /// socket alone still held.
    public var refillsOrder3 = 0
    public var refillsOrder0 = 0
    public var refillReuses = 0
    /// Refills for which the design had no page at any order.
    public var refillFailures = 0
    /// Copy 1 by where its destination was last bounced (all zero unless
    /// the run times copies: `CopyTiming`).
    public var copyTiming = CopyTimingFigures()
    /// Bytes acknowledged by the peer and freed.
    public var bytesAcknowledged = 0
    /// Frames (and their bytes) sent again because a TX queue dropped them.
    public var framesRetransmitted = 0
    public var bytesRetransmitted = 0
    /// Frames (and their bytes) given up after `Socket.maxRetransmits` drops:
    /// written by the sender, never delivered (a failure of the design).
    public var framesGivenUp = 0
    public var bytesGivenUp = 0
    /// Connections closed (and their sockets freed) during the run
    /// (`--connection-bytes`).
    public var connectionsClosed = 0
    /// Header bytes the sender wrote into the linear heads of the frames it
    /// sent (not payload, not copies: the stack builds headers in place), and heads it could not
    /// allocate (a frame then goes without one: counted, a failure).
    public var headerBytesWritten = 0
    public var headAllocationFailures = 0

    /// How each field adds up: the one list `+` is made from.
    static var fields: [FieldRule<Self>] {
        [.sum(\.bytesSent), .sum(\.bytesCopied), .sum(\.bytesReferenced), .sum(\.framesSent),
         .sum(\.refillsOrder3), .sum(\.refillsOrder0), .sum(\.refillReuses), .sum(\.refillFailures), .combining(\.copyTiming) { $0 + $1 },
         .sum(\.bytesAcknowledged), .sum(\.framesRetransmitted), .sum(\.bytesRetransmitted),
         .sum(\.framesGivenUp), .sum(\.bytesGivenUp), .sum(\.connectionsClosed), .sum(\.headerBytesWritten), .sum(\.headAllocationFailures)]
    }

    /// Two sockets' counters added up.
    public static func + (a: Self, b: Self) -> Self { fields.combine(a, b) }
}

/// The user's send buffer: private pages from the general allocator holding one
/// period of each flow's payload pattern, so copy 1 reads real bytes that the NIC
/// can verify. It is `period + maxFrame` long, so any frame's worth of stream
/// starting inside the period is contiguous.
public struct UserBuffer: Sendable {
    public let head: Page
    public let period: UInt64

    public init(head: Page, flow: Int, period: UInt64) {
        precondition(UInt64(head.byteCount) >= period + UInt64(Socket.maxFrameBytes),
                     "user buffer of \(head.byteCount) bytes cannot hold a \(period)-byte period plus a frame")
        self.head = head
        self.period = period
        PayloadPattern(flow: flow, period: period).fill(head.bytes, count: head.byteCount, streamOffset: 0)
    }

    /// Where stream offset `offset` starts in the buffer.
    @inlinable
    public func offset(for streamOffset: UInt64) -> Int { Int(streamOffset % period) }
}

/// A TCP-like socket: send-buffer accounting, a page fragment refilled by the
/// design, `sendmsg` that copies user bytes into fragments (copy 1) and cuts
/// frames of up to 64 KiB, and a retransmit queue that keeps every frame until the
/// peer model acknowledges it one round-trip after the NIC sent it. A frame a
/// TX queue dropped is sent again, as TCP retransmits a segment that was never
/// acknowledged.
///
/// All state is owned by its sender thread. A queue's qdisc runs in whichever
/// sender's context holds the queue's running bit (there is no queue thread),
/// and reads only the socket's identity and the design it is passed to, and
/// tells it about drops (`noteDropped`, an atomic count).
public final class Socket: @unchecked Sendable {
    /// The GSO size goal: frames carry at most 64 KiB.
    public static let maxFrameBytes = 65536
    /// Retransmissions of one frame before the socket gives up on it (`tcp_retries2`).
    public static let maxRetransmits = 15
    /// The default send buffer limit (`tcp_wmem[2]`, 4 MB).
    public static let defaultSendBufferBytes = 4 << 20

    public let flow: Int
    public let queueIndex: Int
    public let sender: Int
    public let sendBufferLimit: Int
    /// `SOCK_ZEROCOPY` (`SO_ZEROCOPY` set): the socket may send with
    /// MSG_ZEROCOPY. The seed patch takes no swiotlb pages for such a socket.
    public let zeroCopy: Bool
    /// The fraction of sendmsg calls that pass MSG_ZEROCOPY (fragments
    /// reference the user's pages instead of copies): 1 for every call, 0 for
    /// none; in between, spread evenly over the calls.
    public let zeroCopyFraction: Double
    private var sendCalls = 0
    let user: UserBuffer
    /// Bytes a connection sends before it is closed (nil: it never is).
    public let connectionBytes: Int?
    private var sentInConnection = 0
    /// The connection open on this flow: moves (releasing) when one is
    /// closed and its `struct sock` freed, so that a pointer stored with an
    /// older generation is known to point to a freed socket.
    private let generationCounter = Atomic<UInt32>(0)
    /// Where frames' linear heads come from and how many header bytes each
    /// carries (nil / 0: frames have no head).
    let heads: SlabCache?
    let headerBytes: Int

    // Page fragment (`sk->sk_frag`).
    private(set) var fragmentPage: Page?
    private(set) var fragmentOffset = 0
    private(set) var fragmentSize = 0

    var streamOffset: UInt64 = 0
    /// Set when the run times copy 1 (`CopyTiming`); nil otherwise.
    var copyTiming: CopyTiming?
    /// Bytes in frames not yet acknowledged (`sk_wmem_queued`).
    public private(set) var inflightBytes = 0
    private var retransmitQueue = FrameRing()
    /// Frames the TX queues dropped since the socket last looked (queue threads
    /// add with releasing ordering after marking the frame dropped).
    private let dropsPending = Atomic<Int>(0)
    public private(set) var statistics = SocketStatistics()

    public init(flow: Int, queueIndex: Int, sender: Int, user: UserBuffer,
                sendBufferLimit: Int = Socket.defaultSendBufferBytes, zeroCopy: Bool = false,
                zeroCopyFraction: Double? = nil, connectionBytes: Int? = nil, heads: SlabCache? = nil, headerBytes: Int = 0) {
        self.connectionBytes = connectionBytes
        self.flow = flow
        self.heads = headerBytes > 0 ? heads : nil
        self.headerBytes = heads == nil ? 0 : headerBytes
        self.queueIndex = queueIndex
        self.sender = sender
        self.user = user
        self.sendBufferLimit = sendBufferLimit
        self.zeroCopy = zeroCopy
        self.zeroCopyFraction = zeroCopy ? min(1, max(0, zeroCopyFraction ?? 1)) : 0
    }

    /// Whether this sendmsg call passes MSG_ZEROCOPY: the calls whose running
    /// count of zero-copy calls `floor(n * fraction)` steps up, so exactly
    /// that fraction of calls (within one) are zero-copy, evenly spread.
    private func nextCallIsZeroCopy() -> Bool {
        guard zeroCopy else { return false }
        let n = Double(sendCalls)
        sendCalls += 1
        return ((n + 1) * zeroCopyFraction).rounded(.down) > (n * zeroCopyFraction).rounded(.down)
    }

    /// Whether a message of `bytes` fits in the send buffer now (and the
    /// connection has not sent all it will before it closes).
    public func canSend(_ bytes: Int) -> Bool {
        inflightBytes + bytes <= sendBufferLimit && !connectionFinished
    }

    /// The generation of the connection open on this flow (0 for the first).
    public var generation: UInt32 { generationCounter.load(ordering: .acquiring) }

    /// Whether this connection has sent the bytes it sends before it closes.
    var connectionFinished: Bool { connectionBytes.map { sentInConnection >= $0 } ?? false }

    /// Closes a finished connection once every frame of it is acknowledged and
    /// none is waiting to be retransmitted: the page fragment goes back to the
    /// design, the design forgets its per-socket state, the `struct sock` is
    /// freed (the generation moves) and the flow's next connection opens in
    /// its place. Returns whether it closed. Sender thread only.
    @discardableResult
    func closeIfFinished(design: TransmitDesign) -> Bool {
        guard connectionFinished, retransmitQueue.count == 0, dropsPending.load(ordering: .acquiring) == 0 else { return false }
        releaseFragmentPage(design: design)
        design.socketClosed(self)
        generationCounter.wrappingAdd(1, ordering: .releasing)
        sentInConnection = 0
        statistics.connectionsClosed += 1
        return true
    }

    /// `sk_page_frag_refill`: makes sure the page fragment has room for at least
    /// `minimum` bytes (the kernel asks for 32). Reuses the page from offset 0
    /// when the socket alone holds it; otherwise drops it and asks the design for
    /// an order-3 run, then order 0.
    func refillFragment(design: TransmitDesign, minimum: Int = 32) -> Bool {
        if let page = fragmentPage {
            if design.isSoleReference(page) {
                statistics.refillReuses += 1
                fragmentOffset = 0
                return true
            }
            if fragmentOffset + minimum <= fragmentSize { return true }
            design.releaseSocketPage(page)
            fragmentPage = nil
        }
        for order in [PageGeometry.socketFragOrder, 0] {
            if let page = design.allocateSocketPage(order: order, for: self) {
                fragmentPage = page
                fragmentOffset = 0
                fragmentSize = page.byteCount
                if order == 0 { statistics.refillsOrder0 += 1 } else { statistics.refillsOrder3 += 1 }
                return true
            }
        }
        statistics.refillFailures += 1
        return false
    }

    /// `tcp_sendmsg`: sends `bytes` of the flow's stream, returning the frames to
    /// transmit (the caller hands a clone of each to the TX queue). The message
    /// must fit in the send buffer (`canSend`). Returns the bytes actually sent,
    /// which is less than asked only when the design had no page for a refill.
    func send(_ bytes: Int, design: TransmitDesign, cache: FrameCache, push: (Frame) -> Void) -> Int {
        let zeroCopy = nextCallIsZeroCopy()
        var remaining = bytes
        var frame: Frame? = nil
        while remaining > 0 {
            let current: Frame
            if let open = frame {
                current = open
            } else {
                current = cache.allocate(flow: flow, streamOffset: streamOffset)
                // `skb_mark_for_recycle`: the frame free path sends pool pages home.
                if design.marksFramesForRecycle { cache.markForRecycle(current) }
                if let heads { attachHead(to: current, from: heads, cache: cache) }
                frame = current
            }
            let frameSpace = Self.maxFrameBytes - cache.length(of: current)
            var appended = 0
            if zeroCopy {
                // Reference the user's pages, one fragment per 4 KiB page at most,
                // as the user's pages are not contiguous in a real process.
                let at = user.offset(for: streamOffset)
                let inPage = PageGeometry.size - (at & (PageGeometry.size - 1))
                let chunk = min(remaining, frameSpace, inPage)
                let page = user.head
                if cache.canCoalesce(current, page: page, offset: at), at & (PageGeometry.size - 1) != 0 {
                    cache.extendLastFragment(of: current, by: chunk)
                } else {
                    if cache.fragments(of: current).count == FrameData.maxFragments {
                        finish(current, cache: cache, push: push); frame = nil; continue
                    }
                    page.retain()
                    append(Fragment(page: page, offset: at, length: chunk), to: current, cache: cache)
                }
                statistics.bytesReferenced += chunk
                appended = chunk
            } else {
                if fragmentPage == nil || fragmentOffset >= fragmentSize {
                    guard refillFragment(design: design) else { break }
                }
                guard let page = fragmentPage else { break }
                let chunk = min(remaining, frameSpace, fragmentSize - fragmentOffset)
                // Copy 1: user bytes into the socket page.
                if let copyTiming {
                    copyTimed(into: page.bytes + fragmentOffset, from: user.head.bytes + user.offset(for: streamOffset), chunk, copyTiming)
                } else {
                    memcpy(page.bytes + fragmentOffset, user.head.bytes + user.offset(for: streamOffset), chunk)
                }
                statistics.bytesCopied += chunk
                if cache.canCoalesce(current, page: page, offset: fragmentOffset) {
                    cache.extendLastFragment(of: current, by: chunk)
                } else {
                    if cache.fragments(of: current).count == FrameData.maxFragments {
                        finish(current, cache: cache, push: push); frame = nil; continue
                    }
                    design.retainFragment(page)
                    append(Fragment(page: page, offset: fragmentOffset, length: chunk), to: current, cache: cache)
                }
                fragmentOffset += chunk
                appended = chunk
            }
            streamOffset += UInt64(appended)
            remaining -= appended
            if cache.length(of: current) == Self.maxFrameBytes || remaining == 0 {
                finish(current, cache: cache, push: push)
                frame = nil
            }
        }
        if let unfinished = frame {
            if cache.length(of: unfinished) > 0 { finish(unfinished, cache: cache, push: push) } else { cache.free(unfinished) }
        }
        let sent = bytes - remaining
        statistics.bytesSent += sent
        sentInConnection += sent
        return sent
    }

    /// `alloc_skb`'s head: a slab object, the headers written in place (the
    /// header pattern at the frame's stream offset, so the NIC can check them).
    private func attachHead(to frame: Frame, from heads: SlabCache, cache: FrameCache) {
        guard let head = try? heads.allocate(size: headerBytes) else {
            statistics.headAllocationFailures += 1
            return
        }
        PayloadPattern.header(flow: flow).fill(head.bytes, count: headerBytes, streamOffset: streamOffset)
        cache.attachHead(head, length: headerBytes, to: frame)
    }

    private func finish(_ frame: Frame, cache: FrameCache, push: (Frame) -> Void) {
        let length = cache.length(of: frame)
        retransmitQueue.append(frame)
        inflightBytes += length
        statistics.framesSent += 1
        if let head = cache.head(of: frame) { statistics.headerBytesWritten += head.length }
        push(frame)
    }

    /// The peer model: frees every frame at the head of the retransmit queue
    /// whose data reached the wire at least `roundTrip` nanoseconds before `now`
    /// (a cumulative ACK). Returns the bytes acknowledged.
    @discardableResult
    func processAcknowledgements(now: UInt64, roundTrip: UInt64, cache: FrameCache) -> Int {
        var acknowledged = 0
        while let head = retransmitQueue.first {
            let sentAt = cache.transmittedAt(head)
            guard sentAt != 0, sentAt != FrameCache.droppedMark, sentAt &+ roundTrip <= now else { break }
            _ = retransmitQueue.removeFirst()
            let length = cache.length(of: head)
            inflightBytes -= length
            acknowledged += length
            cache.free(head)
        }
        statistics.bytesAcknowledged += acknowledged
        return acknowledged
    }

    /// Frames waiting for an acknowledgement.
    public var unacknowledgedFrames: Int { retransmitQueue.count }

    /// Called by a TX queue after it marked one of this socket's frames dropped.
    func noteDropped() {
        dropsPending.wrappingAdd(1, ordering: .releasing)
    }

    /// The retransmit timer: sends again every frame a TX queue dropped (a clone
    /// to `push`, as `tcp_retransmit_skb`), or, after `maxRetransmits`, gives up
    /// on it: its bytes are counted given up and it is released as if
    /// acknowledged. Costs one atomic load when nothing was dropped.
    func retransmitDropped(cache: FrameCache, push: (Frame) -> Void) {
        guard dropsPending.load(ordering: .acquiring) > 0 else { return }
        var drops = dropsPending.exchange(0, ordering: .acquiring)
        var i = 0
        while drops > 0 && i < retransmitQueue.count {
            let frame = retransmitQueue[i]
            i += 1
            guard cache.transmittedAt(frame) == FrameCache.droppedMark else { continue }
            drops -= 1
            let length = cache.length(of: frame)
            if cache.noteRetransmit(frame) > Self.maxRetransmits {
                statistics.framesGivenUp += 1
                statistics.bytesGivenUp += length
                cache.markTransmitted(frame, at: 1)
                continue
            }
            statistics.framesRetransmitted += 1
            statistics.bytesRetransmitted += length
            cache.markUnsent(frame)
            push(cache.clone(frame))
        }
    }

    /// Copy 1 of `count` bytes, timed and filed by where `destination` was
    /// last bounced (`CopyTiming`).
    @inline(never)
    private func copyTimed(into destination: UnsafeMutableRawPointer, from source: UnsafeMutableRawPointer, _ count: Int,
                           _ timing: CopyTiming) {
        let kind = timing.destination(of: destination).rawValue
        let start = monotonicNanoseconds()
        memcpy(destination, source, count)
        statistics.copyTiming.nanoseconds[kind] += Int(monotonicNanoseconds() &- start)
        statistics.copyTiming.bytes[kind] += count
    }

    /// Drops the socket's page fragment (`sk_stream_kill_queues` / socket close).
    func releaseFragmentPage(design: TransmitDesign) {
        if let page = fragmentPage {
            design.releaseSocketPage(page)
            fragmentPage = nil
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

extension Socket {
    /// Appends a fragment the socket built within the frame's limits (it
    /// checked the fragment count and cut the chunk inside the page run), so a
    /// refusal is a bug in the socket: it traps naming it.
    func append(_ fragment: Fragment, to frame: Frame, cache: FrameCache) {
        do {
            try cache.append(fragment, to: frame)
        } catch {
            preconditionFailure("socket built a fragment the frame refused: \(error)")
        }
    }
}
