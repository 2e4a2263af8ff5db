import Foundation

/// The GPT-2 split regex used by the `ByteLevel` pre-tokenizer when `use_regex` is true.
let gpt2SplitPattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
/// The Llama 3 split regex.
let llama3SplitPattern =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
/// The Qwen2 split regex (Llama 3's with single digits).
let qwen2SplitPattern =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

/// A compiled Swift regex. `Regex` values are immutable once built; the box only
/// exists to carry one across concurrency domains.
final class CompiledRegex: @unchecked Sendable {
    let pattern: String
    let regex: Regex<AnyRegexOutput>

    init(pattern: String) throws {
        self.pattern = pattern
        // Oniguruma (used by Hugging Face) matches code points, not grapheme clusters.
        self.regex = try Regex(pattern).matchingSemantics(.unicodeScalar)
        // Force the lazy compilation now, before the value is shared.
        _ = "warm up".firstMatch(of: regex)
    }

    /// Byte ranges of all non-overlapping matches in `bytes` (valid UTF-8).
    func matches(in bytes: [UInt8]) -> [Range<Int>] {
        let string = String(decoding: bytes, as: UTF8.self)
        let utf8 = string.utf8
        var result: [Range<Int>] = []
        for match in string.matches(of: regex) {
            let lower = utf8.distance(from: utf8.startIndex, to: match.range.lowerBound)
            let upper = utf8.distance(from: utf8.startIndex, to: match.range.upperBound)
            result.append(lower..<upper)
        }
        return result
    }
}

/// A pattern as used by `Split`, `Replace` (normalizer and decoder).
enum TextPattern: Sendable {
    /// A literal string.
    case literal([UInt8])
    /// The GPT-2 regex, hand-written.
    case gpt2
    /// The Llama 3 (maxDigits 3) or Qwen2 (maxDigits 1) regex, hand-written.
    case llama3(maxDigits: Int)
    /// Any other regex, run by Swift's regex engine on code points.
    case regex(CompiledRegex)

    /// Builds a pattern from a regex source, recognising the well-known ones.
    static func fromRegex(_ source: String, node: JSONNode) throws -> TextPattern {
        // Compare code points exactly (Swift `==` is canonical equivalence).
        if source.unicodeScalars.elementsEqual(gpt2SplitPattern.unicodeScalars) { return .gpt2 }
        if source.unicodeScalars.elementsEqual(llama3SplitPattern.unicodeScalars) { return .llama3(maxDigits: 3) }
        if source.unicodeScalars.elementsEqual(qwen2SplitPattern.unicodeScalars) { return .llama3(maxDigits: 1) }
        do {
            return .regex(try CompiledRegex(pattern: source))
        } catch {
            throw node.error("cannot compile regex \(source.debugDescription): \(error)", kind: .unsupported)
        }
    }

    /// Parses `{"String": "..."}` or `{"Regex": "..."}`.
    static func parse(_ node: JSONNode) throws -> TextPattern {
        if node["String"].exists {
            return .literal(Array(try node["String"].string().utf8))
        }
        if node["Regex"].exists {
            return try fromRegex(try node["Regex"].string(), node: node["Regex"])
        }
        if case .string(let s)? = node.value {
            // Be lenient with a bare string.
            return .literal(Array(s.utf8))
        }
        throw node.error(#"expected {"String": ...} or {"Regex": ...}"#)
    }

    /// Byte ranges of all non-overlapping matches, in order.
    func matches(in bytes: [UInt8]) -> [Range<Int>] {
        switch self {
        case .literal(let needle):
            return findOccurrences(of: needle, in: bytes)
        case .gpt2:
            return Self.scalarRangesToBytes(bytes) { SplitRules.gpt2($0) }
        case .llama3(let maxDigits):
            return Self.scalarRangesToBytes(bytes) { SplitRules.llama3($0, maxDigits: maxDigits) }
        case .regex(let regex):
            return regex.matches(in: bytes)
        }
    }

    /// Replaces every match with `replacement`.
    func replace(in bytes: [UInt8], with replacement: [UInt8]) -> [UInt8] {
        switch self {
        case .literal(let needle):
            return replaceOccurrences(of: needle, with: replacement, in: bytes)
        default:
            let ranges = matches(in: bytes)
            if ranges.isEmpty { return bytes }
            var out: [UInt8] = []
            var last = 0
            for r in ranges {
                out.append(contentsOf: bytes[last..<r.lowerBound])
                out.append(contentsOf: replacement)
                last = r.upperBound
            }
            out.append(contentsOf: bytes[last...])
            return out
        }
    }

    private static func scalarRangesToBytes(
        _ bytes: [UInt8], _ split: (ScalarTable) -> [Range<Int>]
    ) -> [Range<Int>] {
        let table = ScalarTable(bytes)
        return split(table).map { table.offsets[$0.lowerBound]..<table.offsets[$0.upperBound] }
    }
}

/// Hand-written equivalents of the GPT-2 and Llama 3 split regexes. Both
/// regexes match at every position (every code point is a letter, a number,
/// whitespace, or "other"), so the result covers the whole input. Ranges are
/// in code point indices.
enum SplitRules {
    private static let L = CharClass.letter
    private static let N = CharClass.number
    private static let S = CharClass.space
    private static let NL = CharClass.newline

