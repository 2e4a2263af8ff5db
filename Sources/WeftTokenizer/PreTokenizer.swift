/// A piece of text flowing through the pre-tokenizers: UTF-8 bytes plus
/// whether it starts at offset 0 of the original input (needed by
/// `Metaspace` with `prepend_scheme: "first"`).
struct PreToken {
    var bytes: [UInt8]
    var atStart: Bool
}

/// Hugging Face `SplitDelimiterBehavior`.
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"

    /// Turns the matched ranges of `count` bytes into the pieces to keep,
    /// exactly like `NormalizedString::split` (empty pieces dropped).
    func pieces(matches: [Range<Int>], count: Int, invert: Bool = false) -> [Range<Int>] {
        // 1. Cover the whole input with (range, isMatch) events.
        var events: [(range: Range<Int>, isMatch: Bool)] = []
        events.reserveCapacity(matches.count * 2 + 1)
        var previous = 0
        for m in matches {
            if previous != m.lowerBound { events.append((previous..<m.lowerBound, false)) }
            events.append((m, true))
            previous = m.upperBound
        }
        if previous != count { events.append((previous..<count, false)) }
        if invert {
            for i in events.indices { events[i].isMatch.toggle() }
        }

        // 2. Apply the behaviour.
        var out: [(range: Range<Int>, isMatch: Bool)] = []
        out.reserveCapacity(events.count)
        switch self {
        case .removed:
            out = events.filter { !$0.isMatch }
        case .isolated:
            out = events
        case .mergedWithPrevious:
            var previousMatch = false
            for e in events {
                if e.isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1].range = last.range.lowerBound..<e.range.upperBound
                } else {
                    out.append(e)
                }
                previousMatch = e.isMatch
            }
        case .mergedWithNext:
            var previousMatch = false
            for e in events.reversed() {
                if e.isMatch && !previousMatch, let last = out.last {
                    out[out.count - 1].range = e.range.lowerBound..<last.range.upperBound
                } else {
                    out.append(e)
                }
                previousMatch = e.isMatch
            }
            out.reverse()
        case .contiguous:
            var previousMatch = false
            for e in events {
                if e.isMatch == previousMatch, let last = out.last {
                    out[out.count - 1].range = last.range.lowerBound..<e.range.upperBound
                } else {
                    out.append(e)
                }
                previousMatch = e.isMatch
            }
        }
        return out.compactMap { $0.range.isEmpty ? nil : $0.range }
    }
}

/// Metaspace `prepend_scheme`.
enum PrependScheme: String, Sendable {
    case first, always, never
}

/// The settings a Metaspace pre-tokenizer and decoder share: the replacement
/// character (default ▁) and the prepend scheme (`prepend_scheme`, or the
/// older `add_prefix_space` flag).
func parseMetaspace(_ node: JSONNode) throws -> (replacement: Unicode.Scalar, scheme: PrependScheme) {
    let replacement = try node["replacement"].optionalString() ?? "\u{2581}"
    guard replacement.unicodeScalars.count == 1, let scalar = replacement.unicodeScalars.first else {
        throw node["replacement"].error("expected a single character")
    }
    if let name = try node["prepend_scheme"].optionalString() {
        guard let scheme = PrependScheme(rawValue: name) else {
            throw node["prepend_scheme"].error("expected \"first\", \"always\" or \"never\"")
        }
        return (scalar, scheme)
    }
    return (scalar, try node["add_prefix_space"].bool(default: true) ? .always : .never)
}

