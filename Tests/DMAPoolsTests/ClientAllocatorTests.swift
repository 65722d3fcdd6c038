import Testing
@testable import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// Depending on DMAPools must not change the client's `malloc`: this test
/// bundle is such a client (it links DMAPools and nothing that opts in), so
/// plain `malloc` must stay glibc's and C++ `operator new` libstdc++'s, while
/// the general allocator's jemalloc entry points (`mallocx`, `mallctl`) come
/// from libjemalloc. Run with `LD_PRELOAD=libjemalloc.so.2` (the documented
/// opt-in) the same checks expect jemalloc to serve `malloc`, so they can tell
/// the two apart.
@Suite struct ClientAllocatorTests {
    /// The file name of the library that defines `symbol` for a lookup from
    /// the global scope (`dlsym(RTLD_DEFAULT, …)`, what the dynamic linker
    /// binds a client's calls to): the mapping of /proc/self/maps that holds
    /// the address (`dladdr` is not visible from Swift's Glibc module).
    static func library(of symbol: String) -> String? {
        guard let address = dlsym(UnsafeMutableRawPointer(bitPattern: 0), symbol) else { return nil }
        let target = UInt(bitPattern: address)
        guard let file = fopen("/proc/self/maps", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 4096)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let fields = text.split(separator: " ", omittingEmptySubsequences: true)
            let range = fields.first?.split(separator: "-") ?? []
            guard fields.count >= 6, range.count == 2,
                  let low = UInt(range[0], radix: 16), let high = UInt(range[1], radix: 16),
                  low <= target, target < high else { continue }
            return fields[5].split(whereSeparator: { $0 == "/" || $0 == "\n" }).last.map(String.init)
        }
        return nil
    }

    /// Whether `symbol` is served by the library whose file name starts with
    /// `prefix` (`libc.so`, `libstdc++.so`, `libjemalloc.so`).
    static func library(of symbol: String, is prefix: String) -> Bool {
        library(of: symbol)?.hasPrefix(prefix) == true
    }

    /// Whether the process was started with jemalloc preloaded (the opt-in).
    static var optedIn: Bool {
        guard let preload = getenv("LD_PRELOAD") else { return false }
        return String(cString: preload).contains("jemalloc")
    }

    @Test func plainMallocIsGlibcsUnlessTheClientOptsIn() throws {
        // Use jemalloc first: an arena with extent hooks, a run through it.
        let memory = try smallGuest()
        let allocator = try GeneralAllocator(memory: memory)
        allocator.freePages(try allocator.allocatePages(order: 0))

        let optedIn = Self.optedIn
        #expect(Self.library(of: "malloc", is: optedIn ? "libjemalloc.so" : "libc.so"))
        #expect(Self.library(of: "free", is: optedIn ? "libjemalloc.so" : "libc.so"))
        #expect(Self.library(of: "_Znwm", is: optedIn ? "libjemalloc.so" : "libstdc++.so"))   // operator new
        #expect(Self.library(of: "mallocx", is: "libjemalloc.so"))
        #expect(Self.library(of: "mallctl", is: "libjemalloc.so"))
    }

    /// The same by behaviour: jemalloc's per-thread `thread.allocated` moves
    /// by a plain `malloc` only when jemalloc serves it.
    @Test func plainMallocDoesNotReachJemallocUnlessTheClientOptsIn() throws {
        let memory = try smallGuest()
        let allocator = try GeneralAllocator(memory: memory)
        let run = try allocator.allocatePages(order: 0)
        let before = try Jemalloc.read("thread.allocated", as: UInt64.self)
        let block = try #require(malloc(1 << 20))
        memset(block, 1, 1 << 20)
        let after = try Jemalloc.read("thread.allocated", as: UInt64.self)
        free(block)
        allocator.freePages(run)
        if Self.optedIn {
            #expect(after - before >= 1 << 20, "jemalloc preloaded, yet a 1 MiB malloc moved thread.allocated by \(after - before)")
        } else {
            #expect(after - before < 1 << 20, "a 1 MiB malloc reached jemalloc (thread.allocated +\(after - before)): DMAPools made jemalloc the client's malloc")
        }
    }
}
