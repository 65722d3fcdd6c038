@_spi(DMAPoolsSupport) import DMAPools

/// A block device's I/O through the DMA API (`txsim block`), for the review's
/// question whether block I/O, too, should draw on the pre-decrypted
/// allocator: requests of 4...128 KiB, reads and writes, a queue depth, the
/// buffers either ordinary private pages of the general allocator (which
/// bounce: a write copies into the swiotlb slot at map, a read copies back at
/// unmap) or pre-decrypted pages (addressed by the DMA address their
/// allocator stored, nothing copied, nothing mapped per request).
///
/// The device reads every byte of a write and checks it, and writes known
/// bytes for a read, which the CPU checks after the unmap: every copy is a
/// real copy of real bytes, and a byte lost or misplaced by a bounce is
/// counted as corrupt.
public enum BlockSimulation {
    /// Where the I/O buffers come from.
    public enum BufferSource: String, Sendable, Hashable, CaseIterable {
        /// `alloc_pages` (jemalloc over private memory): bounced.
        case general
        /// The pre-decrypted allocator: shared pages, mapped directly.
        case predecrypted = "pre-decrypted"
    }

    /// The workload: request sizes taken in turn, a share of reads spread
    /// evenly over the requests, `queueDepth` requests mapped at once.
    public struct Workload: Sendable, Hashable {
        public var requestSizes: [Int] = [4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10]
        public var readFraction: Double = 0.5
        public var queueDepth: Int = 8
        public var durationSeconds: Double = 0.5
        /// Buffers allocated at submission and freed at completion, request
        /// by request (as bio pages come and go), instead of once before the
        /// clock: then every request's frees pass through the page
        /// allocator's free path (and a free-path hook, where one is installed).
        public var buffersPerRequest = false

        public static let maximumRequestBytes = 128 << 10
        public static let queueDepthRange = 1...64

        public init() {}

        public func validate() throws(ParameterError) {
            func check(_ ok: Bool, _ name: String, _ why: String) throws(ParameterError) {
                if !ok { throw ParameterError.invalid(parameter: name, reason: why) }
            }
            try check(!requestSizes.isEmpty && requestSizes.allSatisfy { $0 >= 512 && $0 <= Self.maximumRequestBytes && $0 % 512 == 0 },
                      "request-sizes", "\(requestSizes) must be one or more multiples of 512 in 512...\(Self.maximumRequestBytes) bytes")
            try check((0...1).contains(readFraction), "read-fraction", "\(readFraction) must be in 0...1")
            try check(Self.queueDepthRange.contains(queueDepth), "queue-depth", "\(queueDepth) must be in \(Self.queueDepthRange)")
            try check(NetStack.Workload.durationRange.contains(durationSeconds), "duration",
                      "\(durationSeconds) must be in 0.05...3600 seconds")
        }
    }

    /// What one run did.
    public struct Result: Sendable, Hashable {
        public var source: BufferSource
        public var requests = 0
        public var reads = 0
        public var writes = 0
        /// Bytes the device moved (read and written).
        public var bytes = 0
        public var seconds = 0.0
        /// Bytes copied by the DMA layer (bounces at map and at unmap), counted
        /// where the block device maps and unmaps.
        public var bytesBounced = 0
        /// Segment runs allocated and freed (once each before and after the
        /// clock, or per request with `buffersPerRequest`).
        public var allocations = 0
        public var frees = 0
        /// Alone on its guest: how far the bounces counted at the map and
        /// unmap sites are from swiotlb's own count (must be 0).
        public var bounceCountMismatch = 0
        /// Bytes the device checked (writes) and the CPU checked (reads).
        public var verifiedBytes = 0
        public var corruptBytes = 0
        public var dmaFaults = 0
        public var firstProblem: String?
        /// Chunks the pre-decrypted allocator converted for the buffers (each
        /// one modelled conversion; the buffers are allocated before the clock).
        public var chunksConverted = 0
        public var lostPages = 0

