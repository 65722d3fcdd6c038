/// The one place the projection turns a design's name into something the
/// framework can run: the designs registered in `DesignRegistry.shared` (the
/// five built-ins and any a user registered). Everything else in
/// Projection/ works with names.
public enum ProjectionDesigns {
    /// What `resolve` returns and `run` and `comparison` take.
    public typealias Design = any TransmitDesignKind

    /// Every design the framework can run, by name.
    public static var allNames: [String] { DesignRegistry.shared.designs.map(\.name) }

    /// The design called `name`; the error names the `--designs` option and
    /// lists the registered names.
    public static func resolve(_ name: String) throws(ParameterError) -> Design {
        try DesignRegistry.shared.design(named: name, parameter: "designs")
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
