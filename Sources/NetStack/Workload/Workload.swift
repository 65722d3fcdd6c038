import DMAPools

/// A transmit workload: who sends what, how fast the peer acknowledges, and
/// for how long.
///
/// Every rule a workload must keep is in `validate()`; `txsim` checks its
/// options with it, so a library user is told exactly what a command-line user
/// is told. Parameters are named in errors by the `txsim` option that sets them.
public struct Workload: Sendable, Hashable, Codable {
    /// Sender threads (process context: `tcp_sendmsg`, copy 1).
    public var senders: Int = 2
    /// TX queues, each served by one thread (the TX softirq).
    public var queues: Int = 1
    /// Flows (sockets); flow `f` is sent by sender `f % senders` on queue `f % queues`.
    public var flows: Int = 2
    /// Bytes per `sendmsg`.
    public var messageBytes: Int = 65536
    /// The peer acknowledges a frame this long after the NIC sent it.
    public var roundTripMicroseconds: Int = 50
    /// How long senders send, in seconds.
    public var durationSeconds: Double = 1.0
    /// The NIC reads and checks every byte.
    public var verify: Bool = false
    /// MSG_ZEROCOPY on every sendmsg: frames reference user pages (the
    /// sockets have `SO_ZEROCOPY` set).
    public var zeroCopy: Bool = false
    /// Mixed zero-copy sends (`--zerocopy-mix P`): every socket has
    /// `SO_ZEROCOPY` set and a fraction P (0...1) of its sendmsg calls pass
    /// `MSG_ZEROCOPY`, the rest are copied, as an application that mixes both
    /// on one socket does. nil: no mix (`zeroCopy` decides for every call).
    public var zeroCopyMix: Double? = nil

    /// Whether the sockets have `SO_ZEROCOPY` (`SOCK_ZEROCOPY`) set.
    public var socketZeroCopy: Bool { zeroCopy || zeroCopyMix != nil }
    /// The fraction of sendmsg calls with `MSG_ZEROCOPY`.
    public var zeroCopyFraction: Double { zeroCopyMix ?? (zeroCopy ? 1 : 0) }
    /// Each socket's send buffer (`tcp_wmem[2]`).
    public var sendBufferBytes: Int = Socket.defaultSendBufferBytes
    /// The wire's speed per queue, or nil for as fast as the model runs.
    public var lineRateGbps: Double? = nil
    /// Short-lived connections (`--connection-bytes N`): each flow's socket
    /// is closed once it has sent this many bytes and all of them are
    /// acknowledged, its `struct sock` freed, and a new connection opened on
    /// the flow (a new `Socket.generation`, as the socket slab reuses the
    /// object). nil: one connection per flow for the whole run.
    public var connectionBytes: Int? = nil
    /// Bytes of each frame's linear head (`skb->head`: the protocol headers
    /// the stack writes in front of the paged payload), allocated where the
    /// design puts heads (`TransmitDesign.linearHeadPlacement`) and DMA'd
    /// with the frame. 0 (the default): frames carry no head, as every
    /// comparison table in Design/ was measured; `txsim shared` uses
    /// `SharedSimulation.defaultHeaderBytes`.
    public var headerBytes: Int = 0

    /// The ranges `validate()` enforces.
    public static let senderRange = 1...64
    public static let queueRange = 1...64
    public static let maximumFlows = 4096
    public static let sendBufferRange = 4096...(1 << 30)
    /// At most one second: a run lasts its duration plus one round trip plus
    /// `drainLimitSeconds` at most.
    public static let roundTripRange = 0...1_000_000
    /// Below 50 ms a run measures its own start-up, not a design.
    public static let durationRange = 0.05...3600.0
    public static let lineRateRange = 0.001...10_000.0
    /// `--connection-bytes`: from one 64 KiB frame to 1 TiB.
    public static let connectionBytesRange = 65536...(1 << 40)
    /// A head is one slab object: at most the largest size class (2 KiB).
    public static let headerBytesRange = 0...SlabCache.objectSizes[SlabCache.objectSizes.count - 1]
    /// How long after its duration (plus one round trip) a run waits for its
    /// queues to drain and its frames to be acknowledged. What is still queued
    /// then is abandoned (counted, its pages freed) rather than drained at line
    /// rate, so a run always ends within duration + RTT + this.
    public static let drainLimitSeconds = 1.0

