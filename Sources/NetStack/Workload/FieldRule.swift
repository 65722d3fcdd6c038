/// How one field of a record of figures adds up with the same field of
/// another: summed (counters, seconds), the larger kept (peaks), or the first
/// one kept (the first problem seen). A record's list of rules is the one
/// place its fields are named: its `+` and `TransmitResult.aggregate` are
/// made from that list, and a test checks that the list names every stored
/// field (`Mirror`), so a new counter cannot be left out of the sums.
struct FieldRule<Record> {
    /// The field, for the coverage check.
    let field: PartialKeyPath<Record>
    let combine: (inout Record, Record) -> Void

    /// Summed: counters, bytes, seconds.
    static func sum<Value: AdditiveArithmetic>(_ field: WritableKeyPath<Record, Value>) -> FieldRule {
        FieldRule(field: field) { $0[keyPath: field] += $1[keyPath: field] }
    }

    /// The larger kept: high-water marks.
    static func maximum<Value: Comparable>(_ field: WritableKeyPath<Record, Value>) -> FieldRule {
        FieldRule(field: field) { $0[keyPath: field] = Swift.max($0[keyPath: field], $1[keyPath: field]) }
    }

    /// The first one that is set kept: the first problem seen.
    static func first<Value>(_ field: WritableKeyPath<Record, Value?>) -> FieldRule {
        FieldRule(field: field) { $0[keyPath: field] = $0[keyPath: field] ?? $1[keyPath: field] }
    }

    /// A rule of the field's own (design figures add figure by figure).
    static func combining<Value>(_ field: WritableKeyPath<Record, Value>, _ add: @escaping (Value, Value) -> Value) -> FieldRule {
        FieldRule(field: field) { $0[keyPath: field] = add($0[keyPath: field], $1[keyPath: field]) }
    }

    /// The field's name (`frames` for `\TXQueueStatistics.frames`).
    var name: String { Self.name(of: field) }

    static func name(of field: PartialKeyPath<Record>) -> String {
        let path = String(describing: field)
        return path.split(separator: ".").last.map(String.init) ?? path
    }
}

extension Array {
    /// `a` with `b` added in, field by field, by these rules.
    func combine<Record>(_ a: Record, _ b: Record) -> Record where Element == FieldRule<Record> {
        var sum = a
        for rule in self { rule.combine(&sum, b) }
        return sum
    }
}
