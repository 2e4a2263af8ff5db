/// An entry of `added_tokens` in tokenizer.json.
struct AddedToken: Sendable {
    var id: Int
    var content: String
    var singleWord: Bool
    var lstrip: Bool
    var rstrip: Bool
    var normalized: Bool
    var special: Bool

    /// Content and flags without the id (HF's `AddedToken` equality).
    struct Definition: Equatable {
        var content: [UInt8]
        var flags: [Bool]

        init(_ token: AddedToken) {
            content = Array(token.content.utf8)
            flags = [token.singleWord, token.lstrip, token.rstrip, token.normalized, token.special]
        }
    }

    /// Parses an `added_tokens` entry; nil for an empty content (HF ignores those).
    /// `id` is the id written in the file (-1 when absent), checked to be a
    /// non-negative Int32; the tokenizer then checks it is the id the token gets.
    static func parse(_ node: JSONNode) throws -> AddedToken? {
        let special = try node["special"].bool(default: false)
        let content = try node["content"].string()
        if content.isEmpty { return nil }
        let id = try node["id"].optionalInt()
        if let id, id < 0 || id >= Int(Int32.max) {
            throw node["id"].error("expected a token id in 0...\(Int32.max - 1), found \(id)")
        }
        return AddedToken(
            id: id ?? -1,
            content: content,
            singleWord: try node["single_word"].bool(default: false),
            lstrip: try node["lstrip"].bool(default: false),
            rstrip: try node["rstrip"].bool(default: false),
            normalized: try node["normalized"].bool(default: !special),
            special: special)
    }
}

/// A piece of input after added-token extraction.
enum Segment: Equatable {
    case text(Range<Int>)
    case token(Int)
}

/// Finds added tokens in text like Hugging Face's `AddedVocabulary::find_matches`
/// (Aho-Corasick, leftmost-longest, non-overlapping, then the single_word /
/// lstrip / rstrip rules).
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        var id: Int
        var singleWord: Bool
        var lstrip: Bool
        var rstrip: Bool
    }

    // Byte trie: children[node] maps a byte to a child node; terminal[node] is a pattern index or -1.
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Int32] = [-1]
    private var patterns: [Pattern] = []
    private var firstBytes = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { patterns.isEmpty }

    init(tokens: [(bytes: [UInt8], token: AddedToken)]) {
        for (bytes, token) in tokens where !bytes.isEmpty {
            var node = 0
            for b in bytes {
                if let next = children[node][b] {
                    node = Int(next)
                } else {
                    children.append([:])
                    terminal.append(-1)
                    let next = children.count - 1
                    children[node][b] = Int32(next)
                    node = next
                }
            }
            // First pattern wins on duplicates (HF deduplicates by content).
            if terminal[node] < 0 {
                terminal[node] = Int32(patterns.count)
                patterns.append(
                    Pattern(id: token.id, singleWord: token.singleWord, lstrip: token.lstrip, rstrip: token.rstrip))
            }
            firstBytes[Int(bytes[0])] = true
        }
    }

    /// Longest pattern match starting at `start`: (pattern index, end).
    private func longestMatch(_ bytes: [UInt8], at start: Int) -> (Int, Int)? {
        var node = 0
        var best: (Int, Int)? = nil
        var i = start
        while i < bytes.count, let next = children[node][bytes[i]] {
            node = Int(next)
            i += 1
            if terminal[node] >= 0 { best = (Int(terminal[node]), i) }
        }
        return best
    }

    /// Splits `bytes` into text ranges and added-token ids. Empty text ranges are omitted.
    func split(_ bytes: [UInt8]) -> [Segment] {
        guard !patterns.isEmpty, !bytes.isEmpty else { return bytes.isEmpty ? [] : [.text(0..<bytes.count)] }
        var segments: [Segment] = []
        var startOffset = 0
        var i = 0
        while i < bytes.count {
            guard firstBytes[Int(bytes[i])], let (index, end) = longestMatch(bytes, at: i) else {
                i += 1
                continue
            }
            let pattern = patterns[index]
            var start = i
            var stop = end
            i = end  // the search resumes after this match, accepted or not
            if pattern.singleWord {
                let startSpace = start == 0 || !Self.endsWithWord(bytes, before: start)
                let stopSpace = stop == bytes.count || !Self.startsWithWord(bytes, at: stop)
                if !startSpace || !stopSpace { continue }
            }
            if pattern.lstrip {
                start = max(Self.leftmostSpaceAtEnd(bytes, before: start), startOffset)
            }
            if pattern.rstrip {
                stop = Self.rightmostSpaceAtStart(bytes, from: stop)
            }
            if startOffset < start { segments.append(.text(startOffset..<start)) }
            segments.append(.token(pattern.id))
            startOffset = stop
        }
        if startOffset < bytes.count { segments.append(.text(startOffset..<bytes.count)) }
        return segments
    }

    // MARK: - Character tests on UTF-8 (regex `\w`, `\s` of the Rust `regex` crate)

    private static func lastScalar(_ bytes: [UInt8], before end: Int) -> (code: UInt32, start: Int)? {
        guard end > 0 else { return nil }
        var s = end - 1
        while s > 0 && bytes[s] & 0xC0 == 0x80 { s -= 1 }
        let code = bytes.withUnsafeBufferPointer { decodeScalar($0, s).0 }
        return (code, s)
    }

    private static func firstScalar(_ bytes: [UInt8], at start: Int) -> (code: UInt32, length: Int)? {
        guard start < bytes.count else { return nil }
        return bytes.withUnsafeBufferPointer { decodeScalar($0, start) }
    }

    static func endsWithWord(_ bytes: [UInt8], before end: Int) -> Bool {
        guard let (code, _) = lastScalar(bytes, before: end) else { return false }
        return CharClass.isWordCharacter(code)
    }

    static func startsWithWord(_ bytes: [UInt8], at start: Int) -> Bool {
        guard let (code, _) = firstScalar(bytes, at: start) else { return false }
        return CharClass.isWordCharacter(code)
    }

    /// Start of the whitespace run that ends at `end`.
    static func leftmostSpaceAtEnd(_ bytes: [UInt8], before end: Int) -> Int {
        var e = end
        while let (code, s) = lastScalar(bytes, before: e), CharClass.isWhitespace(code) { e = s }
        return e
    }

    /// End of the whitespace run that starts at `start`.
    static func rightmostSpaceAtStart(_ bytes: [UInt8], from start: Int) -> Int {
        var s = start
        while let (code, len) = firstScalar(bytes, at: s), CharClass.isWhitespace(code) { s += len }
        return s
    }
}
