import Synchronization

/// How the transmit path's tasks are scheduled under `CONFIG_PREEMPT_RT`
/// (`--preempt-rt`): on RT the TX softirq runs in the context of preemptible
/// tasks, and `local_bh_disable` only pins a task to its CPU
/// (`migrate_disable`) without keeping the CPU's other tasks off it (the
/// model takes the BH lock, PREEMPT_RT's per-CPU softirq serialisation, as
/// dropped, the direction upstream took; with it held, BH sections on one
/// CPU would not interleave). So several tasks of one CPU can be inside
/// their transmit sections at once and share that CPU's per-CPU variables.
///
/// Preemption is a modelled event, not a spent cost: at each preemption
/// point of a transmit section (after `__set_current_tx_socket()`, and after
/// the DMA map, before the restore) the running task is preempted with
/// probability 1/`preemptEvery`, drawn from a generator seeded with
/// `seed` (and the queue's index), and the CPU switches to its next task with
/// work. Counted (`TransmitResult.preemptions`) and shown on its own line.
public struct RTScheduling: Sendable, Hashable, Codable {
    /// Tasks sharing one modelled CPU (`--rt-tasks-per-cpu`, default 4): a
    /// frame is transmitted by its socket's task, the socket's index among
    /// its sender's sockets (`flow / senders`) modulo this.
    public var tasksPerCPU: Int = 4
    /// One preemption per this many preemption points, on average
    /// (`--preempt-every`, default 8; 1: at every point).
    public var preemptEvery: Int = 8
    /// The preemption generator's seed (`--preempt-seed`, default 1).
    public var seed: UInt64 = 1
    /// Where the seed patch's `current_tx_socket` lives (`--tx-socket-pointer`):
    /// per CPU as the patch has it, or per task, the fix this scenario
    /// compares it with.
    public var pointer: TXSocketPointer = .perCPU

    public static let tasksPerCPURange = 1...64
    public static let preemptEveryRange = 1...1_000_000

    public init(tasksPerCPU: Int = 4, preemptEvery: Int = 8, seed: UInt64 = 1, pointer: TXSocketPointer = .perCPU) {
        self.tasksPerCPU = tasksPerCPU
        self.preemptEvery = preemptEvery
        self.seed = seed
        self.pointer = pointer
    }
}

/// Where `current_tx_socket` is kept.
public enum TXSocketPointer: String, Sendable, Hashable, Codable, CaseIterable {
    /// `DEFINE_PER_CPU`, as the seed patch has it: every task of a CPU shares it.
    case perCPU = "per-cpu"
    /// In the task (as `current->` fields are): a task preempted inside its
    /// transmit section finds its own pointer when it resumes, and no other
    /// task reads it. The fix, for comparison.
    case perTask = "per-task"
}

/// Where a task may be preempted: a seeded generator (the runs), or a
/// script of decisions (the tests' deterministic interleavings).
struct PreemptionSource: Sendable {
    private var state: UInt64
    private let every: UInt64
    private let script: [Bool]
    private var next = 0

    /// Preempts with probability 1/`every` at each point (splitmix64).
    init(every: Int, seed: UInt64) {
        precondition(every >= 1, "preempt every \(every) points")
        self.every = UInt64(every)
        self.state = seed
        self.script = []
    }

    /// Preempts where `script` says, in order; never once it is used up.
    init(script: [Bool]) {
        self.every = 0
        self.state = 0
        self.script = script
    }

    /// Whether the task at this preemption point is preempted.
    mutating func preempt() -> Bool {
        if every == 0 {
            guard next < script.count else { return false }
            next += 1
            return script[next - 1]
        }
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return z % every == 0
    }
}

