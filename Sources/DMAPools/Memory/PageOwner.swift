import Synchronization

/// Who holds a page right now: the analog of `page_type` plus the owner fields of
/// `struct page`. Every page of guest memory is in exactly one owner state at
/// every moment, which is what lets the framework account for every page.
///
/// An owner is a small integer in the page's descriptor naming a registered
/// `PageOwnerKind`: the built-in kinds below, and any kind a user's memory
/// provider or allocator registers with `PageOwner.register(_:)`. Comparing
/// owners is comparing integers; `Guest.freePage`, `Guest.lostPages()` and the
/// census dispatch through the kind, so a user's pages are freed back to their
/// owner, counted, and misuse of them is diagnosed by it.
@frozen
public struct PageOwner: Hashable, Sendable, CustomStringConvertible {
    /// The registry index (0...255).
    public let id: UInt8

    @inlinable
    init(id: UInt8) { self.id = id }

    /// Not handed out: inside the general allocator's reserve, or never carved.
    @inlinable public static var free: PageOwner { PageOwner(id: 0) }
    /// Handed out by the general allocator (private memory, jemalloc).
    @inlinable public static var generalAllocator: PageOwner { PageOwner(id: 1) }
    /// Part of the swiotlb bounce pool, managed slot by slot.
    @inlinable public static var swiotlbSlots: PageOwner { PageOwner(id: 2) }
    /// A naturally aligned run taken out of swiotlb for long-lived use (the seed
    /// patch's `PGTY_zcswiotlb`): its DMA address is its own.
    @inlinable public static var swiotlbZeroCopy: PageOwner { PageOwner(id: 3) }
    /// Owned by a page_pool (`pp_magic` carries the pool signature).
    @inlinable public static var pagePool: PageOwner { PageOwner(id: 4) }
    /// Carved from a pre-decrypted (shared) chunk by the decrypted allocator.
    @inlinable public static var decryptedAllocator: PageOwner { PageOwner(id: 5) }
    /// A user page pinned by the model (MSG_ZEROCOPY sources).
    @inlinable public static var user: PageOwner { PageOwner(id: 6) }

    /// The kind registered under this owner.
    public var kind: PageOwnerKind { PageOwnerRegistry.shared.kind(id) }

    /// The kind's name ("general-allocator", "page-pool", a provider's own).
    public var description: String { kind.name }

    /// Registers a new owner kind and returns the owner its pages carry.
    /// Register once per kind (a `static let`), not per instance: at most 256
    /// kinds exist, the built-in ones included, and a registration is never
    /// undone (a page may outlive whatever handed it out).
    public static func register(_ kind: PageOwnerKind) -> PageOwner {
        PageOwnerRegistry.shared.register(kind)
    }

    /// Every registered owner, the built-in ones first.
    public static var registered: [PageOwner] { PageOwnerRegistry.shared.owners }
}

/// What an owner of pages does with them: the operations `Guest.freePage`,
/// `Guest.lostPages()` and the census dispatch through, instead of a closed
/// switch over built-in owners. Subclass it (once per kind of owner, not per
/// instance) and register the instance with `PageOwner.register(_:)`.
///
/// A class rather than a protocol so that a dispatch is a vtable call on an
/// unretained reference: no ARC on the free path.
open class PageOwnerKind: @unchecked Sendable {
    /// A name for diagnostics and reports.
    public let name: String

    /// Whether pages in this state are held by someone: they count in
    /// `Guest.lostPages()` until they come home. Free pages and swiotlb slots
    /// (accounted for by swiotlb's own counters) are not.
    public let holdsPages: Bool

    public init(name: String, holdsPages: Bool = true) {
        self.name = name
        self.holdsPages = holdsPages
    }

    /// `__free_pages` for a run of this owner whose last reference is gone
    /// (`Guest.freePage`, `Guest.putPage`): gives it back to whatever handed it
    /// out. The default traps: pages of this owner must not reach the free path.
    open func freePage(_ head: Page, guest: Guest) {
        PageOwnerKinds.misuse(head, "a \(name) page reached the page allocator's free path")
    }
}

/// The built-in owner kinds, and the trap they share.
public enum PageOwnerKinds {
    /// A page reached a free path that cannot take it: traps naming the page.
    @inline(never)
    public static func misuse(_ head: Page, _ what: String) -> Never {
        fatalError("\(what): \(head)")
    }