/// The supported pre-tokenizers.
indirect enum PreTokenizer: Sendable {
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(pattern: TextPattern, behavior: SplitBehavior, invert: Bool)
    case metaspace(replacement: [UInt8], prependScheme: PrependScheme, split: Bool)
    case digits(individual: Bool)
    case sequence([PreTokenizer])

    static let supported = "ByteLevel, Split, Metaspace, Digits, Sequence"

    static func parse(_ node: JSONNode) throws -> PreTokenizer? {
        if node.isNull { return nil }
        let type = try node["type"].string()
        switch type {
        case "ByteLevel":
            return .byteLevel(
                addPrefixSpace: try node["add_prefix_space"].bool(default: true),
                useRegex: try node["use_regex"].bool(default: true))
        case "Split":
            let behaviorName = try node["behavior"].string()
            guard let behavior = SplitBehavior(rawValue: behaviorName) else {
                throw node["behavior"].error("unsupported split behavior \(behaviorName.debugDescription)")
            }
            return .split(
                pattern: try TextPattern.parse(node["pattern"]), behavior: behavior,
                invert: try node["invert"].bool(default: false))
        case "Metaspace":
            let (replacement, scheme) = try parseMetaspace(node)
            return .metaspace(
                replacement: Array(String(replacement).utf8), prependScheme: scheme,
                split: try node["split"].bool(default: true))
        case "Digits":
            return .digits(individual: try node["individual_digits"].bool(default: false))
        case "Sequence":
            let items = try node["pretokenizers"].array()
            return .sequence(try items.map { item in
                guard let p = try parse(item) else { throw item.error("expected a pre-tokenizer") }
                return p
            })
        default:
            throw node["type"].error(
                "unsupported pre-tokenizer \(type.debugDescription) (supported: \(supported))", kind: .unsupported)
        }
    }

    /// Runs this pre-tokenizer over every piece.
    func apply(_ pieces: [PreToken]) -> [PreToken] {
        switch self {
        case .sequence(let items):
            var current = pieces
            for item in items { current = item.apply(current) }
            return current
        default:
            var out: [PreToken] = []
            out.reserveCapacity(pieces.count)
            for piece in pieces { apply(piece, into: &out) }
            return out
        }
    }

    private func emit(_ piece: PreToken, _ ranges: [Range<Int>], into out: inout [PreToken]) {
        if ranges.count == 1 && ranges[0].count == piece.bytes.count {
            out.append(piece)
            return
        }
        for r in ranges {
            out.append(PreToken(bytes: Array(piece.bytes[r]), atStart: piece.atStart && r.lowerBound == 0))
        }
    }

    private func apply(_ piece: PreToken, into out: inout [PreToken]) {
        switch self {
        case .byteLevel(let addPrefixSpace, let useRegex):
            var bytes = piece.bytes
            if addPrefixSpace && bytes.first != 0x20 { bytes.insert(0x20, at: 0) }
            if useRegex {
                for r in TextPattern.gpt2.matches(in: bytes) where !r.isEmpty {
                    out.append(
                        PreToken(
                            bytes: ByteLevelMapping.encode(Array(bytes[r])),
                            atStart: piece.atStart && r.lowerBound == 0))
                }
            } else if !bytes.isEmpty {
                out.append(PreToken(bytes: ByteLevelMapping.encode(bytes), atStart: piece.atStart))
            }
        case .split(let pattern, let behavior, let invert):
            let ranges = behavior.pieces(
                matches: pattern.matches(in: piece.bytes), count: piece.bytes.count, invert: invert)
            emit(piece, ranges, into: &out)
        case .metaspace(let replacement, let scheme, let split):
            var bytes = replaceOccurrences(of: [0x20], with: replacement, in: piece.bytes)
            let startsWithReplacement = bytes.starts(with: replacement)
            switch scheme {
            case .always where !startsWithReplacement,
                .first where !startsWithReplacement && piece.atStart:
                bytes.insert(contentsOf: replacement, at: 0)
            default:
                break
            }
            let p = PreToken(bytes: bytes, atStart: piece.atStart)
            if split {
                let ranges = SplitBehavior.mergedWithNext.pieces(
                    matches: findOccurrences(of: replacement, in: bytes), count: bytes.count)
                emit(p, ranges, into: &out)
            } else if !bytes.isEmpty {
                out.append(p)
            }
        case .digits(let individual):
            let table = ScalarTable(piece.bytes)
            var matches: [Range<Int>] = []
            for (i, code) in table.codes.enumerated() where CharClass.isNumeric(code) {
                matches.append(table.offsets[i]..<table.offsets[i + 1])
            }
            let ranges = (individual ? SplitBehavior.isolated : .contiguous).pieces(
                matches: matches, count: piece.bytes.count)
            emit(piece, ranges, into: &out)
        case .sequence(let items):
            var current = [piece]
            for item in items { current = item.apply(current) }
            out.append(contentsOf: current)
        }
    }
}
