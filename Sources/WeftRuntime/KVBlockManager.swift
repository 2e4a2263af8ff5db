/// Rank 0's ledger of the KV cache's blocks: which are free, which are held
/// by how many sequences, and which hold a cached prefix (automatic prefix
/// caching, as vLLM does it).
///
/// A full block is identified by its tokens and by everything before it: its
/// key is (the content id of the block before it, its tokens). Content ids
/// are handed out once and never reused, so a key names one exact token
/// prefix — no hash that could collide, and an evicted block's descendants
/// simply become unreachable (and age out of the LRU like any other block).
/// When its last holder lets go, a cached block is not freed but parked in an
/// LRU list: a later request with the same prefix takes it back (a hit); a
/// request that needs memory evicts the least recently released one first.
///
/// Only rank 0 keeps this ledger. The other ranks never decide anything:
/// every step plan names the blocks each sequence appends to its table, so
/// all ranks' caches hold the same tables (`PagedKVCache.apply`).
public struct KVBlockManager: Sendable {
    /// A cached block's identity: its parent's content id (`root` for a first
    /// block) and its tokens.
    struct Key: Hashable, Sendable {
        var parent: Int64
        var tokens: [Int32]
    }
    /// The parent content id of a sequence's first block.
    static let root: Int64 = -1

    public let blockCount: Int
    public let blockSize: Int
    public let cachesPrefixes: Bool

    /// Holders of each block (sequences whose table lists it).
    private(set) var references: [Int32]
    /// Never-cached or evicted blocks with no holder (a stack).
    private var free: [Int32]
    /// Cached blocks with no holder, least recently released first: a
    /// doubly linked list through `previous`/`next` (-1 ends it).
    private var previous: [Int32]
    private var next: [Int32]
    private var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    private(set) var parkedCount = 0
    /// The key and content id of each block that holds a cached prefix.
    private var keyOf: [Int32: (key: Key, content: Int64)] = [:]
    private var blockOf: [Key: Int32] = [:]
    private var nextContent: Int64 = 0

    public init(blockCount: Int, blockSize: Int, cachesPrefixes: Bool) {
        precondition(blockCount > 0 && blockSize > 0 && blockCount <= Int(Int32.max))
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.cachesPrefixes = cachesPrefixes
        references = Array(repeating: 0, count: blockCount)
        free = (0..<Int32(blockCount)).reversed()
        previous = Array(repeating: -1, count: blockCount)
        next = Array(repeating: -1, count: blockCount)
    }

    /// Blocks a sequence could still get: free ones and cached ones no sequence holds.
    public var availableCount: Int { free.count + parkedCount }
    /// Blocks held by at least one sequence.
    public var heldCount: Int { blockCount - availableCount }
    /// Blocks holding a cached prefix (held or parked).
    public var cachedCount: Int { keyOf.count }

    // MARK: Lookup

    /// The cached blocks that hold a prefix of `tokens`, in order, with their
    /// content ids: at most `limit` full blocks (the caller keeps at least the
    /// last token to compute, so it gets logits). Does not take them.
    func lookup(_ tokens: [Int32], limit: Int) -> [(block: Int32, content: Int64)] {
        guard cachesPrefixes else { return [] }
        var found: [(block: Int32, content: Int64)] = []
        var parent = Self.root
        while found.count < limit {
            let start = found.count * blockSize
            guard start + blockSize <= tokens.count,
                  let block = blockOf[Key(parent: parent, tokens: Array(tokens[start..<start + blockSize]))] else { break }
            let content = keyOf[block]!.content
            found.append((block, content))
            parent = content
        }
        return found
    }

    // MARK: Holding and releasing

    /// Takes a block for a sequence: a free one, else the least recently
    /// released cached one (forgetting its prefix). Nil when none is left.
    mutating func allocate() -> Int32? {
        let block: Int32
        if let top = free.popLast() {
            block = top
        } else if lruHead >= 0 {
            block = lruHead
            unpark(block)
            forget(block)
        } else {
            return nil
        }
        references[Int(block)] = 1
        return block
    }

