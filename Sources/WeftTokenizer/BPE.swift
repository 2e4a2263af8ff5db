import Foundation

/// UTF-8 bytes as a dictionary key, hashed in one pass (hashing `[UInt8]`
/// directly feeds the hasher byte by byte, which dominated load time).
struct ByteKey: Hashable, Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    static func == (a: ByteKey, b: ByteKey) -> Bool { a.bytes == b.bytes }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// A thread-safe word -> ids cache. Like Hugging Face's, it stops growing at
/// capacity (no eviction), which keeps it simple and bounded.
final class WordCache: @unchecked Sendable {
    private var map: [ByteKey: [Int32]] = [:]
    private let lock = NSLock()
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    func get(_ key: [UInt8]) -> [Int32]? {
        lock.lock()
        defer { lock.unlock() }
        return map[ByteKey(key)]
    }

    func set(_ key: [UInt8], _ value: [Int32]) {
        lock.lock()
        defer { lock.unlock() }
        if map.count < capacity { map[ByteKey(key)] = value }
    }
}

/// The name of the byte-fallback token for `byte`: `<0xAB>`.
func byteTokenName(_ byte: UInt8) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    return String(decoding: [0x3C, 0x30, 0x78, hex[Int(byte >> 4)], hex[Int(byte & 15)], 0x3E], as: UTF8.self)
}

/// Byte-pair encoding model (Hugging Face `models::bpe::BPE`, without dropout).
final class BPEModel: Sendable {
    /// Token bytes -> id.
    private let vocab: [ByteKey: Int32]
    /// id -> token (nil for ids not in the vocab).
    let idToToken: [String?]
    /// Ids of single-code-point tokens below U+10000 (-1 when absent), for fast initial symbols.
    private let bmpIDs: [Int32]
    private let astralIDs: [UInt32: Int32]
    /// (left id << 32 | right id) -> (rank << 32 | new id)
    private let merges: [UInt64: UInt64]
    private let unkID: Int32?
    private let fuseUnk: Bool
    /// Ids of `<0xXX>` tokens (-1 when absent), when byte_fallback is on.
    private let byteFallbackIDs: [Int32]?
    private let continuingSubwordPrefix: [UInt8]?
    private let endOfWordSuffix: [UInt8]?
    private let ignoreMerges: Bool
    private let cache = WordCache(capacity: 50_000)

    /// Number of entries in the vocabulary (HF's `get_vocab_size`).
    var vocabularyCount: Int { vocab.count }

    /// Largest id in the vocabulary, or -1 when empty.
    var maxID: Int { idToToken.count - 1 }

