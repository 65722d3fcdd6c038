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
        /// The CPUs per sender the other tenants left during the real run,
        /// which the prediction used (the median round's).
        public var cpuShare: Double
        /// Per round, (predicted - measured) / measured, the prediction from
        /// the calibration taken just before that round's real run.
        public var roundErrors: [Double] = []
        /// Per round, how far apart the two CPUs were while the calibration
        /// ran (the hand-off probe before and after it: far if either was)
        /// and during the design's real run (`TransmitResult.roundDistances`);
        /// nil where not measured. A prediction is for the machine the
        /// calibration saw, so a round in which the host moved the vCPUs
        /// between the two is not a test of the model.
        public var roundCalibrationDistances: [CPUDistance?] = []
        public var roundRunDistances: [CPUDistance?] = []
        /// Per round, the parallel speedup the prediction used (`MachineParameters.parallelSpeedup`:
        /// 1 at one sender; at two, 2 x that round's calibrated
        /// `two_sender_work_per_cpu_second`, at most 2), so that a miss at two
        /// senders can be told apart from a miss in the one-sender costs.
        public var roundParallelSpeedups: [Double] = []
        /// The errors of the rounds whose calibration and run found the CPUs
        /// at the same distance.
        public var sameDistanceErrors: [Double] {
            zip(roundErrors, zip(roundCalibrationDistances, roundRunDistances))
                .filter { $0.1.0 != nil && $0.1.0 == $0.1.1 }.map(\.0)
        }
        /// The median of `sameDistanceErrors`; nil when no round's calibration
        /// and run agreed.
        public var gbpsErrorSameDistance: Double? {
            let errors = sameDistanceErrors
            return errors.isEmpty ? nil : errors.sorted()[errors.count / 2]
        }
        /// The median of the per-round paired errors (without rounds:
        /// (predicted - measured) / measured).
        public var gbpsError: Double {
            if !roundErrors.isEmpty { return roundErrors.sorted()[roundErrors.count / 2] }
            return measuredGbps > 0 ? (predicted.gbps - measuredGbps) / measuredGbps : .nan
        }
        public var copiesError: Double { predicted.copiesPerByte - measuredCopiesPerByte }
        public var zeroCopyError: Double { predicted.zeroCopyFraction - measuredZeroCopyFraction }
        public var withinGoal: Bool { meetsGoals(gbpsError: gbpsError) }
        /// The goals with `gbpsError` as the point's Gbps error (the median
        /// over all its rounds, or over a subset such as the same-distance ones).
        public func meetsGoals(gbpsError: Double) -> Bool {
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
        /// Rounds per point (each a calibration, then one real round) and
        /// the seconds each design runs per point, over all its rounds.
        public var rounds: Int = 3
        public var seconds: Double = 0.6

        public init(designs: [String], calibration: Calibration.Options, rounds: Int = 3, seconds: Double = 0.6) {
            self.designs = designs
            self.calibration = calibration
            self.rounds = rounds
            self.seconds = seconds
        }
    }

    /// Per point: measures the machine costs, then in each of `rounds`
    /// rounds calibrates every design (a share of the calibration's
    /// repetitions), runs one round of the real comparison, and projects
    /// the point from the calibration just taken (cores: this machine's; CPU
    /// share: what the other tenants left that round). Each round's
    /// prediction is paired with its own real run, as the comparison pairs
    /// each design with its baseline, so that the machine's changes of
    /// speed, which last seconds, fall on both.
    public static func run(_ options: Options, progress: (@Sendable (String) -> Void)? = nil) throws -> (rows: [Row], profiles: [CalibrationProfile]) {
        try options.calibration.check()
        let designs = try options.designs.map { try ProjectionDesigns.resolve($0) }
        var rows: [Row] = []
        var profiles: [CalibrationProfile] = []
        let configuration = options.calibration.configuration
        let rounds = max(1, options.rounds)
        let cores = Calibration.onlineCPUs(), lastLevelCache = Calibration.lastLevelCacheBytes()
        for c in options.cases {
            for s in options.senders {
                for q in options.queues {
                    let label = "\(c.name) \(s) sender(s) \(q) queue(s)"
                    progress?("\(label): machine costs")
                    // Machine costs too, point by point: the cold copy the
                    // pressure workload leans on moves by 2x on this machine.
                    let allMachineCosts = try Calibration.measureMachineCosts(repetitions: max(3, options.calibration.repetitions))
                    // Calibrated at this workload's own working set (its
                    // flows and round trip, one sender): the model then
                    // corrects only for senders and queues.
                    var calibration = options.calibration
                    calibration.flows = c.flows
                    calibration.roundTripMicroseconds = c.roundTripMicroseconds
                    calibration.repetitions = max(1, options.calibration.repetitions / rounds)
                    let workload = try Workload(senders: s, queues: q, flows: max(c.flows, s), roundTripMicroseconds: c.roundTripMicroseconds,
                                                durationSeconds: max(0.05, Experiment.roundSeconds(duration: options.seconds, rounds: rounds)))
                    let point = ProjectionPoint(senders: s, queues: q, flows: workload.flows, messageBytes: workload.messageBytes,
                                                roundTripMicroseconds: workload.roundTripMicroseconds,
                                                sendBufferBytes: workload.sendBufferBytes, swiotlbBytes: configuration.memory.swiotlbBytes,
                                                zeroCopyPercent: configuration.zeroCopyPercent, poolRingSize: configuration.poolRingSize)
                    // [design][round]
                    var paired = [[(predicted: Projection, measured: TransmitResult, share: Double, calibrationDistance: CPUDistance?, speedup: Double)]](repeating: [], count: designs.count)
                    for round in 0..<rounds {
                        progress?("\(label): round \(round + 1)/\(rounds), calibrating")
                        let probeBefore = CacheHandoff.probe()
                        let costs = try Calibration.measureDesigns(calibration)
                        let scaling = (0..<3).map { _ in Calibration.twoThreadScaling() }
                        var machineCosts = allMachineCosts
                        machineCosts.twoThreadSpeedup = .measured(scaling.map(\.speedup))
                        machineCosts.twoThreadWorkPerCPUSecond = .measured(scaling.map(\.perCPUSecond))
                        let probes = [probeBefore, CacheHandoff.probe()].map { CPUDistance(handoffNanosecondsPerByte: $0) }
                        let calibrationDistance: CPUDistance? = probes.contains(nil) ? nil : (probes.contains(.far) ? .far : .near)
                        let perCPUSecond = machineCosts.twoThreadWorkPerCPUSecond?.value ?? 1
                        let profile = CalibrationProfile(
                            machine: CalibrationMachine(cores: cores, lastLevelCacheBytes: lastLevelCache,
                                                        date: Calibration.utcNow(), note: "txsim project --validate, before \(label), round \(round + 1)"),
                            method: Calibration.method(calibration), machineCosts: machineCosts, designs: costs)
                        profiles.append(profile)
                        progress?("\(label): round \(round + 1)/\(rounds), real comparison")
                        let results = try ProjectionDesigns.comparison(designs, workload: workload, rounds: 1, configuration: configuration)
                        for (i, (name, result)) in zip(options.designs, results).enumerated() {
                            // The CPUs the tenants left (hypervisor steal and
                            // other processes), shared by the senders: not the
                            // CPU the run's threads used, which falls when they
                            // wait on a bound queue, as they must.
                            let taken = result.seconds > 0 ? (result.stolenCPUSeconds + result.othersCPUSeconds) / result.seconds : 0
                            let share = min(1, max(0, Double(cores) - taken) / Double(s))
                            // With 2 senders, a CPU second buys what it bought
                            // when the calibration ran two senders of this
                            // design at once (the copy loop's factor when the
                            // profile lacks it).
                            let perCPU = profile.costs(of: name)?.twoSenderWorkPerCPUSecond?.value ?? perCPUSecond
                            let machine = MachineParameters(cores: cores, cpuShare: max(0.01, share),
                                                            parallelSpeedup: s >= 2 ? Double(s) * min(1, perCPU) : 1,
                                                            nicReadsMemory: false)
                            let predicted = try ProjectionModel.project(name, at: point, profile: profile, machine: machine)
                            paired[i].append((predicted, result, machine.cpuShare, calibrationDistance, machine.parallelSpeedup ?? 1))
                        }
                    }
                    for (i, name) in options.designs.enumerated() {
                        let byMeasured = paired[i].sorted { $0.measured.gbps < $1.measured.gbps }
                        let byPredicted = paired[i].sorted { $0.predicted.gbps < $1.predicted.gbps }
                        let middle = paired[i].count / 2
                        let measured = byMeasured[middle].measured
                        var row = Row(design: name, senders: s, queues: q, workload: c.name, predicted: byPredicted[middle].predicted,
                                      measuredGbps: measured.gbps, measuredGbpsMin: byMeasured.first!.measured.gbps,
                                      measuredGbpsMax: byMeasured.last!.measured.gbps,
                                      measuredCopiesPerByte: measured.copiesPerByte, measuredZeroCopyFraction: measured.zeroCopyFraction,
                                      cpuShare: byMeasured[middle].share)
                        row.roundErrors = paired[i].map { $0.measured.gbps > 0 ? ($0.predicted.gbps - $0.measured.gbps) / $0.measured.gbps : .nan }
                        row.roundCalibrationDistances = paired[i].map(\.calibrationDistance)
                        row.roundParallelSpeedups = paired[i].map(\.speedup)
                        row.roundRunDistances = paired[i].map { $0.measured.roundDistances.first ?? nil }
                        rows.append(row)
                    }
                }
            }
        }
        return (rows, profiles)
    }
}