/// A deterministic scheduler of one modelled CPU's tasks over the transmit
/// sections of one batch (the model interleaves tasks at preemption points
/// rather than running them as threads: the same batch and the same
/// preemption decisions give the same interleaving). Each frame's section is
/// `enter` (`__set_current_tx_socket(skb->sk)`), a preemption point, `body`
/// (map every fragment, post the descriptors), a preemption point, `exit`
/// (the restore). A preempted task resumes where it stopped when the CPU
/// comes back to it. Owned by the one thread that holds its queue's running
/// bit; allocates nothing per batch.
final class TransmitScheduler: @unchecked Sendable {
    let tasks: Int
    private let capacity: Int
    private var source: PreemptionSource
    /// Frames (batch slots) of each task, in order: `tasks * capacity`.
    private let slots: UnsafeMutablePointer<Int>
    private let counts: UnsafeMutablePointer<Int>
    private let cursors: UnsafeMutablePointer<Int>
    /// Per task: 0 between sections, 1 after `enter`, 2 after `body`.
    private let phases: UnsafeMutablePointer<UInt8>
    /// Per task: what `enter` returned, for its `exit`.
    private let saved: UnsafeMutablePointer<UInt64>
    /// Preemptions so far (read when the run is over).
    private(set) var preemptions = 0

    init(tasks: Int, capacity: Int, source: PreemptionSource) {
        precondition(tasks >= 1 && capacity >= 1, "a scheduler of \(tasks) tasks over batches of \(capacity)")
        self.tasks = tasks
        self.capacity = capacity
        self.source = source
        slots = .allocate(capacity: tasks * capacity)
        counts = .allocate(capacity: tasks)
        cursors = .allocate(capacity: tasks)
        phases = .allocate(capacity: tasks)
        saved = .allocate(capacity: tasks)
        counts.initialize(repeating: 0, count: tasks)
        cursors.initialize(repeating: 0, count: tasks)
        phases.initialize(repeating: 0, count: tasks)
        saved.initialize(repeating: 0, count: tasks)
        slots.initialize(repeating: 0, count: tasks * capacity)
    }

    deinit {
        slots.deallocate()
        counts.deallocate()
        cursors.deallocate()
        phases.deallocate()
        saved.deallocate()
    }

    /// Runs the sections of batch slots `0..<count`, slot `i` on task
    /// `task(i)`, interleaved at the preemption points. Every section runs
    /// `enter`, `body` and `exit` exactly once, in that order.
    func run(count: Int, task: (Int) -> Int, enter: (Int) -> UInt64, body: (Int) -> Void, exit: (Int, UInt64) -> Void) {
        precondition(count <= capacity, "a batch of \(count) frames over a scheduler for \(capacity)")
        for t in 0..<tasks { counts[t] = 0; cursors[t] = 0; phases[t] = 0 }
        for i in 0..<count {
            let t = task(i) % tasks
            slots[t * capacity + counts[t]] = i
            counts[t] += 1
        }
        var remaining = count
        var current = 0
        while counts[current] == 0 && remaining > 0 { current = (current + 1) % tasks }
        while remaining > 0 {
            let slot = slots[current * capacity + cursors[current]]
            var point = false
            switch phases[current] {
            case 0:
                saved[current] = enter(slot)
                phases[current] = 1
                point = true
            case 1:
                body(slot)
                phases[current] = 2
                point = true
            default:
                exit(slot, saved[current])
                phases[current] = 0
                cursors[current] += 1
                remaining -= 1
            }
            let finished = cursors[current] == counts[current]
            if finished || (point && source.preempt()) {
                // The next task of this CPU with work left runs.
                var next = (current + 1) % tasks
                while next != current && cursors[next] == counts[next] { next = (next + 1) % tasks }
                if point && next != current { preemptions += 1 }
                current = next
            }
        }
    }
}

