/// The tokens of one forward pass: several sequences' tokens concatenated,
/// each sequence contributing a contiguous span at its own positions (a
/// prefill chunk, or one decode token). This is the unit the runtime
/// schedules and that token splitting later cuts in two.
public struct FlatBatch: Sendable, Equatable {
    /// Which rows of a span need logits.
    public enum Logits: Int32, Sendable {
        case none = 0, last = 1, all = 2
    }

    public struct Span: Sendable, Equatable {
        /// The sequence (its KV cache entry).
        public var sequence: Int
        /// Rows of this span in the batch.
        public var rows: Range<Int>
        /// Position of the span's first token in its sequence.
        public var firstPosition: Int
        public var logits: Logits
    }

    public private(set) var tokens: [Int32] = []
    public private(set) var positions: [Int32] = []
    public private(set) var spans: [Span] = []

    public init() {}

    public var count: Int { tokens.count }
    public var isEmpty: Bool { tokens.isEmpty }

    /// Appends `tokens` of `sequence` at positions firstPosition, firstPosition+1, ….
    public mutating func append(sequence: Int, tokens newTokens: [Int32], firstPosition: Int, logits: Logits = .last) {
        precondition(!newTokens.isEmpty, "a span needs at least one token")
        let start = tokens.count
        tokens += newTokens
        positions += (0..<newTokens.count).map { Int32(firstPosition + $0) }
        spans.append(Span(sequence: sequence, rows: start..<tokens.count, firstPosition: firstPosition, logits: logits))
    }

    /// Rows whose logits the caller asked for, in batch order.
    public var logitRows: [Int] {
        spans.flatMap { span -> [Int] in
            switch span.logits {
            case .none: return []
            case .last: return [span.rows.upperBound - 1]
            case .all: return Array(span.rows)
            }
        }
    }

    /// Batch row → span index.
    public var spanOfRow: [Int] {
        var result = [Int](repeating: 0, count: count)
        for (index, span) in spans.enumerated() { for row in span.rows { result[row] = index } }
        return result
    }

    // MARK: Wire format (the step plan every rank receives)

    /// Flattens the batch into integers for a broadcast.
    public func encoded() -> [Int32] {
        var out: [Int32] = [Int32(spans.count)]
        for span in spans {
            out += [Int32(span.sequence), Int32(span.firstPosition), span.logits.rawValue, Int32(span.rows.count)]
            out += tokens[span.rows]
        }
        return out
    }

    public init(encoded: [Int32]) throws {
        var i = 0
        func next() throws -> Int32 {
            guard i < encoded.count else { throw ModelError.input("truncated batch encoding") }
            defer { i += 1 }
            return encoded[i]
        }
        let spanCount = Int(try next())
        // Every span takes at least five integers: refuse counts the message cannot hold.
        guard spanCount >= 0, spanCount <= encoded.count / 5 else { throw ModelError.input("bad span count \(spanCount) in batch encoding") }
        for _ in 0..<spanCount {
            let sequence = Int(try next()), first = Int(try next())
            guard sequence >= 0 else { throw ModelError.input("bad sequence id \(sequence) in batch encoding") }
            guard let logits = Logits(rawValue: try next()) else { throw ModelError.input("bad logits flag in batch encoding") }
            let n = Int(try next())
            guard n > 0, n <= encoded.count - i else { throw ModelError.input("bad span length in batch encoding") }
            // Positions are Int32 on the wire and in the cache.
            guard first >= 0, first <= Int(Int32.max) - n else { throw ModelError.input("bad first position \(first) in batch encoding") }
            append(sequence: sequence, tokens: Array(encoded[i..<i + n]), firstPosition: first, logits: logits)
            i += n
        }
    }
}
