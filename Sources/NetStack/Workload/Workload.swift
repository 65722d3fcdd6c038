import DMAPools

/// A transmit workload: who sends what, how fast the peer acknowledges, and
/// for how long.
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
    /// MSG_ZEROCOPY: frames reference user pages.
    public var zeroCopy: Bool = false
    /// Each socket's send buffer (`tcp_wmem[2]`).
    public var sendBufferBytes: Int = Socket.defaultSendBufferBytes
    /// The wire's speed per queue, or nil for as fast as the model runs.
    public var lineRateGbps: Double? = nil

    public init() {}

    /// Checks every parameter; the error names the one that is wrong.
    public func validate() throws(WorkloadError) {
        func check(_ ok: Bool, _ name: String, _ why: String) throws(WorkloadError) {
            if !ok { throw WorkloadError.invalid(parameter: name, reason: why) }
        }
        try check((1...64).contains(senders), "senders", "\(senders) must be in 1...64")
        try check((1...64).contains(queues), "queues", "\(queues) must be in 1...64")
        try check(flows >= senders && flows <= 4096, "flows", "\(flows) must be in senders (\(senders))...4096")
        try check(messageBytes >= 1 && messageBytes <= sendBufferBytes, "message",
                  "\(messageBytes) bytes must be in 1...send buffer (\(sendBufferBytes))")
        try check(sendBufferBytes >= 4096 && sendBufferBytes <= 1 << 30, "send-buffer", "\(sendBufferBytes) must be in 4096...1 GiB")
        try check(roundTripMicroseconds >= 0 && roundTripMicroseconds <= 10_000_000, "rtt-us", "\(roundTripMicroseconds) must be in 0...10000000")
        try check(durationSeconds > 0 && durationSeconds <= 3600, "duration", "\(durationSeconds) must be in (0, 3600] seconds")
        if let rate = lineRateGbps { try check(rate > 0 && rate <= 10_000, "line-rate", "\(rate) Gbps must be in (0, 10000]") }
    }
}

public enum WorkloadError: Error, Hashable, CustomStringConvertible {
    case invalid(parameter: String, reason: String)

    public var description: String {
        switch self {
        case .invalid(let parameter, let reason): "invalid --\(parameter): \(reason)"
        }
    }
}
