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
    public var kind: any PageOwnerKind { PageOwnerRegistry.shared.kind(id) }

    /// The kind's name ("general-allocator", "page-pool", a provider's own).
    public var description: String { kind.name }

    /// Registers a new owner kind and returns the owner its pages carry.
    /// Register once per kind (a `static let`), not per instance: at most 256
    /// kinds exist, the built-in ones included, and a registration is never
    /// undone (a page may outlive whatever handed it out).
    public static func register(_ kind: any PageOwnerKind) -> PageOwner {
        PageOwnerRegistry.shared.register(kind)
    }

    /// Every registered owner, the built-in ones first.
    public static var registered: [PageOwner] { PageOwnerRegistry.shared.owners }
}

/// What an owner of pages does with them: the operations `Guest.freePage`,
/// `Guest.lostPages()` and the census dispatch through, instead of a closed
/// switch over built-in owners.
public protocol PageOwnerKind: AnyObject, Sendable {
    /// A name for diagnostics and reports.
    var name: String { get }

    /// Whether pages in this state are held by someone: they count in
    /// `Guest.lostPages()` until they come home. Free pages and swiotlb slots
    /// (accounted for by swiotlb's own counters) are not.
    var holdsPages: Bool { get }

    /// `__free_pages` for a run of this owner whose last reference is gone
    /// (`Guest.freePage`, `Guest.putPage`): gives it back to whatever handed it
    /// out. A kind whose pages must never reach the free path traps here with
    /// the diagnosis (`PageOwnerKinds.misuse`).
    func freePage(_ head: Page, guest: Guest)
}

extension PageOwnerKind {
    public var holdsPages: Bool { true }
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
    final class Trapping: PageOwnerKind {
        let name: String
        let holdsPages: Bool
        let diagnosis: String
        init(name: String, holdsPages: Bool, diagnosis: String) {
            self.name = name
            self.holdsPages = holdsPages
            self.diagnosis = diagnosis
        }
        func freePage(_ head: Page, guest: Guest) { PageOwnerKinds.misuse(head, diagnosis) }
    }

    final class GeneralAllocatorPages: PageOwnerKind {
        let name: String
        init(name: String) { self.name = name }
        func freePage(_ head: Page, guest: Guest) { guest.allocator.freePages(head) }
    }

    /// Zero-copy runs go through the page allocator's free path, where only the
    /// seed patch's hook (`Guest.FreePath.swiotlbHook`) takes them; without it
    /// the general allocator diagnoses the foreign page.
    final class SWIOTLBZeroCopy: PageOwnerKind {
        let name = "swiotlb-zerocopy"
        func freePage(_ head: Page, guest: Guest) { guest.allocator.freePages(head) }
    }

    final class DecryptedAllocatorPages: PageOwnerKind {
        let name = "decrypted-allocator"
        func freePage(_ head: Page, guest: Guest) { guest.decrypted.free(head) }
    }
}

/// The table behind `PageOwner`: 256 entries written once each under a lock
/// and never changed, read without one. A page carries an owner id only after
/// its registration returned, and the page's hand-off orders that write before
/// any reader of the id.
final class PageOwnerRegistry: @unchecked Sendable {
    static let shared = PageOwnerRegistry()

    /// Unowned entries (`kinds` keeps them alive): a lookup costs no ARC.
    struct Entry {
        unowned(unsafe) let kind: any PageOwnerKind
    }
    private let entries: UnsafeMutablePointer<Entry>
    private let count = Atomic<Int>(0)
    private let lock = Lock([any PageOwnerKind]())

    private init() {
        entries = .allocate(capacity: 256)
        for kind: any PageOwnerKind in [
            PageOwnerKinds.Trapping(name: "free", holdsPages: false,
                                    diagnosis: "freeing a page that is not allocated (double free?)"),
            PageOwnerKinds.GeneralAllocatorPages(name: "general-allocator"),
            PageOwnerKinds.Trapping(name: "swiotlb-slots", holdsPages: false,
                                    diagnosis: "freeing a swiotlb bounce page that is not allocated (swiotlb slots are unmapped, not freed)"),
            PageOwnerKinds.SWIOTLBZeroCopy(),
            PageOwnerKinds.Trapping(name: "page-pool", holdsPages: true,
                                    diagnosis: "a page_pool page reached the page allocator's free path (a frame holding it was not marked pp_recycle)"),
            PageOwnerKinds.DecryptedAllocatorPages(), PageOwnerKinds.GeneralAllocatorPages(name: "user"),
        ] { _ = register(kind) }
    }

    func register(_ kind: any PageOwnerKind) -> PageOwner {
        lock.withLock { kinds in
            let id = kinds.count
            precondition(id < 256, "page owner kinds exhausted: 256 registered (register a kind once, not per instance)")
            kinds.append(kind)
            (entries + id).initialize(to: Entry(kind: kind))
            count.store(id + 1, ordering: .releasing)
            return PageOwner(id: UInt8(id))
        }
    }

    @inline(__always)
    func kind(_ id: UInt8) -> any PageOwnerKind {
        entries[checked(id)].kind
    }

    /// `kind(id).freePage(head, guest:)`, called on the unowned entry in place
    /// (a returned kind would be retained and released around the call).
    @inline(__always)
    func freePage(_ head: Page, owner id: UInt8, guest: Guest) {
        entries[checked(id)].kind.freePage(head, guest: guest)
    }

    /// `kind(id).holdsPages`, read in place.
    @inline(__always)
    func holdsPages(_ id: UInt8) -> Bool {
        entries[checked(id)].kind.holdsPages
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