    /// The default workload (valid).
    public init() {}

    /// A workload, checked: the error names the parameter at fault and its range.
    public init(senders: Int = 2, queues: Int = 1, flows: Int = 2, messageBytes: Int = 65536,
                roundTripMicroseconds: Int = 50, durationSeconds: Double = 1.0, verify: Bool = false,
                zeroCopy: Bool = false, sendBufferBytes: Int = Socket.defaultSendBufferBytes,
                lineRateGbps: Double? = nil) throws(ParameterError) {
        self.senders = senders; self.queues = queues; self.flows = flows; self.messageBytes = messageBytes
        self.roundTripMicroseconds = roundTripMicroseconds; self.durationSeconds = durationSeconds
        self.verify = verify; self.zeroCopy = zeroCopy; self.sendBufferBytes = sendBufferBytes
        self.lineRateGbps = lineRateGbps
        try validate()
    }

    /// Checks every parameter; the error names the one that is wrong.
    public func validate() throws(ParameterError) {
        func check(_ ok: Bool, _ name: String, _ why: String) throws(ParameterError) {
            if !ok { throw ParameterError.invalid(parameter: name, reason: why) }
        }
        try check(Self.senderRange.contains(senders), "senders", "\(senders) must be in \(Self.senderRange)")
        try check(Self.queueRange.contains(queues), "queues", "\(queues) must be in \(Self.queueRange)")
        try check(flows >= senders && flows <= Self.maximumFlows, "flows",
                  "\(flows) must be in senders (\(senders))...\(Self.maximumFlows): every sender needs a flow")
        // The send buffer first: a message is checked against it.
        try check(Self.sendBufferRange.contains(sendBufferBytes), "send-buffer",
                  "\(sendBufferBytes) bytes must be in 4096...1073741824 (4 KiB...1 GiB)")
        try check(messageBytes >= 1 && messageBytes <= sendBufferBytes, "message",
                  "\(messageBytes) bytes must be in 1...send buffer (\(sendBufferBytes))")
        try check(Self.roundTripRange.contains(roundTripMicroseconds), "rtt-us",
                  "\(roundTripMicroseconds) must be in \(Self.roundTripRange) microseconds")
        try check(Self.durationRange.contains(durationSeconds), "duration",
                  "\(durationSeconds) must be in 0.05...3600 seconds")
        if let rate = lineRateGbps {
            try check(Self.lineRateRange.contains(rate), "line-rate-gbps", "\(rate) must be in 0.001...10000 Gbps")
        }
        try check(Self.headerBytesRange.contains(headerBytes), "header-bytes",
                  "\(headerBytes) must be in \(Self.headerBytesRange) bytes (0: no linear head; at most one 2 KiB slab object)")
        if let mix = zeroCopyMix {
            try check((0...1).contains(mix), "zerocopy-mix", "\(mix) must be in 0...1 (the fraction of sendmsg calls with MSG_ZEROCOPY)")
            try check(!zeroCopy, "zerocopy-mix", "cannot be given with --msg-zerocopy, which is --zerocopy-mix 1")
        }
        if let bytes = connectionBytes {
            try check(Self.connectionBytesRange.contains(bytes), "connection-bytes",
                      "\(bytes) must be in 65536...1099511627776 (bytes a connection sends before it is closed)")
        }
    }
}

/// A parameter out of its range, from `Workload`, `ExperimentConfiguration` or
/// `Experiment.check`. `parameter` is the `txsim` option that sets it (without
/// the dashes), so a library user reads what a command-line user reads.
public enum ParameterError: Error, Hashable, CustomStringConvertible {
    case invalid(parameter: String, reason: String)

    public var parameter: String {
        switch self { case .invalid(let parameter, _): parameter }
    }

    public var description: String {
        switch self {
        case .invalid(let parameter, let reason): "invalid --\(parameter): \(reason)"
        }
    }
}
