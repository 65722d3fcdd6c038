import Foundation
import Testing

/// The JSON array a `txsim ... --json` run printed: from its first `[` on
/// (standard error, merged into the output, may come before it), one
/// dictionary per object.
func jsonObjects(_ outcome: Outcome) throws -> [[String: Any]] {
    let start = outcome.output.firstIndex(of: "[") ?? outcome.output.startIndex
    return try #require(try JSONSerialization.jsonObject(with: Data(outcome.output[start...].utf8)) as? [[String: Any]],
                        "not a JSON array of objects: \(outcome.output)")
}
