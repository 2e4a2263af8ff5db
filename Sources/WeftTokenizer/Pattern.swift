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
    /// `foldsLongS`: the contractions are `(?i:...)` as in tokenizer.json, where
    /// U+017F folds to `s`; llama.cpp's `'[sS]` spelling does not fold it.
    case llama3(maxDigits: Int, foldsLongS: Bool)
    /// llama.cpp's `tekken` regex (Mistral Nemo; single digits, no contractions) or
    /// its `gpt-4o` regex (digits in threes, contractions after words), hand-written.
    case tekken(contractions: Bool, maxDigits: Int)
    /// `X+`, or `X{length}` (non-overlapping, from the left) for one code point class.
    case runs(ScalarSet, length: Int?)
    /// Any other regex, run by Swift's regex engine on code points.
    case regex(CompiledRegex)

    /// Builds a pattern from a regex source, recognising the well-known ones.
    static func fromRegex(_ source: String, node: JSONNode) throws -> TextPattern {
        // Compare code points exactly (Swift `==` is canonical equivalence).
        if source.unicodeScalars.elementsEqual(gpt2SplitPattern.unicodeScalars) { return .gpt2 }
        if source.unicodeScalars.elementsEqual(llama3SplitPattern.unicodeScalars) {
            return .llama3(maxDigits: 3, foldsLongS: true)
        }
        if source.unicodeScalars.elementsEqual(qwen2SplitPattern.unicodeScalars) {
            return .llama3(maxDigits: 1, foldsLongS: true)
        }
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
        case .llama3(let maxDigits, let foldsLongS):
            return Self.scalarRangesToBytes(bytes) {
                SplitRules.llama3($0, maxDigits: maxDigits, foldsLongS: foldsLongS)
            }
        case .tekken(let contractions, let maxDigits):
            return Self.scalarRangesToBytes(bytes) {
                SplitRules.tekken($0, contractions: contractions, maxDigits: maxDigits)
            }
        case .runs(let set, let length):
            return Self.scalarRangesToBytes(bytes) { SplitRules.runs($0, set, length: length) }
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
    static func llama3(_ table: ScalarTable, maxDigits: Int, foldsLongS: Bool) -> [Range<Int>] {
        segments(table) { s, cls, n, i in llama3Match(s, cls, n, i, maxDigits, foldsLongS) }
    }

    /// Simple case folding for the letters used by the contraction alternatives.
    @inline(__always)
    private static func fold(_ c: UInt32, _ foldsLongS: Bool) -> UInt32 {
        if c >= 0x41 && c <= 0x5A { return c + 0x20 }
        if c == 0x17F && foldsLongS { return 0x73 }  // LATIN SMALL LETTER LONG S folds to 's'
        return c
    }

    @inline(__always)
    private static func llama3Match(
        _ s: [UInt32], _ cls: [UInt8], _ n: Int, _ i: Int, _ maxDigits: Int, _ foldsLongS: Bool
    ) -> Int {
        let c = s[i]
        let ci = cls[i]
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == 0x27 && i + 1 < n {
            let c1 = fold(s[i + 1], foldsLongS)
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return i + 2 }
            if i + 2 < n {
                let c2 = fold(s[i + 2], foldsLongS)
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

/// A class of code points for `TextPattern.runs`.
enum ScalarSet: Sendable {
    /// `\p{N}`.
    case number
    /// `[0-9]`.
    case asciiDigit
    /// `[\p{P}\$\+<=>\^~\|]` (llama.cpp's default pre-tokenizer).
    case punctuationAndOperators

    func contains(_ code: UInt32) -> Bool {
        switch self {
        case .number:
            return CharClass.classify(code) & CharClass.number != 0
        case .asciiDigit:
            return code >= 0x30 && code <= 0x39
        case .punctuationAndOperators:
            switch code {
            case 0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C: return true  // $ + < = > ^ ~ |
            default: break
            }
            guard let scalar = Unicode.Scalar(code) else { return false }
            switch scalar.properties.generalCategory {
            case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
                .initialPunctuation, .finalPunctuation, .otherPunctuation:
                return true
            default:
                return false
            }
        }
    }
}

extension SplitRules {
    /// `X+` or `X{length}` matches, in code point indices (the text between them is not matched).
    static func runs(_ table: ScalarTable, _ set: ScalarSet, length: Int?) -> [Range<Int>] {
        let s = table.codes
        var result: [Range<Int>] = []
        var i = 0
        while i < s.count {
            guard set.contains(s[i]) else {
                i += 1
                continue
            }
            var end = i + 1
            while end < s.count && set.contains(s[end]) { end += 1 }
            if let length {
                var start = i
                while start + length <= end {
                    result.append(start..<(start + length))
                    start += length
                }
            } else {
                result.append(i..<end)
            }
            i = end
        }
        return result
    }

    /// llama.cpp's `tekken` regex, as its std::regex runs it on "collapsed" text
    /// (every non-ASCII letter counts as both upper and lower case, marks are not letters):
    /// `[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+C`
    /// `|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*C`
    /// `|\p{N}{1,maxDigits}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
    /// where C is empty, or with `contractions` (llama.cpp's `gpt-4o` regex)
    /// `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?`.
    /// Every position matches, so the result covers the input.
    static func tekken(_ table: ScalarTable, contractions: Bool, maxDigits: Int) -> [Range<Int>] {
        let s = table.codes
        let cls = s.map { CharClass.classify($0) }
        let n = s.count
        let L = CharClass.letter, N = CharClass.number, S = CharClass.space, NL = CharClass.newline
        // "Upper": a letter other than a-z; "lower": a letter other than A-Z.
        func upper(_ k: Int) -> Bool { k < n && cls[k] & L != 0 && !(s[k] >= 0x61 && s[k] <= 0x7A) }
        func lower(_ k: Int) -> Bool { k < n && cls[k] & L != 0 && !(s[k] >= 0x41 && s[k] <= 0x5A) }
        func isOther(_ k: Int) -> Bool { k < n && cls[k] & (L | N | S) == 0 }
        // The optional contraction after a word.
        func contraction(_ e: Int) -> Int {
            guard contractions, e + 1 < n, s[e] == 0x27 else { return e }
            func lower(_ c: UInt32) -> UInt32 { c >= 0x41 && c <= 0x5A ? c + 0x20 : c }
            let c1 = lower(s[e + 1])
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return e + 2 }  // s t m d
            if e + 2 < n {
                let c2 = lower(s[e + 2])
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                    return e + 3  // re ve ll
                }
            }
            return e
        }
        // upper* lower+ from `start` (greedy, backtracking into upper*).
        func upperThenLower(_ start: Int) -> Int? {
            var u = start
            while upper(u) { u += 1 }
            var k = u
            while k >= start {
                if lower(k) {
                    var e = k + 1
                    while lower(e) { e += 1 }
                    return contraction(e)
                }
                k -= 1
            }
            return nil
        }
        // upper+ lower* from `start`.
        func upperAndLower(_ start: Int) -> Int? {
            var u = start
            while upper(u) { u += 1 }
            guard u > start else { return nil }
            while lower(u) { u += 1 }
            return contraction(u)
        }
        var result: [Range<Int>] = []
        var i = 0
        while i < n {
            let ci = cls[i]
            let prefix = ci & (L | N | NL) == 0  // [^\r\n\p{L}\p{N}]
            var end: Int? = nil
            if prefix { end = upperThenLower(i + 1) }
            if end == nil { end = upperThenLower(i) }
            if end == nil, prefix { end = upperAndLower(i + 1) }
            if end == nil { end = upperAndLower(i) }
            if end == nil, ci & N != 0 {
                var j = i + 1
                while j < n && j - i < maxDigits && cls[j] & N != 0 { j += 1 }
                end = j
            }
            if end == nil {
                // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
                let start = (s[i] == 0x20 && isOther(i + 1)) ? i + 1 : i
                if isOther(start) {
                    var j = start + 1
                    while isOther(j) { j += 1 }
                    while j < n && (cls[j] & NL != 0 || s[j] == 0x2F) { j += 1 }
                    end = j
                }
            }
            if end == nil {
                // Whitespace at i: \s*[\r\n]+ | \s+(?!\S) | \s+
                var e = i + 1
                while e < n && cls[e] & S != 0 { e += 1 }
                var lastNewline = -1
                for k in i..<e where cls[k] & NL != 0 { lastNewline = k }
                if lastNewline >= 0 {
                    end = lastNewline + 1
                } else if e == n || e - 1 == i {
                    end = e
                } else {
                    end = e - 1
                }
            }
            result.append(i..<end!)
            i = end!
        }
        return result
    }
}
