/// `txsim project --validate`: the model's prediction against the real
/// comparison at every configuration this machine can run, calibration and
/// real runs interleaved point by point, so a change in the machine's speed
/// falls on both.
public enum ProjectionValidation {
    /// One validated workload: the default and the pressure workload of the README.
    public struct Case: Sendable, Hashable {
        public var name: String
        public var flows: Int
        public var roundTripMicroseconds: Int
        public static let standard = Case(name: "default", flows: 2, roundTripMicroseconds: 50)
        public static let pressure = Case(name: "pressure", flows: 32, roundTripMicroseconds: 2000)
    }

    public struct Row: Sendable, Hashable {
        public var design: String
        public var senders: Int
        public var queues: Int
        public var workload: String
        public var predicted: Projection
        public var predictedGbps: Double { predicted.gbps }
        public var measuredGbps: Double
        public var measuredGbpsMin: Double
        public var measuredGbpsMax: Double
        public var measuredCopiesPerByte: Double
        public var measuredZeroCopyFraction: Double
        /// The CPU share per sender the real run's threads got, which the prediction used.
        public var cpuShare: Double
        /// (predicted - measured) / measured.
        public var gbpsError: Double { measuredGbps > 0 ? (predicted.gbps - measuredGbps) / measuredGbps : .nan }
        public var copiesError: Double { predicted.copiesPerByte - measuredCopiesPerByte }
        public var zeroCopyError: Double { predicted.zeroCopyFraction - measuredZeroCopyFraction }
        public var withinGoal: Bool {
            abs(gbpsError) <= ProjectionValidation.gbpsGoal && abs(copiesError) <= ProjectionValidation.fractionGoal
                && abs(zeroCopyError) <= ProjectionValidation.fractionGoal
        }
    }

    public static let gbpsGoal = 0.15
    public static let fractionGoal = 0.05

    public struct Options: Sendable {
        public var designs: [String]
        public var senders: [Int] = [1, 2]
        public var queues: [Int] = [1, 2]
        public var cases: [Case] = [.standard, .pressure]
        public var calibration: Calibration.Options
        /// Rounds and seconds per design of each real comparison.
        public var rounds: Int = 3
        public var seconds: Double = 0.6

        public init(designs: [String], calibration: Calibration.Options, rounds: Int = 3, seconds: Double = 0.6) {
            self.designs = designs
            self.calibration = calibration
            self.rounds = rounds
            self.seconds = seconds
        }
    }

    /// Per point: measures the machine costs, calibrates every design, runs
    /// the real comparison, and projects the point from the
    /// calibration just taken (cores: this machine's; CPU share: what the
    /// calibration's threads got).
    public static func run(_ options: Options, progress: (@Sendable (String) -> Void)? = nil) throws -> (rows: [Row], profiles: [CalibrationProfile]) {
        try options.calibration.check()
        let designs = try options.designs.map { try ProjectionDesigns.resolve($0) }
        var rows: [Row] = []
        var profiles: [CalibrationProfile] = []
        let configuration = options.calibration.configuration
        for c in options.cases {
            for s in options.senders {
                for q in options.queues {
                    let label = "\(c.name) \(s) sender(s) \(q) queue(s)"
                    progress?("\(label): calibrating")
                    // Machine costs too, point by point: the cold copy the
                    // pressure workload leans on moves by 2x on this machine.
                    let allMachineCosts = try Calibration.measureMachineCosts(repetitions: max(3, options.calibration.repetitions))
                    // Calibrated at this workload's own working set (its
                    // flows and round trip, one sender): the model then
                    // corrects only for senders and queues.
                    var calibration = options.calibration
                    calibration.flows = c.flows
                    calibration.roundTripMicroseconds = c.roundTripMicroseconds
                    let costs = try Calibration.measureDesigns(calibration)
                    let scaling = (0..<3).map { _ in Calibration.twoThreadScaling() }
                    var machineCosts = allMachineCosts
                    machineCosts.twoThreadSpeedup = .measured(scaling.map(\.speedup))
                    machineCosts.twoThreadWorkPerCPUSecond = .measured(scaling.map(\.perCPUSecond))
                    let perCPUSecond = machineCosts.twoThreadWorkPerCPUSecond?.value ?? 1
                    let profile = CalibrationProfile(
                        machine: CalibrationMachine(cores: Calibration.onlineCPUs(), lastLevelCacheBytes: Calibration.lastLevelCacheBytes(),
                                                    date: Calibration.utcNow(), note: "txsim project --validate, before \(label)"),
                        method: Calibration.method(calibration), machineCosts: machineCosts, designs: costs)
                    profiles.append(profile)
                    progress?("\(label): real comparison")
                    let workload = try Workload(senders: s, queues: q, flows: max(c.flows, s), roundTripMicroseconds: c.roundTripMicroseconds,
                                                durationSeconds: options.seconds)
                    let results = try ProjectionDesigns.comparison(designs, workload: workload, rounds: options.rounds,
                                                                   configuration: configuration)
                    let point = ProjectionPoint(senders: s, queues: q, flows: workload.flows, messageBytes: workload.messageBytes,
                                                roundTripMicroseconds: workload.roundTripMicroseconds,
                                                sendBufferBytes: workload.sendBufferBytes, swiotlbBytes: configuration.memory.swiotlbBytes,
                                                zeroCopyPercent: configuration.zeroCopyPercent, poolRingSize: configuration.poolRingSize)
                    for (name, result) in zip(options.designs, results) {
                        // The CPU this machine's other tenants left the run's
                        // threads (CPU time over wall time, per sender) is an
                        // input, measured in the run; how fast a thread works
                        // per CPU second with the other core busy is the
                        // calibrated two-thread factor.
                        // The CPUs the tenants left (hypervisor steal and
                        // other processes), shared by the senders: not the
                        // CPU the run's threads used, which falls when they
                        // wait on a bound queue, as they must.
                        let cpus = Double(Calibration.onlineCPUs())
                        let taken = result.seconds > 0 ? (result.stolenCPUSeconds + result.othersCPUSeconds) / result.seconds : 0
                        let share = min(1, max(0, cpus - taken) / Double(s))
                        // With 2 senders, a CPU second buys what it bought
                        // when the calibration ran two senders of this
                        // design at once (the copy loop's factor when the
                        // profile lacks it).
                        let perCPU = profile.costs(of: name)?.twoSenderWorkPerCPUSecond?.value ?? perCPUSecond
                        let machine = MachineParameters(cores: Calibration.onlineCPUs(), cpuShare: max(0.01, min(1, share)),
                                                        parallelSpeedup: s >= 2 ? Double(s) * min(1, perCPU) : 1,
                                                        nicReadsMemory: false)
                        let predicted = try ProjectionModel.project(name, at: point, profile: profile, machine: machine)
                        rows.append(Row(design: name, senders: s, queues: q, workload: c.name, predicted: predicted,
                                        measuredGbps: result.gbps, measuredGbpsMin: result.gbpsRange.lowerBound,
                                        measuredGbpsMax: result.gbpsRange.upperBound,
                                        measuredCopiesPerByte: result.copiesPerByte, measuredZeroCopyFraction: result.zeroCopyFraction,
                                        cpuShare: machine.cpuShare))
                    }
                }
            }
        }
        return (rows, profiles)
    }
}