    convenience init(node: JSONNode) throws {
        let type = try node["type"].optionalString() ?? "BPE"
        guard type == "BPE" else {
            throw node["type"].error(
                "unsupported model type \(type.debugDescription) (supported: BPE)", kind: .unsupported)
        }
        if !node["dropout"].isNull {
            let dropout = try node["dropout"].double()
            if dropout > 0 {
                throw node["dropout"].error("BPE dropout \(dropout) is not supported (expected null)", kind: .unsupported)
            }
        }

        // Vocabulary.
        let vocabNode = node["vocab"]
        let entries = try vocabNode.objectEntries()
        var vocab: [ByteKey: Int32] = [:]
        vocab.reserveCapacity(entries.count)
        var maxID = -1
        var byID: [(Int, String)] = []
        byID.reserveCapacity(entries.count)
        // Ids are bounded before anything is sized from them: the largest real
        // vocabularies have about 2^18 entries; 2^24 keeps the id table small.
        let idLimit = 1 << 24
        for entry in entries {
            let entryNode = { vocabNode.child(key: entry.key, value: entry.value) }
            guard case .int(let id) = entry.value, id >= 0, id < idLimit else {
                throw entryNode().error("expected a token id in 0...\(idLimit - 1), found \(entry.value.description)")
            }
            let key = ByteKey(Array(entry.key.utf8))
            if let earlier = vocab[key] {
                throw entryNode().error("token listed twice (ids \(earlier) and \(id))")
            }
            vocab[key] = Int32(id)
            byID.append((id, entry.key))
            maxID = max(maxID, id)
        }
        var idToToken = [String?](repeating: nil, count: maxID + 1)
        for (id, token) in byID {
            if let other = idToToken[id] {
                throw vocabNode.child(key: token, value: .int(id)).error(
                    "id \(id) is also the id of token \(other.debugDescription) (two tokens cannot share an id)")
            }
            idToToken[id] = token
        }

        let continuingSubwordPrefix = try node["continuing_subword_prefix"].optionalString().map { Array($0.utf8) }
        let endOfWordSuffix = try node["end_of_word_suffix"].optionalString().map { Array($0.utf8) }
        let ignoreMerges = try node["ignore_merges"].bool(default: false)
        let fuseUnk = try node["fuse_unk"].bool(default: false)
        // Like HF, an unknown unk token only matters when it is needed; we then drop the text.
        let unkID = try node["unk_token"].optionalString().flatMap { vocab[ByteKey(Array($0.utf8))] }
        let byteFallback = try node["byte_fallback"].bool(default: false)

        // Merges.
        let mergesNode = node["merges"]
        var merges: [UInt64: UInt64] = [:]
        if !mergesNode.isNull {
            guard case .array(let items)? = mergesNode.value else {
                throw mergesNode.error("expected an array")
            }
            merges.reserveCapacity(items.count)
            let prefixLength = continuingSubwordPrefix?.count ?? 0
            var rank = 0
            for (index, item) in items.enumerated() {
                var left: [UInt8]
                var right: [UInt8]
                switch item {
                case .string(let s):
                    // Like HF: "#version" lines are skipped; otherwise exactly one space.
                    if s.hasPrefix("#version") { continue }
                    let u = Array(s.utf8)
                    guard let space = u.firstIndex(of: 0x20), !u[(space + 1)...].contains(0x20) else {
                        throw mergesNode.child(index: index, value: item).error(#"expected "a b" or ["a","b"]"#)
                    }
                    left = Array(u[..<space])
                    right = Array(u[(space + 1)...])
                case .array(let pair):
                    guard pair.count == 2, case .string(let a) = pair[0], case .string(let b) = pair[1] else {
                        throw mergesNode.child(index: index, value: item).error(#"expected "a b" or ["a","b"]"#)
                    }
                    left = Array(a.utf8)
                    right = Array(b.utf8)
                default:
                    throw mergesNode.child(index: index, value: item).error(#"expected "a b" or ["a","b"]"#)
                }
                func lookup(_ token: [UInt8]) throws -> Int32 {
                    guard let id = vocab[ByteKey(token)] else {
                        throw mergesNode.child(index: index, value: item).error(
                            "token \(String(decoding: token, as: UTF8.self).debugDescription) is not in model.vocab")
                    }
                    return id
                }
                let a = try lookup(left)
                let b = try lookup(right)
                let merged = left + right.dropFirst(min(prefixLength, right.count))
                let newID = try lookup(merged)
                merges[Self.mergeKey(a, b)] = Self.mergeValue(rank: rank, newID: newID)
                rank += 1
            }
        }

        self.init(
            vocab: vocab, idToToken: idToToken, merges: merges, unkID: unkID, fuseUnk: fuseUnk,
            byteFallback: byteFallback, continuingSubwordPrefix: continuingSubwordPrefix,
            endOfWordSuffix: endOfWordSuffix, ignoreMerges: ignoreMerges)
    }

    /// The model from validated parts (tokenizer.json's `model`, or a GGUF vocabulary).
    /// `merges` maps `mergeKey(left, right)` to `mergeValue(rank:newID:)`; lower ranks
    /// merge first, equal ranks from left to right.
    init(
        vocab: [ByteKey: Int32], idToToken: [String?], merges: [UInt64: UInt64], unkID: Int32?, fuseUnk: Bool,
        byteFallback: Bool, continuingSubwordPrefix: [UInt8]? = nil, endOfWordSuffix: [UInt8]? = nil,
        ignoreMerges: Bool
    ) {
        var bmpIDs = [Int32](repeating: -1, count: 0x10000)
        var astralIDs: [UInt32: Int32] = [:]
        for (key, id) in vocab {
            let tokenBytes = key.bytes
            guard let lead = tokenBytes.first, utf8Length(lead: lead) == tokenBytes.count else { continue }
            let code = tokenBytes.withUnsafeBufferPointer { decodeScalar($0, 0).0 }
            if code < 0x10000 { bmpIDs[Int(code)] = id } else { astralIDs[code] = id }
        }
        if byteFallback {
            var ids = [Int32](repeating: -1, count: 256)
            for b in 0..<256 {
                ids[b] = vocab[ByteKey(Array(byteTokenName(UInt8(b)).utf8))] ?? -1
            }
            self.byteFallbackIDs = ids
        } else {
            self.byteFallbackIDs = nil
        }
        self.vocab = vocab
        self.idToToken = idToToken
        self.bmpIDs = bmpIDs
        self.astralIDs = astralIDs
        self.merges = merges
        self.unkID = unkID
        self.fuseUnk = fuseUnk
        self.continuingSubwordPrefix = continuingSubwordPrefix
        self.endOfWordSuffix = endOfWordSuffix
        self.ignoreMerges = ignoreMerges
    }

    static func mergeKey(_ left: Int32, _ right: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
    }

    static func mergeValue(rank: Int, newID: Int32) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: rank)) << 32 | UInt64(UInt32(bitPattern: newID))
    }

    func token(for id: Int) -> String? {
        guard id >= 0 && id < idToToken.count else { return nil }
        return idToToken[id]
    }

    func id(for token: [UInt8]) -> Int? {
        vocab[ByteKey(token)].map(Int.init)
    }

    /// Tokenizes one pre-tokenized word, appending ids to `out`.
    func tokenize(_ word: [UInt8], into out: inout [Int]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[ByteKey(word)] {
            out.append(Int(id))
            return
        }
        if let cached = cache.get(word) {
            for id in cached { out.append(Int(id)) }
            return
        }
        let ids = mergeWord(word)
        if word.count < 256 { cache.set(word, ids) }
        for id in ids { out.append(Int(id)) }
    }

