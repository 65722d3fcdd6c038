/// The one place the projection turns a design's name into something the
/// framework can run. Everything else in Projection/ works with names, so
/// when the closed `DesignKind` gives way to a registry of designs only this
/// adapter changes.
public enum ProjectionDesigns {
    /// What `resolve` returns and `run` and `comparison` take.
    public typealias Design = DesignKind

    /// Every design the framework can run, by name.
    public static var allNames: [String] { DesignKind.allCases.map(\.rawValue) }

    /// The design called `name`; the error names the `--designs` option.
    public static func resolve(_ name: String) throws(ParameterError) -> Design {
        do { return try DesignKind.named(name) } catch {
            throw .invalid(parameter: "designs", reason: error.description)
        }
    }

    /// Runs `design` on a fresh guest.
    public static func run(_ design: Design, workload: Workload, configuration: ExperimentConfiguration) throws -> TransmitResult {
        try Experiment.run(design, workload: workload, configuration: configuration)
    }

    /// The paired comparison of `designs` (bounce the baseline when run).
    public static func comparison(_ designs: [Design], workload: Workload, rounds: Int,
                                  configuration: ExperimentConfiguration) throws -> [TransmitResult] {
        try Experiment.compare(designs, workload: workload, rounds: rounds, configuration: configuration)
    }
}
