@_spi(DMAPoolsSupport) import DMAPools
import Synchronization

/// One guest, one pre-decrypted allocator, three users at once (`txsim
/// shared`): network TX (a design's socket pages and its frames' linear
/// heads), a block device's I/O, and slab users (small objects a driver maps
/// often: descriptors, command blocks) — Mostafa Saleh's "teach some of the
/// kernel subsystems (SKB, BLK, SLAB) about CoCo allocators", run together.
///
/// With `.predecrypted` buffers every user draws on `guest.decrypted`, the
/// one `DecryptedAllocator` of the guest: the TX design's socket pages (a
/// design that places them there, `decrypted-pool`) and its heads (a
/// `DecryptedSlabCache` over the allocator, when the design's
/// `linearHeadPlacement` says so), the block buffers, and the slab users'
/// cache. With `.general` buffers the same run uses today's memory: the TX
/// design given (by default the seed patch, `frag-refill`, whose free-path
/// hook then sees every other subsystem's frees), block buffers from the
/// general allocator and `kmalloc` objects, all bounced.
///
/// Every byte is checked by the device that reads it (the NIC, the block
/// device, the slab users' device) or by the CPU after a read; every page
/// and every slab object comes home.
public enum SharedSimulation {
    /// Where the block and slab users' buffers come from (the TX design brings its own).
    public typealias Buffers = BlockSimulation.BufferSource

    /// The linear head `txsim shared` gives each frame: Ethernet (14) + IPv6
    /// (40) + TCP with timestamps (32) is 86 bytes of headers, in the 128-byte
    /// slab class (the compare tables run without heads, `Workload.headerBytes` 0).
    public static let defaultHeaderBytes = 128

    /// The slab users: a batch of objects allocated, filled, mapped for a
    /// device that checks every byte, unmapped and freed, over and over.
    public struct SlabWorkload: Sendable, Hashable {
        /// Object sizes taken in turn (descriptors, command blocks).
        public var objectSizes: [Int] = [64, 256, 1024]
        /// Objects mapped at once.
        public var batch: Int = 32
        public static let batchRange = 1...1024

        public init() {}

        public func validate() throws(ParameterError) {
            let largest = SlabCache.objectSizes[SlabCache.objectSizes.count - 1]
            if objectSizes.isEmpty || !objectSizes.allSatisfy({ (1...largest).contains($0) }) {
                throw .invalid(parameter: "slab-sizes", reason: "\(objectSizes) must be one or more sizes in 1...\(largest) bytes")
            }
            if !Self.batchRange.contains(batch) {
                throw .invalid(parameter: "slab-batch", reason: "\(batch) must be in \(Self.batchRange)")
            }
        }
    }

    /// The three workloads. The block and slab users run for the transmit
    /// workload's duration.
    public struct Workload: Sendable, Hashable {
        public var transmit: NetStack.Workload
        public var block: BlockSimulation.Workload
        public var slab = SlabWorkload()

        /// The default: the TX default workload with 128-byte heads and the
        /// NIC checking every byte, block I/O with buffers allocated and freed
        /// per request.
        public init() {
            transmit = NetStack.Workload()
            transmit.headerBytes = SharedSimulation.defaultHeaderBytes
            transmit.durationSeconds = 0.5
            transmit.verify = true
            block = BlockSimulation.Workload()
            block.buffersPerRequest = true
        }

        public func validate() throws(ParameterError) {
            try transmit.validate()
            var b = block
            b.durationSeconds = transmit.durationSeconds
            try b.validate()
            try slab.validate()
        }
    }

    /// What the slab users did.
    public struct SlabResult: Sendable, Hashable {
        public var objects = 0
        /// Bytes the device read (each object's size).
        public var bytes = 0
        public var bytesBounced = 0
        public var verifiedBytes = 0
        public var corruptBytes = 0
        public var dmaFaults = 0
        public var firstProblem: String?
        public var seconds = 0.0
        /// The most pages the users' cache held at once, the pages it gave
        /// back to their allocator (for `kmalloc`, through the page
        /// allocator's free path), and objects still live at the end (must be 0).
        public var peakPages = 0
        public var pagesReturned = 0
        public var objectsLost = 0

