import Testing
@testable import DMAPools

@Suite struct PagePoolMisuseTests {
    // MARK: Traps (exit tests: each runs in a child process)

    @Test func aPagePutTwiceTraps() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let f = try PagePoolFixture()
            let page = try f.pool.allocatePage()
            f.pool.put(page)
            f.pool.put(page)
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("twice") && text.contains("page_pool \"page_pool\" id") && text.contains("page(phys:0x"))
        }
    }

    @Test func aPagePutIntoAPoolThatDoesNotOwnItTraps() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let f = try PagePoolFixture()
            let other = try PagePool(.init(name: "other"), provider: f.provider)
            let page = try f.pool.allocatePage()
            other.put(page)
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("page_pool \"other\"") && text.contains("belongs to page_pool id"))
        }
    }

    @Test func aPageUsedAfterItsPoolWasDestroyedTraps() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let f = try PagePoolFixture()
            let page = try f.pool.allocatePage()
            f.pool.put(page)
            f.pool.destroy()
            f.pool.put(page)
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("used after") && text.contains("destroyed"))
        }
    }

    @Test func directRecycleFromAThreadThatDoesNotOwnThePoolTraps() async {
        await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let f = try PagePoolFixture()
            let pool = f.pool
            let batch = PageBatch(pages: [try pool.allocatePage()])
            TestThread.run { pool.recycleDirect(batch.pages[0]) }
        }.map { result in
            let text = String(decoding: result.standardErrorContent, as: UTF8.self)
            #expect(text.contains("does not own it"))
        }
    }

    @Test func destroyingTwiceTraps() async {
        await #expect(processExitsWith: .failure) {
            let f = try PagePoolFixture()
            f.pool.destroy()
            f.pool.destroy()
        }
    }

    // MARK: Recoverable: tryPut throws

    @Test func tryPutThrowsWhereTheCallerCanRecover() throws {
        let f = try PagePoolFixture()
        let pool = f.pool
        let other = try PagePool(.init(name: "other"), provider: f.provider)
        let page = try pool.allocatePage()
        #expect {
            try other.tryPut(page)
        } throws: { error in
            guard case PagePoolError.foreignPage(let p, let o, let owner) = error else { return false }
            return p.contains("page(") && o.contains("\"other\"") && owner == "page_pool id \(pool.id)"
        }
        let batch = PageBatch(pages: [page])
        TestThread.run {
            #expect(throws: PagePoolError.notOwner(pool: pool.description)) {
                try pool.tryPut(batch.pages[0], allowDirect: true)
            }
        }
        try pool.tryPut(page)
        #expect(throws: PagePoolError.doublePut(page: "\(page)", pool: pool.description)) {
            try pool.tryPut(page)
        }
        #expect(pool.statistics.recycling.cached == 1, "failed puts changed nothing")
        other.destroy()
        pool.destroy()
        f.expectEveryPageHome()
    }
}
