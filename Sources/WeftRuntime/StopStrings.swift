/// Streams generated text while watching for stop strings (OpenAI's `stop`).
///
/// Text that might be the start of a stop string is held back until the next
/// token decides: a stop string split across tokens is still caught, and the
/// client never receives any part of it. On a match, the text before the stop
/// string is released and the stream ends.
public struct StopStringFilter: Sendable {
    public let stops: [String]
    /// Text received but not yet released.
    private var pending = ""

    public init(stops: [String]) {
        self.stops = stops.filter { !$0.isEmpty }
    }

    /// Adds decoded text; returns what may be released now and whether a stop
    /// string was found (then nothing more should be generated).
    public mutating func push(_ text: String) -> (release: String, stopped: Bool) {
        guard !stops.isEmpty else { return (text, false) }
        pending += text
        // Stops can only begin inside `pending`: everything released before
        // could not have been the start of one.
        var earliest: Range<String.Index>?
        for stop in stops {
            if let range = pending.range(of: stop), earliest == nil || range.lowerBound < earliest!.lowerBound {
                earliest = range
            }
        }
        if let earliest {
            let release = String(pending[..<earliest.lowerBound])
            pending = ""
            return (release, true)
        }
        // Hold back the longest suffix that is a proper prefix of some stop.
        var held = 0
        for length in stride(from: pending.count, through: 1, by: -1) {
            let suffix = pending.suffix(length)
            if stops.contains(where: { $0.count > length && $0.hasPrefix(suffix) }) {
                held = length
                break
            }
        }
        let release = String(pending.dropLast(held))
        pending = String(pending.suffix(held))
        return (release, false)
    }

    /// The stream ended without a stop string: releases what was held back.
    public mutating func flush() -> String {
        defer { pending = "" }
        return pending
    }
}