        public var gigabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1e9 : 0 }
        public var copiesPerByte: Double { bytes > 0 ? Double(bytesBounced) / Double(bytes) : 0 }
        public var passed: Bool { objects > 0 && corruptBytes == 0 && dmaFaults == 0 && objectsLost == 0 && firstProblem == nil }
    }

    /// What one shared run did.
    public struct Result: Sendable {
        public var buffers: Buffers
        public var transmit: TransmitResult
        public var block: BlockSimulation.Result
        public var slab: SlabResult
        /// The guest's pre-decrypted allocator over the whole run (set-up
        /// included): chunks converted, the most chunks and pages it held at
        /// once, and what it still held after every user gave everything back
        /// and its spares were released (must be 0).
        public var chunksConverted = 0
        public var peakChunksHeld = 0
        public var peakLivePages = 0
        public var chunksHeldAtEnd = 0
        public var livePagesAtEnd = 0
        public var chunkBytes = 0
        /// Runs the pre-decrypted allocator handed out over the run, every
        /// user's together (socket pages, head slab pages, block segments,
        /// slab pages).
        public var allocatorAllocations = 0
        /// The free-path hook (a guest booted with `.swiotlbHook`): every
        /// check in the run, those on frees unrelated to networking (the block
        /// buffers' and the slab users' page frees to the general allocator,
        /// counted where they free), and the hook's cost per check, timed
        /// after the run as frag-refill's report row times it.
        public var hookInstalled = false
        public var hookChecks = 0
        public var hookChecksUnrelated = 0
        public var hookNanosecondsPerCheck = 0.0
        /// A companion's error, if one stopped early.
        public var companionError: String?

        /// TX's own copies per payload byte: the sender's copy 1 plus the
        /// payload it mapped by a bounce (TX bounces only towards the device,
        /// once at map), from its own counters: the guest's swiotlb also
        /// bounces the block and slab users' bytes in a general run.
        public var transmitCopiesPerByte: Double {
            let t = transmit
            return t.payloadBytes > 0 ? Double(t.bytesCopiedBySender + t.bytesMappedBounced) / Double(t.payloadBytes) : 0
        }
        public var hookMicrosecondsUnrelated: Double { Double(hookChecksUnrelated) * hookNanosecondsPerCheck / 1000 }
        public var hookMicroseconds: Double { Double(hookChecks) * hookNanosecondsPerCheck / 1000 }
        public var lostPages: Int { transmit.lostPages }
        public var problem: String? {
            if let companionError { return companionError }
            if let p = transmit.problem(judged: .plain) { return "transmit: \(p)" }
            if !block.passed { return "block: \(block.firstProblem ?? "\(block.corruptBytes) corrupt, \(block.dmaFaults) faults, \(block.requests) requests")" }
            if !slab.passed { return "slab: \(slab.firstProblem ?? "\(slab.corruptBytes) corrupt, \(slab.dmaFaults) faults, \(slab.objectsLost) objects lost, \(slab.objects) objects")" }
            if chunksHeldAtEnd != 0 || livePagesAtEnd != 0 {
                return "the pre-decrypted allocator still holds \(chunksHeldAtEnd) chunks, \(livePagesAtEnd) pages after teardown"
            }
            return nil
        }
        public var passed: Bool { problem == nil }
    }

    /// Refuses a platform without encrypted memory: the run's point is the
    /// pre-decrypted allocator, whose shared pages exist only in a confidential guest.
    public static func check(_ configuration: ExperimentConfiguration) throws(ParameterError) {
        if configuration.platform.iommu != nil {
            throw .invalid(parameter: "platform", reason: "txsim shared runs on a confidential guest (coco) only: its pre-decrypted "
                           + "buffers are memory converted to shared, and no memory is encrypted on --platform \(configuration.platform.name)")
        }
    }

    /// Runs the three users on one guest booted for `kind` (the TX design,
    /// through the same `Experiment.prepare` every run uses), the block and
    /// slab users' buffers from `buffers`.
    public static func run(_ kind: any TransmitDesignKind, buffers: Buffers, workload: Workload,
                           configuration: ExperimentConfiguration = .init()) throws -> Result {
        try workload.validate()
        try check(configuration)
        let (guest, nic, design) = try Experiment.prepare(kind, workload: workload.transmit, configuration: configuration)
        let disk = try guest.devices.add(name: "blk0")
        let slabDevice = try guest.devices.add(name: "slab0")
        let simulation = try TransmitSimulation(guest: guest, design: design, device: nic, workload: workload.transmit)
        let slabCache: SlabCache = buffers == .predecrypted ? SlabCache(allocator: guest.decrypted) : SlabCache(general: guest.allocator)
        let blockResult = Lock(BlockSimulation.Result(source: buffers))
        let slabResult = Lock(SlabResult())
        let error = Lock<String?>(nil)
        var b = workload.block
        b.durationSeconds = workload.transmit.durationSeconds
        let blockWorkload = b
        let slabWorkload = workload.slab
        let transmit = try simulation.run(alongside: [
            { deadline in
                do {
                    let r = try BlockSimulation.run(source: buffers, workload: blockWorkload, guest: guest, device: disk, until: deadline)
                    blockResult.withLock { $0 = r }
                } catch let e {
                    error.withLock { $0 = $0 ?? "block: \(e)" }
                }
            },
            { deadline in
                let r = runSlabUsers(slabCache, workload: slabWorkload, guest: guest, device: slabDevice, until: deadline)
                slabResult.withLock { $0 = r }
            },
        ])
        var result = Result(buffers: buffers, transmit: transmit, block: blockResult.withLock { $0 }, slab: slabResult.withLock { $0 })
        result.companionError = error.withLock { $0 }
        let d = guest.decrypted.statistics
        result.chunksConverted = d.chunksConverted
        result.peakChunksHeld = d.peakChunksHeld
        result.peakLivePages = d.peakLivePages
        result.chunksHeldAtEnd = d.chunksHeld
        result.livePagesAtEnd = d.livePages
        result.allocatorAllocations = d.allocations.reduce(0, +)
        result.chunkBytes = PageGeometry.bytes(order: guest.decrypted.configuration.chunkOrder)
        if guest.freePath == .swiotlbHook {
            result.hookInstalled = true
            result.hookChecks = guest.allocator.statistics.hookChecks
            // Every general free of the block device and of the slab users'
            // cache went through `GeneralAllocator.freePages`, whose hook runs first.
            result.hookChecksUnrelated = buffers == .general ? result.block.frees + result.slab.pagesReturned : 0
            result.hookNanosecondsPerCheck = FreePathHookCost.nanosecondsPerCheck(guest)
        }
        return result
    }

    /// The slab users: until `deadline`, a batch of objects of the sizes in
    /// turn, each filled with known bytes, mapped (a pre-decrypted object by
    /// its DMA address; a `kmalloc` one through the DMA API, which bounces),
    /// read and checked by `device`, unmapped, freed. Then the cache is shrunk:
    /// every page goes back to its allocator.
    static func runSlabUsers(_ cache: SlabCache, workload: SlabWorkload, guest: Guest, device: Device,
                             until deadline: UInt64) -> SlabResult {
        var result = SlabResult()
        var objects: [SlabCache.Object] = []
        var mapped: [(address: DMAAddress, size: Int, throughDMAAPI: Bool, n: Int)] = []
        objects.reserveCapacity(workload.batch)
        mapped.reserveCapacity(workload.batch)
        let start = monotonicNanoseconds()
        var n = 0
        func fail(_ what: String) { if result.firstProblem == nil { result.firstProblem = what } }
        // At least one batch, however late a loaded machine runs this thread.
        repeat {
            for _ in 0..<workload.batch {
                let size = workload.objectSizes[n % workload.objectSizes.count]
                let object: SlabCache.Object
                do { object = try cache.allocate(size: size) } catch { fail("slab allocation of \(size) bytes: \(error)"); break }
                objects.append(object)
                pattern(n).fill(object.bytes, count: size, streamOffset: 0)
                do {
                    if cache.isPreDecrypted {
                        guard device.canAddress(object.dmaAddress, size: size) else {
                            throw DMAError.addressNotReachable(device: device.name, address: object.dmaAddress, size: size)
                        }
                        mapped.append((object.dmaAddress, size, false, n))
                    } else {
                        let m = try guest.dma.map(object.page, offset: object.bytes - object.page.bytes, size: size,
                                                  direction: .toDevice, device: device)
                        if m.kind == .bounced { result.bytesBounced += size }
                        mapped.append((m.address, size, true, n))
                    }
                } catch {
                    fail("slab object map: \(error)")
                }
                n += 1
            }
            for m in mapped {
                switch DeviceAccess.resolve(m.address, length: m.size, memory: guest.memory, device: device) {
                case .failure(let fault):
                    result.dmaFaults += 1
                    fail(fault.description)
                case .success(let bytes):
                    let p = pattern(m.n)
                    if let bad = p.firstMismatch(in: bytes, count: m.size, streamOffset: 0) {
                        var corrupt = 0
                        for i in bad..<m.size where bytes.load(fromByteOffset: i, as: UInt8.self) != p.byte(at: UInt64(i)) { corrupt += 1 }
                        result.corruptBytes += corrupt
                        fail("slab object \(m.n): byte \(bad) differs as the device reads it (\(corrupt) bad bytes)")
                    }
                    result.verifiedBytes += m.size
                    result.bytes += m.size
                }
                if m.throughDMAAPI {   // a bounce slot, or IOMMU entries, to release
                    do { try guest.dma.unmapPage(m.address, size: m.size, direction: .toDevice, device: device) } catch { fail("slab object unmap: \(error)") }
                }
            }
            result.objects += mapped.count
            for object in objects { cache.free(object) }
            objects.removeAll(keepingCapacity: true)
            mapped.removeAll(keepingCapacity: true)
        } while monotonicNanoseconds() < deadline && result.firstProblem == nil
        result.seconds = Double(monotonicNanoseconds() - start) / 1e9
        result.objectsLost = cache.shrink()
        let s = cache.statistics
        result.peakPages = s.peakPages
        // Pages the cache gave back while it ran and at its shrink: each a
        // free to its allocator.
        result.pagesReturned = s.pagesReturned
        return result
    }

    static func pattern(_ n: Int) -> PayloadPattern { PayloadPattern(flow: 0x51ab_0000 + n % 4096) }
}