    private static func classes(_ codes: [UInt32]) -> [UInt8] {
        codes.map { CharClass.classify($0) }
    }

    @inline(__always)
    private static func isOther(_ c: UInt8) -> Bool { c & (L | N | S) == 0 }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    static func gpt2(_ table: ScalarTable) -> [Range<Int>] {
        segments(table) { s, cls, n, i in gpt2Match(s, cls, n, i) }
    }

    /// Cuts the text into consecutive matches: `match` gives the end of the
    /// match that starts at i (these patterns match every position).
    @inline(__always)
    private static func segments(_ table: ScalarTable, _ match: ([UInt32], [UInt8], Int, Int) -> Int) -> [Range<Int>] {
        let s = table.codes
        let cls = classes(s)
        let n = s.count
        var result: [Range<Int>] = []
        result.reserveCapacity(n / 3 + 1)
        var i = 0
        while i < n {
            let end = match(s, cls, n, i)
            result.append(i..<end)
            i = end
        }
        return result
    }

    @inline(__always)
    private static func gpt2Match(_ s: [UInt32], _ cls: [UInt8], _ n: Int, _ i: Int) -> Int {
        let c = s[i]
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == 0x27 && i + 1 < n {
            let c1 = s[i + 1]
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 }  // s t m d
            if i + 2 < n {
                let c2 = s[i + 2]
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                    return i + 3  // re ve ll
                }
            }
        }
        // ` ?X+` for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]
        var start = i
        if c == 0x20 && i + 1 < n { start = i + 1 }
        let first = cls[start]
        if start == i + 1 && first & S != 0 {
            start = i  // a space followed by whitespace: no optional-space alternative applies
        }
        let c0 = cls[start]
        if c0 & L != 0 {
            var j = start + 1
            while j < n && cls[j] & L != 0 { j += 1 }
            return j
        }
        if c0 & N != 0 {
            var j = start + 1
            while j < n && cls[j] & N != 0 { j += 1 }
            return j
        }
        if isOther(c0) {
            var j = start + 1
            while j < n && isOther(cls[j]) { j += 1 }
            return j
        }
        // Whitespace at i: \s+(?!\S) | \s+
        var e = i + 1
        while e < n && cls[e] & S != 0 { e += 1 }
        if e == n { return e }
        if e - 1 > i { return e - 1 }
        return e
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    static func llama3(_ table: ScalarTable, maxDigits: Int) -> [Range<Int>] {
        segments(table) { s, cls, n, i in llama3Match(s, cls, n, i, maxDigits) }
    }

    /// Simple case folding for the letters used by the contraction alternatives.
    @inline(__always)
    private static func fold(_ c: UInt32) -> UInt32 {
        if c >= 0x41 && c <= 0x5A { return c + 0x20 }
        if c == 0x17F { return 0x73 }  // LATIN SMALL LETTER LONG S folds to 's'
        return c
    }

    @inline(__always)
    private static func llama3Match(_ s: [UInt32], _ cls: [UInt8], _ n: Int, _ i: Int, _ maxDigits: Int) -> Int {
        let c = s[i]
        let ci = cls[i]
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == 0x27 && i + 1 < n {
            let c1 = fold(s[i + 1])
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 }
            if i + 2 < n {
                let c2 = fold(s[i + 2])
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                    return i + 3
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if ci & L != 0 {
            var j = i + 1
            while j < n && cls[j] & L != 0 { j += 1 }
            return j
        }
        if ci & (N | NL) == 0 && i + 1 < n && cls[i + 1] & L != 0 {
            var j = i + 2
            while j < n && cls[j] & L != 0 { j += 1 }
            return j
        }
        // \p{N}{1,maxDigits}
        if ci & N != 0 {
            var j = i + 1
            while j < n && j - i < maxDigits && cls[j] & N != 0 { j += 1 }
            return j
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        var start = -1
        if isOther(ci) {
            start = i
        } else if c == 0x20 && i + 1 < n && isOther(cls[i + 1]) {
            start = i + 1
        }
        if start >= 0 {
            var j = start + 1
            while j < n && isOther(cls[j]) { j += 1 }
            while j < n && cls[j] & NL != 0 { j += 1 }
            return j
        }
        // Whitespace at i.
        var e = i + 1
        while e < n && cls[e] & S != 0 { e += 1 }
        // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
        var k = e - 1
        while k >= i {
            if cls[k] & NL != 0 { return k + 1 }
            k -= 1
        }
        // \s+(?!\S) | \s+
        if e == n { return e }
        if e - 1 > i { return e - 1 }
        return e
    }
}
