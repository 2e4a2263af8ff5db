import WeftModel

/// Continuous batching on rank 0: which sequences run in the next step, and
/// which KV blocks each one uses.
///
/// Each step every running sequence with one token left to compute decodes
/// it; a token budget (the step budget's share, at most `maxBatchTokens`)
/// goes to prompts in chunks, so a long prompt spans several steps and
/// decodes never wait behind it. Waiting requests join in arrival order at
/// step boundaries when a running slot and the blocks for their first chunk
/// are free: admission counts the blocks a request needs now, not its worst
/// case, and a sequence takes blocks as it grows (vLLM's scheme).
///
/// With prefix caching, a full block is kept after its sequence ends and a
/// request whose tokens start with the same blocks takes them instead of
/// computing them again (`KVBlockManager`). At most the blocks before the
/// last token are reused: the last one is always computed, for its logits,
/// and is never written into a shared block.
///
/// When a running sequence needs a block and none is left (after evicting
/// unused cached ones), the most recently admitted sequence not yet in this
/// step is preempted: its blocks are released (its full blocks stay cached)
/// and it goes back to the head of the queue with every token it has (prompt
/// and generated), to be computed again when there is room — mostly cache
/// hits. Its sampler is untouched and its next logits come from the same
/// tokens at the same positions, so its output is what it would have been —
/// up to the last bits in which a position computed in a prompt chunk
/// differs from one computed as a decode (the GEMM path depends on the
/// step's row count, as it does for any change of batch composition): greedy
/// outputs are the same; seeded sampling over a near-flat distribution can
/// take another token where two probabilities differ by that much.
///
/// The scheduler only does bookkeeping; it never touches the KV cache. Every
/// rank's cache follows the step plans it emits: `releases` drop tables,
/// `allocations` append block ids to them.
public struct BatchScheduler: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Most sequences in the running batch.
        public var maxRunning: Int
        /// Most tokens in one step (decode tokens + prompt chunks).
        public var maxBatchTokens: Int
        /// KV cache size: blocks and positions per block.
        public var kvBlocks: Int
        public var kvBlockSize: Int
        /// Keep full blocks after their sequence ends, for later requests
        /// with the same prefix.
        public var prefixCaching: Bool

        /// Whether a request could ever run to its end: its worst case fits
        /// the whole cache (alone, it can always take every block, by
        /// preempting the others and evicting cached prefixes).
        public func fits(promptTokens: Int, maxNewTokens: Int) -> Bool {
            blocks(forLength: Sequence.maxLength(promptTokens: promptTokens, maxNewTokens: maxNewTokens)) <= kvBlocks
        }

        /// Blocks that hold `length` positions of one sequence.
        public func blocks(forLength length: Int) -> Int {
            PagedKVCache.blocksNeeded(forLength: length, blockSize: kvBlockSize)
        }

        /// Blocks kept free when admitting a request while others run, so
        /// the running ones can grow a little before anyone is preempted (1 %).
        var watermark: Int { max(1, kvBlocks / 100) }

        public init(maxRunning: Int, maxBatchTokens: Int, kvBlocks: Int, kvBlockSize: Int, prefixCaching: Bool = true) {
            self.maxRunning = maxRunning
            self.maxBatchTokens = maxBatchTokens
            self.kvBlocks = kvBlocks
            self.kvBlockSize = kvBlockSize
            self.prefixCaching = prefixCaching
        }
    }

    /// One sequence's progress, as the scheduler sees it.
    public struct Sequence: Sendable {
        public let id: Int
        public let promptCount: Int
        public let maxNewTokens: Int
        /// The prompt, then every token generated so far (the last one is
        /// computed in the next step).
        public fileprivate(set) var tokens: [Int32]
        /// Positions whose keys and values are in the cache once the steps
        /// planned so far have run (cache hits included).
        public fileprivate(set) var computed = 0
        /// Times it was preempted.
        public fileprivate(set) var preemptions = 0
        /// Its block table, as every rank holds it.
        public fileprivate(set) var blocks: [Int32] = []
        /// Content ids of its first full blocks that are registered in the
        /// prefix cache (the parent of the next one's key).
        fileprivate var contents: [Int64] = []

        public var generatedCount: Int { tokens.count - promptCount }
        /// Tokens still to compute: more than one is a prompt (or a
        /// preempted sequence's recompute); exactly one is a decode.
        public var pending: Int { tokens.count - computed }
        public var isPrefilling: Bool { pending > 1 }

        static func maxLength(promptTokens: Int, maxNewTokens: Int) -> Int { promptTokens + max(maxNewTokens - 1, 0) }
    }

    /// Counters since start, for metrics.
    public struct Statistics: Sendable, Equatable {
        /// Tokens of admitted sequences looked up in the prefix cache, and
        /// the part found there (not computed again).
        public var queriedTokens = 0
        public var hitTokens = 0
        public var preemptions = 0
    }

    public let limits: Limits
    public private(set) var waiting: [Sequence] = []
    public private(set) var running: [Sequence] = []
    public private(set) var statistics = Statistics()
    public private(set) var ledger: KVBlockManager
    /// Sequences to drop on every rank in the next step (their blocks are
    /// already back in the ledger).
    private var pendingReleases: [Int] = []

    public init(limits: Limits) {
        precondition(limits.maxRunning > 0 && limits.maxBatchTokens > 0 && limits.kvBlocks > 0 && limits.kvBlockSize > 0)
        self.limits = limits
        ledger = KVBlockManager(blockCount: limits.kvBlocks, blockSize: limits.kvBlockSize, cachesPrefixes: limits.prefixCaching)
    }

    public var isIdle: Bool { waiting.isEmpty && running.isEmpty && pendingReleases.isEmpty }
    /// Blocks held by running sequences.
    public var usedBlocks: Int { ledger.heldCount }
    /// Blocks holding a cached prefix (held or kept for reuse).
    public var cachedBlocks: Int { ledger.cachedCount }

    /// Whether a request could ever run to its end (see `Limits.fits`).
    public func fits(promptTokens: Int, maxNewTokens: Int) -> Bool {
        limits.fits(promptTokens: promptTokens, maxNewTokens: maxNewTokens)
    }

    /// Positions of the sequences that will decode in the next step (one
    /// each), for the step budget.
    public var decodePositions: [Int32] {
        running.filter { $0.pending == 1 }.map { Int32($0.computed) }
    }

    /// Queues a request. `id` is its KV cache sequence id (unique while it lives).
    public mutating func enqueue(id: Int, prompt: [Int32], maxNewTokens: Int) {
        precondition(!prompt.isEmpty && maxNewTokens > 0)
        precondition(fits(promptTokens: prompt.count, maxNewTokens: maxNewTokens), "request can never fit the KV cache")
        waiting.append(Sequence(id: id, promptCount: prompt.count, maxNewTokens: maxNewTokens, tokens: prompt))
    }

    /// Ends a sequence (finished or cancelled): a running one's blocks go
    /// back to the ledger now (its full, computed blocks stay cached unless
    /// `cacheable` is false: a failed step may have left them half written)
    /// and its table is dropped on every rank in the next step; a waiting one
    /// just leaves the queue. Returns false if the id is unknown (already ended).
    @discardableResult
    public mutating func finish(id: Int, cacheable: Bool = true) -> Bool {
        if let index = waiting.firstIndex(where: { $0.id == id }) {
            waiting.remove(at: index)
            return true
        }
        guard let index = running.firstIndex(where: { $0.id == id }) else { return false }
        var sequence = running.remove(at: index)
        if cacheable { Self.registerFullBlocks(of: &sequence, limits: limits, ledger: &ledger) }
        releaseBlocks(of: sequence)
        pendingReleases.append(id)
        return true
    }

    /// Records the token sampled for `id` (after a step that asked for its logits).
    public mutating func append(token: Int32, to id: Int) {
        guard let index = running.firstIndex(where: { $0.id == id }) else { return }
        running[index].tokens.append(token)
    }

    /// The next step: releases, decodes of running sequences, then prompt
    /// chunks of running and newly admitted sequences, at most
    /// `promptBudget` prompt tokens (default and ceiling: what
    /// `maxBatchTokens` leaves after the decodes).
    public mutating func nextStep(promptBudget: Int? = nil) -> StepPlan {
        var plan = StepPlan(releases: pendingReleases)
        pendingReleases.removeAll()
        for index in running.indices { Self.registerFullBlocks(of: &running[index], limits: limits, ledger: &ledger) }
        var budget = limits.maxBatchTokens
        var scheduled = Set<Int>()

        // Decodes first, oldest first: one token each, fed back at its
        // position. A decode that finds no block preempts the newest
        // sequence (itself, if it is the newest).
        var index = 0
        while index < running.count && budget > 0 {
            guard running[index].pending == 1 else { index += 1; continue }
            guard makeRoom(for: index, length: running[index].computed + 1, scheduled: scheduled, plan: &plan) else {
                preempt(at: index, plan: &plan)
                continue
            }
            schedule(&running[index], count: 1, plan: &plan)
            scheduled.insert(running[index].id)
            budget -= 1
            index += 1
        }
        // Prompts already admitted continue where they stopped; a chunk
        // shrinks to the blocks there are, and preempts only if there are none.
        var prompt = min(budget, max(promptBudget ?? budget, 0))
        index = 0
        while index < running.count && prompt > 0 {
            let sequence = running[index]
            guard sequence.pending > 1 else { index += 1; continue }
            let fit = (sequence.blocks.count + ledger.availableCount) * limits.kvBlockSize - sequence.computed
            guard fit > 0 else {
                // Not one more position: take the blocks of the newest
                // sequence not in this step, or wait for a later step.
                if let victim = running.indices.last(where: { $0 > index && !scheduled.contains(running[$0].id) }) {
                    preempt(at: victim, plan: &plan)
                } else {
                    index += 1
                }
                continue
            }
            let count = min(sequence.pending, prompt, fit)
            let granted = makeRoom(for: index, length: sequence.computed + count, scheduled: scheduled, plan: &plan, preempting: false)
            precondition(granted, "the chunk was sized to the free blocks")
            schedule(&running[index], count: count, plan: &plan)
            scheduled.insert(sequence.id)
            prompt -= count
            index += 1
        }
        // Admit in arrival order while a slot, blocks and budget remain; the
        // head of the queue is never overtaken (no starvation of long prompts).
        while prompt > 0, running.count < limits.maxRunning, var sequence = waiting.first {
            let hits = ledger.lookup(sequence.tokens, limit: (sequence.tokens.count - 1) / limits.kvBlockSize)
            let parkedHits = hits.filter { ledger.references[Int($0.block)] == 0 }.count
            let reserve = running.isEmpty ? 0 : limits.watermark
            let spare = ledger.availableCount - parkedHits - reserve
            let start = hits.count * limits.kvBlockSize
            let count = min(sequence.tokens.count - start, prompt, spare * limits.kvBlockSize)
            guard count > 0 else { break }
            waiting.removeFirst()
            for hit in hits { ledger.hold(hit.block) }
            sequence.blocks = hits.map(\.block)
            sequence.contents = hits.map(\.content)
            sequence.computed = start
            if limits.prefixCaching {
                statistics.queriedTokens += sequence.tokens.count
                statistics.hitTokens += start
            }
            let granted = Self.grow(&sequence, to: start + count, limits: limits, ledger: &ledger)
            precondition(granted, "admission counted the blocks")
            plan.allocate(sequence.blocks, to: sequence.id)   // its whole table: shared prefix, then new blocks
            schedule(&sequence, count: count, plan: &plan)
            prompt -= count
            running.append(sequence)
        }
        return plan
    }

    // MARK: Blocks

    /// Gives running[index] blocks for positions 0..<length, preempting (if
    /// `preempting`) the newest running sequences that are not in this step
    /// and are newer than it. False if that is not enough.
    private mutating func makeRoom(for index: Int, length: Int, scheduled: Set<Int>, plan: inout StepPlan, preempting: Bool = true) -> Bool {
        while true {
            let before = running[index].blocks.count
            if Self.grow(&running[index], to: length, limits: limits, ledger: &ledger) {
                let added = Array(running[index].blocks[before...])
                if !added.isEmpty { plan.allocate(added, to: running[index].id) }
                return true
            }
            guard preempting, let victim = running.indices.last(where: { $0 > index && !scheduled.contains(running[$0].id) }) else {
                return false
            }
            preempt(at: victim, plan: &plan)
        }
    }

    /// Appends blocks from `ledger` until `sequence` holds `length`
    /// positions; all or nothing.
    private static func grow(_ sequence: inout Sequence, to length: Int, limits: Limits, ledger: inout KVBlockManager) -> Bool {
        let needed = limits.blocks(forLength: length) - sequence.blocks.count
        guard needed > 0 else { return true }
        guard needed <= ledger.availableCount else { return false }
        for _ in 0..<needed { sequence.blocks.append(ledger.allocate()!) }
        return true
    }

    /// Frees running[index]'s blocks (its full blocks stay cached) and puts
    /// it back at the head of the queue, to compute its tokens again.
    private mutating func preempt(at index: Int, plan: inout StepPlan) {
        var sequence = running.remove(at: index)
        Self.registerFullBlocks(of: &sequence, limits: limits, ledger: &ledger)
        releaseBlocks(of: sequence)
        plan.releases.append(sequence.id)
        plan.allocations.removeAll { $0.sequence == sequence.id }
        sequence.blocks = []
        sequence.contents = []
        sequence.computed = 0
        sequence.preemptions += 1
        statistics.preemptions += 1
        waiting.insert(sequence, at: 0)
    }

    /// Releases a sequence's blocks, last first: a prefix's tail is then
    /// evicted before its head, which more requests share.
    private mutating func releaseBlocks(of sequence: Sequence) {
        for block in sequence.blocks.reversed() { ledger.release(block) }
    }

    /// Registers the sequence's newly full, computed blocks in the prefix cache.
    private static func registerFullBlocks(of sequence: inout Sequence, limits: Limits, ledger: inout KVBlockManager) {
        guard limits.prefixCaching else { return }
        let size = limits.kvBlockSize
        while sequence.contents.count < min(sequence.computed / size, sequence.blocks.count) {
            let index = sequence.contents.count
            let parent = index == 0 ? KVBlockManager.root : sequence.contents[index - 1]
            sequence.contents.append(ledger.register(sequence.blocks[index], tokens: sequence.tokens[index * size..<(index + 1) * size], parent: parent))
        }
    }

    /// Puts the sequence's next `count` tokens in the plan's batch (its
    /// blocks are already there); logits when they reach its last token.
    private func schedule(_ sequence: inout Sequence, count: Int, plan: inout StepPlan) {
        let start = sequence.computed
        let completes = start + count == sequence.tokens.count
        plan.batch.append(sequence: sequence.id, tokens: Array(sequence.tokens[start..<start + count]),
                          firstPosition: start, logits: completes ? .last : .none)
        sequence.computed += count
    }

    // MARK: Invariants (tests)

    /// The first broken invariant: the ledger against the running tables;
    /// waiting sequences hold nothing; every running sequence's blocks cover
    /// its computed positions; no sequence is both waiting and running.
    public func violation() -> String? {
        if let problem = ledger.violation(tables: running.map(\.blocks)) { return problem }
        for sequence in waiting where !sequence.blocks.isEmpty || sequence.computed != 0 {
            return "waiting sequence \(sequence.id) holds blocks"
        }
        for sequence in running {
            if sequence.computed > sequence.blocks.count * limits.kvBlockSize { return "sequence \(sequence.id) computed past its blocks" }
            if sequence.contents.count > sequence.blocks.count { return "sequence \(sequence.id) registered more blocks than it holds" }
        }
        let ids = waiting.map(\.id) + running.map(\.id)
        if Set(ids).count != ids.count { return "a sequence is queued twice" }
        return nil
    }
}