    /// One more holder for a cached block found by `lookup` (a parked one
    /// leaves the LRU list).
    mutating func hold(_ block: Int32) {
        precondition(keyOf[block] != nil, "only cached blocks are shared")
        if references[Int(block)] == 0 { unpark(block) }
        references[Int(block)] += 1
    }

    /// One holder fewer. A block nobody holds is parked in the LRU list if it
    /// holds a cached prefix, else freed.
    mutating func release(_ block: Int32) {
        let index = Int(block)
        precondition(references[index] > 0, "block \(block) released more often than held")
        references[index] -= 1
        guard references[index] == 0 else { return }
        if keyOf[block] != nil { park(block) } else { free.append(block) }
    }

    /// Records that `block`, full and written, holds `tokens` after the
    /// prefix named by `parent`; returns its content id, the parent of the
    /// next block. If another block already caches this exact prefix, that
    /// one stays the cached copy and its id is returned (this block is freed
    /// normally when released).
    mutating func register(_ block: Int32, tokens: ArraySlice<Int32>, parent: Int64) -> Int64 {
        precondition(tokens.count == blockSize && references[Int(block)] > 0)
        if let existing = keyOf[block] { return existing.content }
        guard cachesPrefixes else { return Self.root }
        let key = Key(parent: parent, tokens: Array(tokens))
        if let other = blockOf[key] { return keyOf[other]!.content }
        let content = nextContent
        nextContent += 1
        keyOf[block] = (key, content)
        blockOf[key] = block
        return content
    }

    // MARK: LRU list

    private mutating func park(_ block: Int32) {
        previous[Int(block)] = lruTail
        next[Int(block)] = -1
        if lruTail >= 0 { next[Int(lruTail)] = block } else { lruHead = block }
        lruTail = block
        parkedCount += 1
    }

    private mutating func unpark(_ block: Int32) {
        let before = previous[Int(block)], after = next[Int(block)]
        if before >= 0 { next[Int(before)] = after } else { lruHead = after }
        if after >= 0 { previous[Int(after)] = before } else { lruTail = before }
        previous[Int(block)] = -1
        next[Int(block)] = -1
        parkedCount -= 1
    }

    private mutating func forget(_ block: Int32) {
        if let entry = keyOf.removeValue(forKey: block) { blockOf.removeValue(forKey: entry.key) }
    }

    // MARK: Invariants (tests)

    /// Checks the ledger against the tables of the live sequences: every
    /// block is in exactly one place (free, parked, or held), each held
    /// block's count equals the tables that list it, the cache's two maps
    /// agree and the LRU list is well linked. Returns the first violation.
    func violation(tables: [[Int32]]) -> String? {
        var counted = Array(repeating: Int32(0), count: blockCount)
        for table in tables {
            for block in table {
                guard block >= 0 && Int(block) < blockCount else { return "table lists block \(block) out of range" }
                counted[Int(block)] += 1
            }
        }
        if counted != references { return "reference counts \(references) differ from the tables' \(counted)" }
        var seen = Set<Int32>()
        for block in free {
            guard seen.insert(block).inserted else { return "block \(block) is free twice" }
            if references[Int(block)] != 0 { return "free block \(block) is held" }
            if keyOf[block] != nil { return "free block \(block) still caches a prefix" }
        }
        var walked = 0
        var block = lruHead, before: Int32 = -1
        while block >= 0 {
            guard seen.insert(block).inserted else { return "block \(block) is both free and parked, or parked twice" }
            if references[Int(block)] != 0 { return "parked block \(block) is held" }
            if keyOf[block] == nil { return "parked block \(block) caches nothing" }
            if previous[Int(block)] != before { return "LRU list broken at block \(block)" }
            before = block
            block = next[Int(block)]
            walked += 1
        }
        if before != lruTail || walked != parkedCount { return "LRU tail or count is wrong" }
        let held = (0..<blockCount).filter { references[$0] > 0 }.count
        if seen.count + held != blockCount { return "\(blockCount - seen.count - held) blocks are lost" }
        for (block, entry) in keyOf where blockOf[entry.key] != block { return "cache maps disagree on block \(block)" }
        if blockOf.count != keyOf.count { return "cache maps differ in size" }
        return nil
    }
}
