/// The median of a sample and its spread: minimum, maximum and the
/// interquartile range. Quartiles interpolate linearly between order
/// statistics (position p * (n - 1) of the sorted sample), so a sample of one
/// has all five figures equal and the figures never depend on input order.
public struct Spread: Sendable, Hashable {
    public let count: Int
    public let minimum: Double
    public let lowerQuartile: Double
    public let median: Double
    public let upperQuartile: Double
    public let maximum: Double

    /// The spread of the finite values of `values`; nil when there are none.
    public init?(_ values: [Double]) {
        let sorted = values.filter(\.isFinite).sorted()
        guard !sorted.isEmpty else { return nil }
        func quantile(_ p: Double) -> Double {
            let position = p * Double(sorted.count - 1)
            let low = Int(position.rounded(.down))
            let high = min(low + 1, sorted.count - 1)
            let weight = position - Double(low)
            return sorted[low] + (sorted[high] - sorted[low]) * weight
        }
        count = sorted.count
        minimum = sorted[0]
        maximum = sorted[sorted.count - 1]
        lowerQuartile = quantile(0.25)
        median = quantile(0.5)
        upperQuartile = quantile(0.75)
    }

    /// The interquartile range as fractions of the median below and above it:
    /// the larger of (median - Q1) / median and (Q3 - median) / median.
    public var quartileDeviation: Double {
        guard median != 0 else { return .infinity }
        return max(median - lowerQuartile, upperQuartile - median) / abs(median)
    }

    /// Whether the interquartile range lies within +-`fraction` of the median.
    public func quartilesWithin(_ fraction: Double) -> Bool { quartileDeviation <= fraction }
}
