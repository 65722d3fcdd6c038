import Synchronization

/// One CPU's free runs of each order (`struct per_cpu_pages`), with the
/// counters of what moved on and off it.
struct CPURuns: ~Copyable {
    /// What moved on and off a list: runs handed out from it, freed onto it,
    /// taken onto it from the buddy lists, and given back to them.
    enum Tally: Int, CaseIterable { case handedOut, returned, refilled, flushed }

    /// Runs per order, `capacity` slots each; `counts[order]` in use.
    let runs: UnsafeMutablePointer<UnsafeMutablePointer<PageDescriptor>>
    let counts: UnsafeMutablePointer<Int>
    /// Each `Tally` per order.
    private let tallies: UnsafeMutablePointer<Int>
    let capacity: Int
    private static let orders = DecryptedAllocator.orders.count

    init(capacity: Int) {
        self.capacity = capacity
        // One spare slot per order: a free first lands on the list, then a
        // full list gives half back.
        runs = .allocate(capacity: Self.orders * (capacity + 1))
        counts = .allocate(capacity: Self.orders)
        counts.initialize(repeating: 0, count: Self.orders)
        tallies = .allocate(capacity: Tally.allCases.count * Self.orders)
        tallies.initialize(repeating: 0, count: Tally.allCases.count * Self.orders)
    }

    deinit {
        runs.deallocate()
        counts.deallocate()
        tallies.deallocate()
    }

    /// Adds `amount` to `tally` for `order`.
    mutating func count(_ tally: Tally, order: Int, by amount: Int = 1) {
        tallies[tally.rawValue * Self.orders + order] += amount
    }

    func tally(_ tally: Tally, order: Int) -> Int { tallies[tally.rawValue * Self.orders + order] }

    mutating func push(_ run: UnsafeMutablePointer<PageDescriptor>, order: Int) {
        precondition(counts[order] <= capacity, "a CPU's list of order \(order) overflowed")
        runs[order * (capacity + 1) + counts[order]] = run
        counts[order] += 1
    }

    mutating func pop(order: Int) -> UnsafeMutablePointer<PageDescriptor>? {
        guard counts[order] > 0 else { return nil }
        counts[order] -= 1
        return runs[order * (capacity + 1) + counts[order]]
    }

    /// Removes the `n` runs of `order` freed longest ago (the list's bottom),
    /// as the kernel gives back its coldest pages; the rest move down.
    /// Returns how many it removed.
    mutating func removeOldest(_ n: Int, order: Int, into body: (UnsafeMutablePointer<PageDescriptor>) -> Void) -> Int {
        let base = runs + order * (capacity + 1)
        let taken = min(n, counts[order])
        for i in 0..<taken { body(base[i]) }
        base.update(from: base + taken, count: counts[order] - taken)
        counts[order] -= taken
        return taken
    }
}

extension DecryptedAllocator {
    /// How many runs a list takes from, or gives back to, the buddy lists at once (`pcp->batch`).
    private var batch: Int { max(1, configuration.perCPURuns / 2) }

    /// A run from the calling CPU's list, refilled with `batch` runs from the
    /// buddy lists under one lock when empty; nil when the buddy lists have
    /// none either (the caller grows). The run's state is handed out.
    func takeFromCPUList(order: Int) -> Page? {
        perCPU.withLocal { local -> Page? in
            if local.counts[order] == 0 {
                let want = batch
                state.withLock { counters in
                    for _ in 0..<want {
                        guard let run = takeBlock(order: order, counters: &counters) else { break }
                        blocks[run.descriptor - descriptors].store(BlockState.onCPUList(order: order), ordering: .relaxed)
                        local.push(run.descriptor, order: order)
                        local.count(.refilled, order: order)
                    }
                }
            }
            guard let run = local.pop(order: order) else { return nil }
            blocks[run - descriptors].store(BlockState.allocated(order: order), ordering: .relaxed)
            local.count(.handedOut, order: order)
            return Page(descriptor: run)
        }
    }

    /// Frees a handed-out run onto the calling CPU's list; a full list gives
    /// `batch` runs back to the buddy lists. Traps on a run that is not
    /// handed out.
    func putOnCPUList(_ page: Page, index: Int) {
        let chunks = perCPU.withLocal { local -> [UnsafeMutablePointer<PageDescriptor>] in
            let block = blocks[index].load(ordering: .relaxed)
            guard BlockState.isAllocated(block) else { invalidFree(page, reason: Self.notHandedOut(block)) }
            let order = BlockState.order(block)
            // Two frees of one run racing on two CPUs: only one moves it.
            guard blocks[index].compareExchange(expected: block, desired: BlockState.onCPUList(order: order),
                                                ordering: .relaxed).exchanged else {
                invalidFree(page, reason: "double free (freed on two CPUs at once)")
            }
            memory.destroyCompoundRun(page, owner: .decryptedAllocator)
            page.storeReferenceCount(0)
            local.push(page.descriptor, order: order)
            local.count(.returned, order: order)
            guard local.counts[order] > configuration.perCPURuns else { return [] }
            return giveBack(&local, order: order, runs: batch)
        }
        for chunk in chunks { release(chunk: Page(descriptor: chunk)) }
    }

    /// Moves up to `runs` runs of `order` from `local` (the coldest first) to
    /// the buddy lists.
    /// Returns whole chunks to convert back (outside every lock).
    private func giveBack(_ local: inout CPURuns, order: Int, runs: Int) -> [UnsafeMutablePointer<PageDescriptor>] {
        var chunks: [UnsafeMutablePointer<PageDescriptor>] = []
        let moved = state.withLock { counters in
            local.removeOldest(runs, order: order) { run in
                counters.frees[order] += 1
                counters.livePages -= 1 << order
                if let chunk = putBlock(index: run - descriptors, order: order, counters: &counters) { chunks.append(chunk) }
            }
        }
        local.count(.flushed, order: order, by: moved)
        return chunks
    }

    /// Gives every CPU's runs back to the buddy lists (`drain_all_pages`), so
    /// that whole chunks can be converted back. Returns how many chunks went
    /// back to the general allocator on the way (beyond the spares).
    @discardableResult
    func drainCPULists() -> Int {
        guard configuration.perCPURuns > 0 else { return 0 }
        var released = 0
        for cpu in 0..<perCPU.count {
            let chunks = perCPU.withStripe(cpu) { local -> [UnsafeMutablePointer<PageDescriptor>] in
                var chunks: [UnsafeMutablePointer<PageDescriptor>] = []
                for order in Self.orders { chunks += giveBack(&local, order: order, runs: local.counts[order]) }
                return chunks
            }
            for chunk in chunks where release(chunk: Page(descriptor: chunk)) { released += 1 }
        }
        return released
    }

    /// Per order, what the CPU lists added to the buddy-level counts: runs
    /// handed out and freed through them, less those that only passed
    /// through them to or from the buddy lists, and the pages they hold.
    func cpuListAdjustments() -> (allocations: [Int], frees: [Int], pagesHeld: Int) {
        var allocations = [Int](repeating: 0, count: Self.orders.count), frees = allocations
        var pages = 0
        for cpu in 0..<perCPU.count {
            perCPU.withStripe(cpu) { local in
                for order in Self.orders {
                    allocations[order] += local.tally(.handedOut, order: order) - local.tally(.refilled, order: order)
                    frees[order] += local.tally(.returned, order: order) - local.tally(.flushed, order: order)
                    pages += local.counts[order] << order
                }
            }
        }
        return (allocations, frees, pages)
    }
}
