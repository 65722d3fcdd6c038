/// Errors from the general allocator and the decrypted allocator.
///
/// Every case names the request that failed and the state that made it fail, so a
/// report line is enough to diagnose it. Programming errors (double frees, foreign
/// pages) are not errors: they trap with a message naming the page.
public enum AllocatorError: Error, Hashable, CustomStringConvertible {
    /// The requested page order is outside what the allocator hands out.
    case invalidOrder(Int, allowed: ClosedRange<Int>)
    /// The private part of guest memory cannot supply the request.
    /// - requestedBytes: the run asked for.
    /// - carvedBytes: bytes of the private range already carved by the arena.
    /// - privateBytes: size of the private range.
    case outOfMemory(requestedBytes: Int, carvedBytes: Int, privateBytes: Int)
    /// A jemalloc control call (`mallctl`) failed with the given errno-style code.
    case jemallocControlFailed(name: String, code: Int32)
    /// A configuration value is out of range; the text names it.
    case invalidConfiguration(String)
    /// The modelled private -> shared hypercall for a chunk failed. The chunk went
    /// back to the general allocator; nothing was lost.
    case conversionFailed(chunk: PhysicalAddress, pages: Int, underlying: MemoryError)

    public var description: String {
        switch self {
        case .invalidOrder(let order, let allowed):
            "page order \(order) is outside \(allowed.lowerBound)...\(allowed.upperBound)"
        case .outOfMemory(let requested, let carved, let total):
            "out of private guest memory: \(requested) bytes requested, \(carved) of \(total) private bytes already carved"
        case .jemallocControlFailed(let name, let code):
            "mallctl(\"\(name)\") failed with error \(code)"
        case .invalidConfiguration(let why):
            "invalid allocator configuration: \(why)"
        case .conversionFailed(let chunk, let pages, let underlying):
            "could not convert the \(pages)-page chunk at \(chunk) to shared: \(underlying)"
        }
    }
}