    /// An owner whose pages must never reach the free path: it traps there
    /// with its diagnosis.
    final class Trapping: PageOwnerKind, @unchecked Sendable {
        let diagnosis: String
        init(name: String, holdsPages: Bool, diagnosis: String) {
            self.diagnosis = diagnosis
            super.init(name: name, holdsPages: holdsPages)
        }
        override func freePage(_ head: Page, guest: Guest) { PageOwnerKinds.misuse(head, diagnosis) }
    }

    /// Runs of the general allocator, and pinned user pages, which it also
    /// hands out. Zero-copy swiotlb runs go through the same free path, where
    /// only the seed patch's hook (`Guest.FreePath.swiotlbHook`) takes them;
    /// without it the general allocator diagnoses the foreign page.
    final class GeneralAllocatorPages: PageOwnerKind, @unchecked Sendable {
        override func freePage(_ head: Page, guest: Guest) { guest.allocator.freePages(head) }
    }

    final class DecryptedAllocatorPages: PageOwnerKind, @unchecked Sendable {
        override func freePage(_ head: Page, guest: Guest) { guest.decrypted.free(head) }
    }
}

/// The table behind `PageOwner`: 256 entries written once each under a lock
/// and never changed, read without one. A page carries an owner id only after
/// its registration returned, and the page's hand-off orders that write before
/// any reader of the id.
final class PageOwnerRegistry: @unchecked Sendable {
    static let shared = PageOwnerRegistry()

    /// Unretained entries (`kinds` keeps them alive): a lookup costs no ARC.
    private let entries: UnsafeMutablePointer<Unmanaged<PageOwnerKind>>
    private let count = Atomic<Int>(0)
    private let lock = Lock([PageOwnerKind]())

    private init() {
        entries = .allocate(capacity: 256)
        for kind in [
            PageOwnerKinds.Trapping(name: "free", holdsPages: false,
                                    diagnosis: "freeing a page that is not allocated (double free?)"),
            PageOwnerKinds.GeneralAllocatorPages(name: "general-allocator"),
            PageOwnerKinds.Trapping(name: "swiotlb-slots", holdsPages: false,
                                    diagnosis: "freeing a swiotlb bounce page that is not allocated (swiotlb slots are unmapped, not freed)"),
            PageOwnerKinds.GeneralAllocatorPages(name: "swiotlb-zerocopy"),
            PageOwnerKinds.Trapping(name: "page-pool", holdsPages: true,
                                    diagnosis: "a page_pool page reached the page allocator's free path (a frame holding it was not marked pp_recycle)"),
            PageOwnerKinds.DecryptedAllocatorPages(name: "decrypted-allocator"),
            PageOwnerKinds.GeneralAllocatorPages(name: "user"),
        ] as [PageOwnerKind] { _ = register(kind) }
    }

    func register(_ kind: PageOwnerKind) -> PageOwner {
        lock.withLock { kinds in
            let id = kinds.count
            precondition(id < 256, "page owner kinds exhausted: 256 registered (register a kind once, not per instance)")
            kinds.append(kind)
            (entries + id).initialize(to: Unmanaged.passUnretained(kind))
            count.store(id + 1, ordering: .releasing)
            return PageOwner(id: UInt8(id))
        }
    }

    func kind(_ id: UInt8) -> PageOwnerKind {
        entries[checked(id)].takeUnretainedValue()
    }

    /// `kind(id).freePage(head, guest:)` on the unretained entry.
    @inline(__always)
    func freePage(_ head: Page, owner id: UInt8, guest: Guest) {
        entries[checked(id)]._withUnsafeGuaranteedRef { $0.freePage(head, guest: guest) }
    }

    /// `kind(id).holdsPages` on the unretained entry.
    @inline(__always)
    func holdsPages(_ id: UInt8) -> Bool {
        entries[checked(id)]._withUnsafeGuaranteedRef { $0.holdsPages }
    }

    @inline(__always)
    private func checked(_ id: UInt8) -> Int {
        precondition(Int(id) < count.load(ordering: .acquiring), "page owner \(id) was never registered")
        return Int(id)
    }

    var owners: [PageOwner] {
        (0..<count.load(ordering: .acquiring)).map { PageOwner(id: UInt8($0)) }
    }
}
