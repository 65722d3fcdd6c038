import Synchronization
import Logging

/// `PP_FLAG_*`: what the pool does for its pages besides caching them.
///
/// The raw value is kept as given so that `PagePoolParameters.validate()` can
/// reject bits it does not know, as `page_pool_init` does (`-EINVAL`).
public struct PagePoolFlags: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt32

    @inlinable
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `PP_FLAG_DMA_MAP`: pages are DMA-mapped when they enter the pool and
    /// unmapped when they leave it; the address is stored in the page descriptor.
    /// (The mapping itself is the memory provider's job.)
    public static let dmaMap = PagePoolFlags(rawValue: 1 << 0)

    /// `PP_FLAG_DMA_SYNC_DEV`: sync `maxLength` bytes at `offset` for the device
    /// whenever a page is recycled (and when it is first mapped). Needs `dmaMap`
    /// and a non-zero `maxLength`.
    public static let dmaSyncForDevice = PagePoolFlags(rawValue: 1 << 1)

    /// `PP_FLAG_SYSTEM_POOL`: one of the per-CPU system page pools. The kernel
    /// then counts its recycle statistics in one shared per-CPU object; the
    /// model accepts the flag and keeps counting per pool (a departure: see
    /// Design/page-pool.md).
    public static let systemPool = PagePoolFlags(rawValue: 1 << 2)

    /// `PP_FLAG_ALLOW_UNREADABLE_NETMEM`: the pool may be backed by the rx
    /// queue's memory provider (devmem, io_uring zcrx) whose memory the CPU
    /// cannot read. The model accepts the flag; its memory providers are given
    /// to the pool directly, so the flag changes nothing here.
    public static let allowUnreadableNetmem = PagePoolFlags(rawValue: 1 << 3)

    /// `PP_FLAG_ALL`: every flag the kernel knows.
    public static let kernelFlags: PagePoolFlags = [.dmaMap, .dmaSyncForDevice, .systemPool, .allowUnreadableNetmem]

    /// **Not a kernel flag.** Marks a transmit pool, which may map its pages
    /// `DMA_TO_DEVICE`. The kernel accepts only `DMA_FROM_DEVICE` and
    /// `DMA_BIDIRECTIONAL` with `PP_FLAG_DMA_MAP` (XDP_TX uses bidirectional);
    /// a page_pool for TX, as the review of the frag-refill patch proposes,
    /// needs this rule relaxed, so the relaxation is explicit and opt-in here.
    public static let transmit = PagePoolFlags(rawValue: 1 << 16)

    /// Every flag this model knows (`PP_FLAG_ALL` plus `transmit`).
    public static let all: PagePoolFlags = [.dmaMap, .dmaSyncForDevice, .systemPool, .allowUnreadableNetmem, .transmit]

    public var description: String {
        var names: [String] = []
        if contains(.dmaMap) { names.append("PP_FLAG_DMA_MAP") }
        if contains(.dmaSyncForDevice) { names.append("PP_FLAG_DMA_SYNC_DEV") }
        if contains(.systemPool) { names.append("PP_FLAG_SYSTEM_POOL") }
        if contains(.allowUnreadableNetmem) { names.append("PP_FLAG_ALLOW_UNREADABLE_NETMEM") }
        if contains(.transmit) { names.append("transmit") }
        let unknown = rawValue & ~PagePoolFlags.all.rawValue
        if unknown != 0 { names.append("unknown(0x" + String(unknown, radix: 16) + ")") }
        return "[" + names.joined(separator: ", ") + "]"
    }
}

/// `struct page_pool_params`: how a pool is created.
public struct PagePoolParameters: Sendable {
    /// The kernel's ring-size default when `poolSize` is 0.
    public static let defaultRingSize = 1024
    /// The kernel's cap on the ring size (`min(pool_size, 16384)`).
    public static let maximumRingSize = 16384

    /// Page order of every page the pool hands out (`order`), 0...`PageGeometry.maxPageOrder`
    /// (`MAX_PAGE_ORDER`, as `page_pool_init` checks). Whether a provider can
    /// supply that order is the provider's to say when the pool attaches.
    public var order: Int
    /// Requested ring size (`pool_size`): 0 means the default (1024).
    public var poolSize: Int
    /// `flags`.
    public var flags: PagePoolFlags
    /// `dma_dir`: the direction pages are mapped in.
    public var dmaDirection: DMADirection
    /// `max_len`: bytes synced for the device on recycle (with `dmaSyncForDevice`).
    public var maxLength: Int
    /// `offset`: where in the page the device starts writing (or reading).
    public var offset: Int
    /// `dev`: the device pages are mapped for (required with `dmaMap`).
    public var device: Device?
    /// `NUMA_NO_NODE`.
    public static let noNode = -1