/// The seed patch's `DEFINE_PER_CPU(struct sock *, current_tx_socket)`: one
/// slot per modelled CPU, written by `netdev_start_xmit`
/// (`__set_current_tx_socket(skb->sk)` and the restore of the old value)
/// and read by `dma_learn_bounce_device` in the DMA map, for the designs
/// that set it (`TransmitDesign.setsCurrentTXSocket`). A slot holds a socket
/// by flow and connection generation (no reference, as the patch's pointer
/// holds none), so a read can tell the three outcomes apart: the socket
/// whose frame is being mapped; another live socket (a misattributed
/// learning); or a socket whose connection has been closed and freed since
/// (a use after free, which the kernel would not notice: the socket slab
/// reuses the object). Counted; each slot is written only by the thread
/// acting as its CPU.
final class CurrentTXSocket: @unchecked Sendable {
    /// A slot's value: 0 for NULL, else the generation in the high half and
    /// the flow plus one in the low half.
    typealias Word = UInt64

    /// Slots: one per modelled CPU, or per task of each CPU (`TXSocketPointer.perTask`).
    let cpus: Int
    private let words: UnsafeMutablePointer<Atomic<Word>>
    /// The live generation of a flow's socket.
    private let generation: @Sendable (Int) -> UInt32
    private let setCount = Atomic<Int>(0)
    private let misattributedCount = Atomic<Int>(0)
    private let useAfterFreeCount = Atomic<Int>(0)
    private let missedCount = Atomic<Int>(0)

    /// What a read in the DMA map found.
    enum Read: Equatable {
        /// NULL: the socket being mapped learns nothing.
        case none
        /// The socket whose frame is being mapped.
        case own(flow: Int)
        /// Another live socket: it learns through this map.
        case other(flow: Int)
        /// A socket freed since it was stored: the learning writes into
        /// whatever now occupies it (the flow's new connection).
        case freed(flow: Int)
    }

    init(cpus: Int, generation: @escaping @Sendable (Int) -> UInt32) {
        precondition(cpus >= 1, "current_tx_socket for \(cpus) CPUs")
        self.cpus = cpus
        self.generation = generation
        words = .allocate(capacity: cpus)
        for i in 0..<cpus { (words + i).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: cpus)
        words.deallocate()
    }

    static func word(flow: Int, generation: UInt32) -> Word {
        UInt64(generation) << 32 | UInt64(UInt32(truncatingIfNeeded: flow + 1))
    }

    /// `__set_current_tx_socket(sk)` on `cpu`: stores the socket, returns
    /// the old value for the restore.
    func set(flow: Int, generation: UInt32, cpu: Int) -> Word {
        setCount.wrappingAdd(1, ordering: .relaxed)
        return words[cpu].exchange(Self.word(flow: flow, generation: generation), ordering: .relaxed)
    }

    /// `__set_current_tx_socket(old_sk)`: the restore.
    func restore(_ old: Word, cpu: Int) {
        words[cpu].store(old, ordering: .relaxed)
    }

    /// `this_cpu_read(current_tx_socket)` in a map of flow `mapping`'s frame
    /// on `cpu`, classified and counted.
    func read(cpu: Int, mapping flow: Int) -> Read {
        let word = words[cpu].load(ordering: .relaxed)
        guard word != 0 else {
            missedCount.wrappingAdd(1, ordering: .relaxed)
            return .none
        }
        let stored = Int(word & 0xFFFF_FFFF) - 1
        let storedGeneration = UInt32(word >> 32)
        if generation(stored) != storedGeneration {
            useAfterFreeCount.wrappingAdd(1, ordering: .relaxed)
            return .freed(flow: stored)
        }
        if stored != flow {
            misattributedCount.wrappingAdd(1, ordering: .relaxed)
            return .other(flow: stored)
        }
        return .own(flow: stored)
    }

    /// Sections that set the pointer.
    var sets: Int { setCount.load(ordering: .relaxed) }
    /// Learnings through another live socket's pointer.
    var misattributedLearnings: Int { misattributedCount.load(ordering: .relaxed) }
    /// Reads of a pointer to a socket that had been freed.
    var useAfterFree: Int { useAfterFreeCount.load(ordering: .relaxed) }
    /// Maps that found NULL (their socket learned nothing).
    var missedLearnings: Int { missedCount.load(ordering: .relaxed) }
}
