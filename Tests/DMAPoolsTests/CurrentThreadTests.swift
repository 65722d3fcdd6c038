import Testing
@testable import DMAPools

#if canImport(Glibc)
import Glibc
#endif

/// The pool's ownership check reads the calling thread's `pthread_t` without a
/// call; it must be exactly `pthread_self()` on every thread, or direct
/// recycling would be refused to its owner or allowed to a stranger.
@Suite struct CurrentThreadTests {
    @Test func theInlineThreadIdentityIsPthreadSelfOnEveryThread() throws {
        let mine = pthread_self()
        #expect(_isCurrentThread(mine))
        final class Box: @unchecked Sendable { var other = pthread_t(); var matched = false; var sawMain = true }
        let box = Box()
        let owner = mine
        var thread = pthread_t()
        let context = Unmanaged.passRetained(ContextBox { box.other = pthread_self(); box.matched = _isCurrentThread(box.other); box.sawMain = _isCurrentThread(owner) })
        #expect(pthread_create(&thread, nil, { raw in
            let body = Unmanaged<ContextBox>.fromOpaque(raw!).takeRetainedValue()
            body.run()
            return nil
        }, context.toOpaque()) == 0)
        #expect(pthread_join(thread, nil) == 0)
        #expect(box.matched)
        #expect(!box.sawMain)
        #expect(!_isCurrentThread(box.other))
    }
}

private final class ContextBox: @unchecked Sendable {
    let run: @Sendable () -> Void
    init(_ run: @escaping @Sendable () -> Void) { self.run = run }
}