        /// GB/s of I/O (10^9 bytes per second).
        public var gigabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1e9 : 0 }
        /// Bytes copied by the DMA layer per byte of I/O.
        public var copiesPerByte: Double { bytes > 0 ? Double(bytesBounced) / Double(bytes) : 0 }
        public var passed: Bool { requests > 0 && corruptBytes == 0 && dmaFaults == 0 && lostPages == 0 && bounceCountMismatch == 0 }
    }

    /// Runs `workload` on a fresh guest with buffers from `source`.
    public static func run(source: BufferSource, workload: Workload,
                           memory: GuestMemoryConfiguration = .init()) throws -> Result {
        try workload.validate()
        let guest = try Guest(memory)
        let device = try guest.devices.add(name: "blk0")
        let bouncedBefore = bouncedBytes(guest)
        var result = try run(source: source, workload: workload, guest: guest, device: device,
                             until: monotonicNanoseconds() + UInt64(workload.durationSeconds * 1e9))
        // Alone on its guest, swiotlb's own count is the block device's: the
        // two must agree (the count at the map and unmap sites is what a
        // shared run, whose swiotlb also bounces the network's bytes, reports).
        let swiotlbBounced = bouncedBytes(guest) - bouncedBefore
        if swiotlbBounced != result.bytesBounced && result.firstProblem == nil {
            result.firstProblem = "bounces counted at map and unmap (\(result.bytesBounced) bytes) differ from swiotlb's (\(swiotlbBounced))"
            result.bounceCountMismatch = abs(swiotlbBounced - result.bytesBounced)
        }
        result.lostPages = guest.lostPages()
        return result
    }

    /// Runs `workload` on `guest` (which others may be using at the same
    /// time: `SharedSimulation`) through `device` until `deadline`
    /// (`monotonicNanoseconds()`), then gives every buffer back. Counts its
    /// own bounces at the map and unmap sites, and its own frees; leaves
    /// `lostPages` to the caller, who knows when the guest is quiet.
    public static func run(source: BufferSource, workload: Workload, guest: Guest, device: Device,
                           until deadline: UInt64) throws -> Result {
        try workload.validate()
        // Each request is a scatter list of segments of at most 32 KiB (an
        // order-3 run: the largest the pre-decrypted allocator hands out), one
        // run per segment, for both sources alike.
        let segmentsPerBuffer = Workload.maximumRequestBytes / segmentBytes
        let convertedBefore = guest.decrypted.statistics.chunksConverted
        var result = Result(source: source)
        func allocate() throws -> Page {
            result.allocations += 1
            switch source {
            case .general: return try guest.allocator.allocatePages(order: segmentOrder)
            case .predecrypted: return try guest.decrypted.allocate(order: segmentOrder)
            }
        }
        func free(_ run: Page) {
            result.frees += 1
            switch source {
            case .general: guest.allocator.freePages(run)
            case .predecrypted: guest.decrypted.free(run)
            }
        }
        // The buffers: allocated once before the clock, or per request
        // (`buffersPerRequest`, as bio pages come and go with their requests).
        var buffers: [[Page]] = []
        if !workload.buffersPerRequest {
            for _ in 0..<workload.queueDepth {
                var runs: [Page] = []
                for _ in 0..<segmentsPerBuffer { runs.append(try allocate()) }
                buffers.append(runs)
            }
        } else {
            buffers = Array(repeating: [], count: workload.queueDepth)
        }
        var inFlight: [(address: DMAAddress, size: Int, read: Bool, request: Int, slot: Int, segment: Int, bounced: Bool)] = []
        inFlight.reserveCapacity(workload.queueDepth * segmentsPerBuffer)
        let start = monotonicNanoseconds()
        var request = 0
        // At least one round of requests, however late a loaded machine runs
        // this thread (a run that did nothing proves nothing).
        repeat {
            // Submit: the CPU fills a write's buffer, then the driver maps.
            inFlight.removeAll(keepingCapacity: true)
            for slot in 0..<workload.queueDepth {
                let size = workload.requestSizes[request % workload.requestSizes.count]
                let n = Double(request)
                let read = ((n + 1) * workload.readFraction).rounded(.down) > (n * workload.readFraction).rounded(.down)
                var offset = 0
                var segment = 0
                while offset < size {
                    let length = min(segmentBytes, size - offset)
                    if workload.buffersPerRequest { buffers[slot].append(try allocate()) }
                    let run = buffers[slot][segment]
                    if !read { pattern(request).fill(run.bytes, count: length, streamOffset: UInt64(offset)) }
                    let (address, bounced) = try map(run, length: length, read: read, source: source, guest: guest, device: device)
                    // swiotlb bounces the original at map, whatever the direction.
                    if bounced { result.bytesBounced += length }
                    inFlight.append((address, length, read, request, slot, segment, bounced))
                    offset += length
                    segment += 1
                }
                request += 1
            }
            // The device: checks a write's bytes, writes a read's.
            for io in inFlight {
                switch DeviceAccess.resolve(io.address, length: io.size, memory: guest.memory, device: device) {
                case .failure(let fault):
                    result.dmaFaults += 1
                    if result.firstProblem == nil { result.firstProblem = fault.description }
                case .success(let bytes):
                    let at = UInt64(io.segment * segmentBytes)
                    if io.read {
                        pattern(io.request).fill(bytes, count: io.size, streamOffset: at)
                    } else {
                        check(bytes, io.size, io.request, at: at, into: &result, who: "device")
                    }
                    result.bytes += io.size
                }
            }
            // Completion: unmap (a read's bounce copies back), the CPU checks a read.
            for io in inFlight {
                if source == .general {
                    try guest.dma.unmapPage(io.address, size: io.size, direction: io.read ? .fromDevice : .toDevice, device: device)
                    if io.read && io.bounced { result.bytesBounced += io.size }
                }
                if io.read {
                    check(buffers[io.slot][io.segment].bytes, io.size, io.request, at: UInt64(io.segment * segmentBytes),
                          into: &result, who: "CPU after unmap")
                }
                // A request is done with its first segment's completion counted.
                if io.segment == 0 {
                    if io.read { result.reads += 1 } else { result.writes += 1 }
                    result.requests += 1
                }
            }
            if workload.buffersPerRequest {
                for slot in buffers.indices {
                    for run in buffers[slot] { free(run) }
                    buffers[slot].removeAll(keepingCapacity: true)
                }
            }
        } while monotonicNanoseconds() < deadline
        result.seconds = Double(monotonicNanoseconds() - start) / 1e9
        result.chunksConverted = guest.decrypted.statistics.chunksConverted - convertedBefore
        for run in buffers.joined() { free(run) }
        return result
    }

    /// The driver's map: a general page through the DMA API (which bounces:
    /// the guest forces swiotlb); a pre-decrypted page by the DMA address its
    /// allocator stored (it is shared already, so it needs no mapping and no
    /// unmap), as the pre-decrypted TX designs map theirs.
    static func map(_ run: Page, length: Int, read: Bool, source: BufferSource, guest: Guest,
                    device: Device) throws -> (address: DMAAddress, bounced: Bool) {
        switch source {
        case .general:
            let mapping = try guest.dma.map(run, offset: 0, size: length, direction: read ? .fromDevice : .toDevice, device: device)
            return (mapping.address, mapping.kind == .bounced)
        case .predecrypted:
            let address = run.head.dmaAddress
            guard device.canAddress(address, size: length) else {
                throw DMAError.addressNotReachable(device: device.name, address: address, size: length)
            }
            return (address, false)
        }
    }

    /// Segments are order-3 runs (32 KiB).
    static let segmentOrder = 3
    static let segmentBytes = PageGeometry.size << segmentOrder

    static func pattern(_ request: Int) -> PayloadPattern { PayloadPattern(flow: 0x0b10c000 + request) }

    static func check(_ bytes: UnsafeRawPointer, _ size: Int, _ request: Int, at streamOffset: UInt64,
                      into result: inout Result, who: String) {
        let p = pattern(request)
        if let bad = p.firstMismatch(in: bytes, count: size, streamOffset: streamOffset) {
            var corrupt = 0
            for i in bad..<size where bytes.load(fromByteOffset: i, as: UInt8.self) != p.byte(at: streamOffset + UInt64(i)) { corrupt += 1 }
            result.corruptBytes += corrupt
            if result.firstProblem == nil { result.firstProblem = "request \(request): byte \(bad) differs as the \(who) reads it (\(corrupt) bad bytes)" }
        }
        result.verifiedBytes += size
    }

    static func bouncedBytes(_ guest: Guest) -> Int {
        let s = guest.swiotlb.statistics
        return s.bytesBouncedToDevice + s.bytesBouncedToCPU
    }
}
