import DMAPools

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable and good enough to
/// drive random operation sequences reproducibly from one 64-bit seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15   // a Weyl sequence: wrapping is the algorithm
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Where a fuzzer's choices come from: a seeded generator (`txsim fuzz`, the
/// property tests) or the bytes of one input (a coverage-guided fuzzer such as
/// libFuzzer hands the program a byte string; every choice consumes some of it).
///
/// Once an input's bytes run out the source is `isExhausted` and keeps
/// answering from a fixed generator (a source that answered only zeros would
/// loop forever in the standard library's rejection sampling); drivers stop at
/// the next step.
public struct FuzzSource: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64
    private let input: [UInt8]?
    private var position = 0
    /// True once an input's bytes are used up. Never true for a seeded source.
    public private(set) var isExhausted = false
    /// The seed, for a seeded source: what reproduces a run.
    public let seed: UInt64?

    /// A source that never runs out, reproducible from `seed`.
    public init(seed: UInt64) {
        generator = SplitMix64(seed: seed)
        input = nil
        self.seed = seed
    }

    /// A source that reads its choices from `bytes`, 8 at a time.
    /// Bytes in the input, for an input-driven source.
    var inputCount: Int { input?.count ?? 0 }

    public init(bytes: [UInt8]) {
        generator = SplitMix64(seed: 0)
        input = bytes
        seed = nil
    }

    public mutating func next() -> UInt64 {
        guard let input else { return generator.next() }
        guard position < input.count else {
            isExhausted = true
            return generator.next()
        }
        var value: UInt64 = 0
        let end = min(position + 8, input.count)
        for i in position..<end { value = value << 8 | UInt64(input[i]) }
        position = end
        return value
    }

    /// A choice in `range`.
    public mutating func int(in range: Range<Int>) -> Int { Int.random(in: range, using: &self) }
    /// A choice in `range`.
    public mutating func int(in range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    /// One of `choices`.
    public mutating func pick<T>(_ choices: [T]) -> T { choices[int(in: 0..<choices.count)] }
}

/// What one fuzz run did, and the first disagreement it found, if any.
public struct FuzzReport: Sendable, CustomStringConvertible {
    /// The fuzz target ("swiotlb" or "page_pool").
    public var target: String
    /// How the run can be reproduced ("seed 0x…" or "input of N bytes").
    public var origin: String
    /// The seed that reproduces the run, for a seeded run.
    public var seed: UInt64?
    /// Operations applied to the system under test (map, sync, unmap, alloc, put...).
    public var operations = 0
    /// Bytes compared byte for byte against what the model says they must be.
    public var bytesVerified = 0
    /// Pages (or slots, for swiotlb) still held after teardown: must be 0.
    public var lostPages = 0
    /// The first disagreement with the reference model or an invariant, with the
    /// step it happened at. Nil when the run passed.
    public var problem: String?

    public init(target: String, source: FuzzSource) {
        self.target = target
        self.seed = source.seed
        self.origin = source.seed.map { "seed 0x\(String($0, radix: 16))" } ?? "input of \(source.inputCount) bytes"
    }

    public var passed: Bool { problem == nil && lostPages == 0 }

    public var description: String {
        let outcome = problem.map { "FAILED: \($0)" } ?? (lostPages == 0 ? "ok" : "FAILED: \(lostPages) pages lost")
        return "\(target) \(origin): \(operations) operations, \(bytesVerified) bytes verified, \(lostPages) lost: \(outcome)"
    }

    /// Records the first problem only (later ones usually follow from it).
    mutating func fail(_ message: @autoclosure () -> String) {
        if problem == nil { problem = message() }
    }
}