    private func initialSymbols(_ word: [UInt8]) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var unk: Int32? = nil  // pending unk (fused or not)
        let simple = continuingSubwordPrefix == nil && endOfWordSuffix == nil
        word.withUnsafeBufferPointer { buf in
            var i = 0
            while i < buf.count {
                let (code, len) = decodeScalar(buf, i)
                let isFirst = i == 0
                let isLast = i + len == buf.count
                var id: Int32 = -1
                var pieceBytes: [UInt8]? = nil  // only built when needed
                if simple {
                    id = code < 0x10000 ? bmpIDs[Int(code)] : (astralIDs[code] ?? -1)
                } else {
                    var s: [UInt8] = []
                    if !isFirst, let prefix = continuingSubwordPrefix { s += prefix }
                    s += buf[i..<(i + len)]
                    if isLast, let suffix = endOfWordSuffix { s += suffix }
                    id = vocab[ByteKey(s)] ?? -1
                    pieceBytes = s
                }
                if id >= 0 {
                    if let u = unk {
                        symbols.append(u)
                        unk = nil
                    }
                    symbols.append(id)
                } else {
                    var handled = false
                    if let fallback = byteFallbackIDs {
                        let bytes = pieceBytes ?? Array(buf[i..<(i + len)])
                        if bytes.allSatisfy({ fallback[Int($0)] >= 0 }) {
                            // HF does not flush a pending unk here.
                            for b in bytes { symbols.append(fallback[Int(b)]) }
                            handled = true
                        }
                    }
                    if !handled, let unkID {
                        if unk != nil && fuseUnk {
                            // keep the fused unk pending
                        } else {
                            if let u = unk { symbols.append(u) }
                            unk = unkID
                        }
                    }
                }
                i += len
            }
        }
        if let u = unk { symbols.append(u) }
        return symbols
    }

    private struct HeapEntry {
        var rank: UInt32
        var pos: Int32
        var newID: Int32

        @inline(__always)
        static func < (a: HeapEntry, b: HeapEntry) -> Bool {
            a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos
        }
    }

    @inline(__always)
    private func lookupMerge(_ a: Int32, _ b: Int32) -> (rank: UInt32, newID: Int32)? {
        guard let v = merges[Self.mergeKey(a, b)] else { return nil }
        return (UInt32(truncatingIfNeeded: v >> 32), Int32(bitPattern: UInt32(truncatingIfNeeded: v)))
    }

    /// `Word::merge_all` from Hugging Face: a priority queue of candidate merges
    /// ordered by (rank, position), skipping stale entries.
    private func mergeWord(_ word: [UInt8]) -> [Int32] {
        var c = initialSymbols(word)
        let n = c.count
        if n < 2 { return c }
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }

        var heap: [HeapEntry] = []
        heap.reserveCapacity(n)
        func push(_ e: HeapEntry) {
            heap.append(e)
            var child = heap.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                if heap[child] < heap[parent] {
                    heap.swapAt(child, parent)
                    child = parent
                } else {
                    break
                }
            }
        }
        func pop() -> HeapEntry? {
            guard let last = heap.popLast() else { return nil }
            guard !heap.isEmpty else { return last }
            let top = heap[0]
            heap[0] = last
            var parent = 0
            let count = heap.count
            while true {
                let l = 2 * parent + 1
                if l >= count { break }
                let r = l + 1
                var smallest = l
                if r < count && heap[r] < heap[l] { smallest = r }
                if heap[smallest] < heap[parent] {
                    heap.swapAt(smallest, parent)
                    parent = smallest
                } else {
                    break
                }
            }
            return top
        }

        for i in 0..<(n - 1) {
            if let m = lookupMerge(c[i], c[i + 1]) {
                push(HeapEntry(rank: m.rank, pos: Int32(i), newID: m.newID))
            }
        }

        while let top = pop() {
            let pos = Int(top.pos)
            guard alive[pos] else { continue }
            let nextPos = Int(next[pos])
            guard nextPos >= 0 else { continue }
            // Skip expired entries.
            guard let current = lookupMerge(c[pos], c[nextPos]), current.newID == top.newID else { continue }

            // Merge the right symbol into the left one.
            c[pos] = top.newID
            alive[nextPos] = false
            let rightNext = next[nextPos]
            next[pos] = rightNext
            if rightNext >= 0 { prev[Int(rightNext)] = Int32(pos) }

            let p = prev[pos]
            if p >= 0, let m = lookupMerge(c[Int(p)], c[pos]) {
                push(HeapEntry(rank: m.rank, pos: p, newID: m.newID))
            }
            if rightNext >= 0, let m = lookupMerge(c[pos], c[Int(rightNext)]) {
                push(HeapEntry(rank: m.rank, pos: Int32(pos), newID: m.newID))
            }
        }

        var result: [Int32] = []
        result.reserveCapacity(n)
        for i in 0..<n where alive[i] { result.append(c[i]) }
        return result
    }
}