    /// `nid`: the NUMA node the pool prefers; `noNode` (-1) means the owning
    /// context's node (`numa_mem_id()`, node 0 here: the model runs every
    /// context on node 0). A refill from the ring releases a page of another
    /// node (`alloc.waive`) and takes the slow path.
    public var node: Int
    /// `cpuid`: the CPU whose softirq owns the pool (-1: none), for reports.
    public var cpu: Int
    /// `queue_idx`: the queue the pool serves.
    public var queueIndex: Int
    /// A name for diagnostics (the kernel reports pools by id and netdev).
    public var name: String
    /// The architecture's constants: fragment alignment
    /// (`dma_get_cache_alignment()`) and the ring's consumer batch
    /// (`SMP_CACHE_BYTES`). Default x86-64.
    public var architecture: Architecture
    /// `DEFER_TIME`: how often a destroyed pool with pages in flight retries its
    /// release. Kernel: 1 s.
    public var releaseRetryInterval: Duration
    /// `DEFER_WARN_INTERVAL`: how often a stalled shutdown is reported. Kernel: 60 s.
    public var stallWarningInterval: Duration
    /// Where stall warnings go.
    public var logger: Logger
    /// The kernel is built with `CONFIG_PREEMPT_RT`: `page_pool_napi_local`
    /// is false, so a put that does not itself pass `allowDirect: true` is
    /// never widened to direct recycling, even on the owning thread: it goes
    /// through the ring. An explicit `recycleDirect` / `allowDirect: true`
    /// still recycles into the cache. Default false.
    public var preemptRT: Bool = false

    public init(
        order: Int = 0,
        poolSize: Int = 0,
        flags: PagePoolFlags = [],
        dmaDirection: DMADirection = .fromDevice,
        maxLength: Int = 0,
        offset: Int = 0,
        device: Device? = nil,
        node: Int = PagePoolParameters.noNode,
        cpu: Int = -1,
        queueIndex: Int = 0,
        name: String = "page_pool",
        architecture: Architecture = .x86_64,
        releaseRetryInterval: Duration = .seconds(1),
        stallWarningInterval: Duration = .seconds(60),
        logger: Logger = Logger(label: "dma-pools.page-pool")
    ) {
        self.order = order
        self.poolSize = poolSize
        self.flags = flags
        self.dmaDirection = dmaDirection
        self.maxLength = maxLength
        self.offset = offset
        self.device = device
        self.node = node
        self.cpu = cpu
        self.queueIndex = queueIndex
        self.name = name
        self.architecture = architecture
        self.releaseRetryInterval = releaseRetryInterval
        self.stallWarningInterval = stallWarningInterval
        self.logger = logger
    }

    /// The recycle ring's capacity: 1024 when `poolSize` is 0, else
    /// `min(poolSize, 16384)` (`page_pool_init`).
    public var ringSize: Int {
        poolSize == 0 ? Self.defaultRingSize : min(poolSize, Self.maximumRingSize)
    }

    /// Bytes in one of the pool's pages (`PAGE_SIZE << order`).
    public var pageBytes: Int { PageGeometry.bytes(order: order) }

