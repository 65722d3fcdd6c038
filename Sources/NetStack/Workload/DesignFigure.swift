/// One of a design's own figures in a report (pool counters, fallbacks, hook
/// checks): a name, a unit and a typed value. Counters stay integers, so
/// rounds add up without parsing text back.
public struct DesignFigure: Sendable, Hashable {
    /// What the figure holds.
    public enum Value: Sendable, Hashable {
        /// A counter: summed over rounds.
        case count(Int)
        /// Counters reported together under one name, in the order the name
        /// lists them (`alloc fast/slow/empty/refill`): summed element-wise.
        case counts([Int])
        /// A label, such as a provider's name: the first round's is kept.
        case text(String)
    }

    /// The figure's name as reports print it (and the key of the JSON
    /// `figures` object).
    public var name: String
    /// What is counted (`pages`, `calls`, `runs`); empty for a label.
    public var unit: String
    public var value: Value

    public init(_ name: String, unit: String = "", _ value: Value) {
        self.name = name
        self.unit = unit
        self.value = value
    }

    /// A counter.
    public static func count(_ name: String, _ value: Int, unit: String) -> DesignFigure {
        DesignFigure(name, unit: unit, .count(value))
    }

    /// Counters reported together; `name` lists them separated by `/`.
    public static func counts(_ name: String, _ values: [Int], unit: String) -> DesignFigure {
        DesignFigure(name, unit: unit, .counts(values))
    }

    /// A label.
    public static func text(_ name: String, _ value: String) -> DesignFigure {
        DesignFigure(name, .text(value))
    }

    /// The counter, or nil for several counters or a label.
    public var count: Int? {
        if case .count(let n) = value { return n }
        return nil
    }

    /// The counters: one for a counter, none for a label.
    public var counts: [Int] {
        switch value {
        case .count(let n): [n]
        case .counts(let values): values
        case .text: []
        }
    }

    /// The value as the report's table prints it: the counter, the counters
    /// joined by `/` in the order of the name, or the label.
    public var text: String {
        switch value {
        case .count(let n): String(n)
        case .counts(let values): values.map(String.init).joined(separator: "/")
        case .text(let s): s
        }
    }

    /// Two rounds' figure added up: counters add, a label keeps the first
    /// round's. Figures of different names or shapes keep the first.
    public static func + (a: DesignFigure, b: DesignFigure) -> DesignFigure {
        guard a.name == b.name else { return a }
        var sum = a
        switch (a.value, b.value) {
        case (.count(let x), .count(let y)): sum.value = .count(x + y)
        case (.counts(let x), .counts(let y)) where x.count == y.count: sum.value = .counts(zip(x, y).map(+))
        default: break
        }
        return sum
    }
}

extension Array where Element == DesignFigure {
    /// The figure named `name`, if the design reported one.
    public subscript(named name: String) -> DesignFigure? {
        first { $0.name == name }
    }
}
