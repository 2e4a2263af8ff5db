import WeftModel

/// Continuous batching on rank 0: which sequences run in the next step.
///
/// Each step every running sequence that has finished its prompt decodes one
/// token; what is left of the per-step token budget goes to prompts, in
/// chunks (a long prompt spans several steps, and decodes never wait behind
/// it). Waiting requests join in arrival order at step boundaries when a
/// running slot and KV blocks for their whole length (prompt + max tokens)
/// are free. Reserving the worst case at admission means a running sequence
/// never runs out of blocks, so nothing is ever preempted or recomputed;
/// when memory is short, requests wait in the queue instead.
///
/// The scheduler only does bookkeeping; it never touches the KV cache. Every
/// rank's cache follows the step plans it emits (blocks are taken as spans
/// reach them and returned by the plan's `releases`).
public struct BatchScheduler: Sendable {
    public struct Limits: Sendable, Equatable {
        /// Most sequences in the running batch.
        public var maxRunning: Int
        /// Most tokens in one step (decode tokens + prompt chunks).
        public var maxBatchTokens: Int
        /// KV cache size: blocks and positions per block.
        public var kvBlocks: Int
        public var kvBlockSize: Int

        /// Whether a request could ever be admitted (its worst case fits the whole cache).
        public func fits(promptTokens: Int, maxNewTokens: Int) -> Bool {
            blocks(forLength: Sequence.maxLength(promptTokens: promptTokens, maxNewTokens: maxNewTokens)) <= kvBlocks
        }

        /// Blocks that hold `length` positions of one sequence.
        public func blocks(forLength length: Int) -> Int {
            PagedKVCache.blocksNeeded(forLength: length, blockSize: kvBlockSize)
        }

        public init(maxRunning: Int, maxBatchTokens: Int, kvBlocks: Int, kvBlockSize: Int) {
            self.maxRunning = maxRunning
            self.maxBatchTokens = maxBatchTokens
            self.kvBlocks = kvBlocks
            self.kvBlockSize = kvBlockSize
        }
    }

    /// One sequence's progress, as the scheduler sees it.
    public struct Sequence: Sendable {
        public let id: Int
        public let prompt: [Int32]
        public let maxNewTokens: Int
        /// Prompt tokens already sent through the model.
        public fileprivate(set) var prefilled = 0
        /// Tokens generated so far; the last one is fed back in the next step.
        public fileprivate(set) var generated: [Int32] = []
        fileprivate var blocks = 0

        public var isPrefilling: Bool { prefilled < prompt.count }
        /// Positions the sequence can reach: prompt plus every new token but the
        /// last (which is sampled, never fed back).
        var maxLength: Int { Self.maxLength(promptTokens: prompt.count, maxNewTokens: maxNewTokens) }

        static func maxLength(promptTokens: Int, maxNewTokens: Int) -> Int { promptTokens + max(maxNewTokens - 1, 0) }
    }

    public let limits: Limits
    public private(set) var waiting: [Sequence] = []
    public private(set) var running: [Sequence] = []
    /// Sequences to free on every rank in the next step.
    private var pendingReleases: [Int] = []
    public private(set) var reservedBlocks = 0

    public init(limits: Limits) {
        precondition(limits.maxRunning > 0 && limits.maxBatchTokens > 0 && limits.kvBlocks > 0 && limits.kvBlockSize > 0)
        self.limits = limits
    }

    public var isIdle: Bool { waiting.isEmpty && running.isEmpty && pendingReleases.isEmpty }
    public var freeBlocks: Int { limits.kvBlocks - reservedBlocks }

    func blocks(for sequence: Sequence) -> Int {
        limits.blocks(forLength: sequence.maxLength)
    }

    /// Whether a request could ever be admitted (its worst case fits the whole cache).
    public func fits(promptTokens: Int, maxNewTokens: Int) -> Bool {
        limits.fits(promptTokens: promptTokens, maxNewTokens: maxNewTokens)
    }

    /// Queues a request. `id` is its KV cache sequence id (unique while it lives).
    public mutating func enqueue(id: Int, prompt: [Int32], maxNewTokens: Int) {
        precondition(!prompt.isEmpty && maxNewTokens > 0)
        precondition(fits(promptTokens: prompt.count, maxNewTokens: maxNewTokens), "request can never fit the KV cache")
        waiting.append(Sequence(id: id, prompt: prompt, maxNewTokens: maxNewTokens))
    }

    /// Ends a sequence (finished or cancelled): a running one has its blocks
    /// freed on every rank in the next step; a waiting one just leaves the queue.
    /// Returns false if the id is unknown (already ended).
    @discardableResult
    public mutating func finish(id: Int) -> Bool {
        if let index = waiting.firstIndex(where: { $0.id == id }) {
            waiting.remove(at: index)
            return true
        }
        guard let index = running.firstIndex(where: { $0.id == id }) else { return false }
        reservedBlocks -= running[index].blocks
        running.remove(at: index)
        pendingReleases.append(id)
        return true
    }

    /// Records the token sampled for `id` (after a step that asked for its logits).
    public mutating func append(token: Int32, to id: Int) {
        guard let index = running.firstIndex(where: { $0.id == id }) else { return }
        running[index].generated.append(token)
    }

    /// The next step: releases, decodes of running sequences, then prompt
    /// chunks of running and newly admitted sequences under the token budget.
    public mutating func nextStep() -> StepPlan {
        var plan = StepPlan(releases: pendingReleases)
        pendingReleases.removeAll()
        var budget = limits.maxBatchTokens

        // Decodes first: one token each, fed back at its position.
        for sequence in running where !sequence.isPrefilling && budget > 0 {
            guard let last = sequence.generated.last else { continue }
            let position = sequence.prompt.count + sequence.generated.count - 1
            plan.batch.append(sequence: sequence.id, tokens: [last], firstPosition: position, logits: .last)
            budget -= 1
        }
        // Prompts already admitted continue where they stopped.
        for index in running.indices where running[index].isPrefilling && budget > 0 {
            budget -= scheduleChunk(of: &running[index], budget: budget, into: &plan.batch)
        }
        // Admit in arrival order while a slot, blocks and budget remain; the
        // head of the queue is never overtaken (no starvation of long prompts).
        while budget > 0, running.count < limits.maxRunning, let head = waiting.first, blocks(for: head) <= freeBlocks {
            var sequence = waiting.removeFirst()
            sequence.blocks = blocks(for: sequence)
            reservedBlocks += sequence.blocks
            budget -= scheduleChunk(of: &sequence, budget: budget, into: &plan.batch)
            running.append(sequence)
        }
        return plan
    }

    private func scheduleChunk(of sequence: inout Sequence, budget: Int, into batch: inout FlatBatch) -> Int {
        let count = min(sequence.prompt.count - sequence.prefilled, budget)
        let completes = sequence.prefilled + count == sequence.prompt.count
        batch.append(sequence: sequence.id, tokens: Array(sequence.prompt[sequence.prefilled..<sequence.prefilled + count]),
                     firstPosition: sequence.prefilled, logits: completes ? .last : .none)
        sequence.prefilled += count
        return count
    }
}