    /// Checks the parameters with `page_pool_init`'s rules, plus the model's own
    /// range checks (marked below). Every error names the parameter at fault.
    ///
    /// Where the kernel and the model differ on purpose: `PP_FLAG_DMA_MAP`
    /// without a device is refused here (the kernel accepts it and would crash
    /// at the first mapping), and `.transmit` relaxes the kernel's direction rule.
    public func validate() throws(PagePoolError) {
        let unknown = flags.rawValue & ~PagePoolFlags.all.rawValue
        guard unknown == 0 else {
            throw .invalidParameter("flags", "unknown flag bits 0x\(String(unknown, radix: 16)) (known: \(PagePoolFlags.all))")
        }
        guard (0...PageGeometry.maxPageOrder).contains(order) else {
            throw .invalidParameter("order", "\(order) is outside 0...\(PageGeometry.maxPageOrder) (MAX_PAGE_ORDER)")
        }
        // Model: the kernel's pool_size is unsigned.
        guard poolSize >= 0 else {
            throw .invalidParameter("poolSize", "\(poolSize) is negative")
        }
        if flags.contains(.dmaMap) {
            if flags.contains(.transmit) {
                guard dmaDirection != .fromDevice else {
                    throw .invalidParameter("dmaDirection", "a transmit pool maps \(DMADirection.toDevice) or \(DMADirection.bidirectional), not \(dmaDirection)")
                }
            } else {
                guard dmaDirection == .fromDevice || dmaDirection == .bidirectional else {
                    throw .invalidParameter("dmaDirection", "PP_FLAG_DMA_MAP needs \(DMADirection.fromDevice) or \(DMADirection.bidirectional), not \(dmaDirection); a transmit pool must say so with the .transmit flag")
                }
            }
            // Model: the kernel accepts a mapping pool without a device.
            guard device != nil else {
                throw .invalidParameter("device", "PP_FLAG_DMA_MAP needs a device to map for")
            }
        } else if flags.contains(.transmit) {
            throw .invalidParameter("flags", ".transmit only relaxes the direction rule of PP_FLAG_DMA_MAP, which is not set")
        }
        // Model: max_len and offset are unsigned in the kernel.
        guard maxLength >= 0 else {
            throw .invalidParameter("maxLength", "\(maxLength) is negative")
        }
        guard offset >= 0 else {
            throw .invalidParameter("offset", "\(offset) is negative")
        }
        if flags.contains(.dmaSyncForDevice) {
            guard flags.contains(.dmaMap) else {
                throw .invalidParameter("flags", "PP_FLAG_DMA_SYNC_DEV needs PP_FLAG_DMA_MAP (only mapped pages can be synced)")
            }
            guard maxLength > 0 else {
                throw .invalidParameter("maxLength", "PP_FLAG_DMA_SYNC_DEV needs max_len > 0, got \(maxLength)")
            }
            // Only a syncing pool ever touches offset + max_len bytes.
            guard offset + maxLength <= pageBytes else {
                throw .invalidParameter("offset", "offset \(offset) + maxLength \(maxLength) exceeds the \(pageBytes)-byte order-\(order) page that PP_FLAG_DMA_SYNC_DEV syncs")
            }
        }
        // Model: the kernel's nid is an int that only NUMA_NO_NODE may make negative.
        guard node >= PagePoolParameters.noNode else {
            throw .invalidParameter("node", "\(node) must be -1 (NUMA_NO_NODE) or a node number")
        }
        // Model: the rest are the model's own fields.
        guard cpu >= -1 else {
            throw .invalidParameter("cpu", "\(cpu) must be -1 (none) or a CPU number")
        }
        guard queueIndex >= 0 else {
            throw .invalidParameter("queueIndex", "\(queueIndex) is negative")
        }
        guard !name.isEmpty else {
            throw .invalidParameter("name", "must not be empty")
        }
        guard architecture.isValid else {
            throw .invalidParameter("architecture", "\(architecture): both sizes must be powers of two")
        }
        guard releaseRetryInterval > .zero else {
            throw .invalidParameter("releaseRetryInterval", "\(releaseRetryInterval) must be positive")
        }
        guard stallWarningInterval > .zero else {
            throw .invalidParameter("stallWarningInterval", "\(stallWarningInterval) must be positive")
        }
    }
}

/// Errors from page_pool. Every case names what it is about.
public enum PagePoolError: Error, Hashable, CustomStringConvertible {
    /// A creation parameter breaks a rule: `(parameter, why)`.
    case invalidParameter(String, String)
    /// The memory provider has no memory left for an order-`order` page;
    /// `reason` says which limit was hit (empty when the provider does not say).
    case providerExhausted(provider: String, order: Int, reason: String = "")
    /// The memory provider failed for another reason.
    case providerFailed(provider: String, reason: String)
    /// The pool was destroyed: it hands out nothing more.
    case poolDestroyed(pool: String)
    /// A direct (lockless) recycle from a thread that does not own the pool.
    case notOwner(pool: String)
    /// The page carries another pool's signature, or none.
    case foreignPage(page: String, pool: String, owner: String)
    /// The page is already back in the pool (put twice).
    case doublePut(page: String, pool: String)
    /// A fragment larger than the pool's page (or of negative size).
    case fragmentTooLarge(size: Int, pageBytes: Int)

    public var description: String {
        switch self {
        case .invalidParameter(let parameter, let why):
            "invalid page_pool parameter \(parameter): \(why)"
        case .providerExhausted(let provider, let order, let reason):
            "memory provider \(provider) has no order-\(order) page left" + (reason.isEmpty ? "" : ": " + reason)
        case .providerFailed(let provider, let reason):
            "memory provider \(provider) failed: \(reason)"
        case .poolDestroyed(let pool):
            "\(pool) has been destroyed"
        case .notOwner(let pool):
            "direct recycling into \(pool) from a thread that does not own it"
        case .foreignPage(let page, let pool, let owner):
            "\(page) put into \(pool) but it belongs to \(owner)"
        case .doublePut(let page, let pool):
            "\(page) put into \(pool) twice (it is already back in the pool)"
        case .fragmentTooLarge(let size, let pageBytes):
            "fragment size \(size) is outside 0...\(pageBytes) (the pool's page)"
        }
    }
}
