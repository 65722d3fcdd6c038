import Testing
@testable import NetStack

/// Mixed zero-copy sends (`--zerocopy-mix P`): SO_ZEROCOPY on every socket, a
/// fraction P of sendmsg calls with MSG_ZEROCOPY.
@Suite struct ZeroCopyMixTests {
    func workload(mix: Double) -> Workload {
        var w = Small.workload(seconds: 0.3)
        w.zeroCopyMix = mix
        return w
    }

    @Test func theSeedPatchTakesNoSwiotlbPagesForAZeroCopySocketSoItsCopiedSendsBounce() throws {
        // P = 0: every call is copied, but the socket has SOCK_ZEROCOPY, so the
        // patch gives it general pages, which bounce: two copies per byte.
        let r = try Experiment.run(.fragRefill, workload: workload(mix: 0), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.designFigures[named: "zero-copy runs"]?.count == 0)
        #expect(r.copiesPerByte > 1.95, "copies per byte \(r.copiesPerByte)")
    }

    @Test func thePagePoolDoesNotDependOnTheSocketFlag() throws {
        let r = try Experiment.run(.pagePool, workload: workload(mix: 0), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.copiesPerByte < 1.05, "copies per byte \(r.copiesPerByte)")
    }

    @Test(arguments: [0.25, 0.5, 0.75])
    func theGivenFractionOfCallsIsZeroCopy(_ mix: Double) throws {
        let r = try Experiment.run(.pagePool, workload: workload(mix: mix), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        // Every call sends one whole 64 KiB message, so the byte share is the call share.
        let referenced = 1 - Double(r.bytesCopiedBySender) / Double(r.bytesWritten)
        #expect(abs(referenced - mix) < 0.02, "\(referenced) of the bytes referenced, asked \(mix)")
    }

    @Test(arguments: [DesignKindName.bounce, .fragRefill, .pagePool])
    func allZeroCopyCopiesNothingInTheSender(_ name: DesignKindName) throws {
        let r = try Experiment.run(name.kind, workload: workload(mix: 1), configuration: Small.configuration)
        #expect(r.passed, "\(r.firstProblem ?? "")")
        #expect(r.bytesCopiedBySender == 0)
        #expect(r.copiesPerByte > 0.95, "the user's private pages bounce at map: \(r.copiesPerByte)")
    }

    @Test func aMixOutsideItsRangeOrWithMsgZeroCopyIsRefusedByName() {
        var w = Small.workload()
        w.zeroCopyMix = 1.5
        #expect(throws: ParameterError.invalid(parameter: "zerocopy-mix", reason: "1.5 must be in 0...1 (the fraction of sendmsg calls with MSG_ZEROCOPY)")) {
            try w.validate()
        }
        w.zeroCopyMix = 0.5
        w.zeroCopy = true
        #expect(throws: ParameterError.self) { try w.validate() }
    }
}

/// Designs by name, for parameterised tests.
enum DesignKindName: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case bounce, fragRefill, pagePool
    var kind: any TransmitDesignKind {
        switch self {
        case .bounce: .bounce
        case .fragRefill: .fragRefill
        case .pagePool: .pagePool
        }
    }
    var testDescription: String { rawValue }
}
