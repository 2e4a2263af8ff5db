import Foundation

extension ChatTemplate {
    /// What parsing and rendering a template may cost. A chat template ships with the
    /// downloaded model, so a hostile one must fail with a `ChatTemplateError` naming the
    /// limit it hit, never trap, hang or exhaust memory. The defaults leave every real
    /// template (Llama 3.x, Mistral, Qwen2.5, ...) far from all of them.
    public struct Limits: Sendable, Equatable {
        /// Bytes of rendered text. Also the most any single string built on the way may
        /// take, and the most a list may take at `listElementBytes` per element (checked
        /// before it is built). 8 MiB: twice the server's default 4 MiB request body, so
        /// any conversation the server accepts still renders.
        public var maxOutputBytes: Int
        /// All strings and lists built during one render (rendered text included), summed;
        /// this bounds memory, since no single value can exceed `maxOutputBytes` but a loop
        /// could keep many. 64 MiB: eight times the output, several times what real
        /// templates build from a maximal request.
        public var maxAllocatedBytes: Int
        /// `{% for %}` iterations in one render, all loops together. 1,000,000.
        public var maxLoopIterations: Int
        /// Nested macro and `caller()` calls (recursion). 64.
        public var maxCallDepth: Int
        /// Nesting of the template's syntax (parentheses, brackets, operator and filter
        /// chains, `not`/`-` chains, blocks), checked while parsing, and of the lists and
        /// dicts a render builds. 64: real templates need about 12; the recursive-descent
        /// parser takes up to about 6 KiB of stack per level in a debug build, so 64 levels
        /// fit a 512 KiB thread stack.
        public var maxNestingDepth: Int
        /// Stack the evaluator may use below the frame that called `render` (it recurses
        /// per nested block, expression and call; frames are several times larger in a debug
        /// build than in a release one, so this is measured, not counted). 256 KiB: half a
        /// 512 KiB thread stack (a secondary thread's default on macOS).
        public var maxStackBytes: Int
        /// Wall-clock time for one render, checked in loops and before large operations. 2 s.
        public var timeout: Duration

        public init(maxOutputBytes: Int = 8 << 20, maxAllocatedBytes: Int = 64 << 20, maxLoopIterations: Int = 1_000_000,
                    maxCallDepth: Int = 64, maxNestingDepth: Int = 64, maxStackBytes: Int = 256 << 10,
                    timeout: Duration = .seconds(2)) {
            self.maxOutputBytes = maxOutputBytes; self.maxAllocatedBytes = maxAllocatedBytes
            self.maxLoopIterations = maxLoopIterations; self.maxCallDepth = maxCallDepth
            self.maxNestingDepth = maxNestingDepth; self.maxStackBytes = maxStackBytes; self.timeout = timeout
        }
        public static let `default` = Limits()
    }
}

/// The address of a local in a fresh frame: where the stack is now.
@inline(never) func stackAddress() -> UInt {
    var marker: UInt8 = 0
    return withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
}

/// Approximate memory one list element takes (the `Value` and its box), for size limits.
let listElementBytes = 32

/// The one place rendering checks `ChatTemplate.Limits`, the deadline and cancellation.
/// The renderer calls it on every statement and expression (`enter`), loop iteration,
/// call, and before building any string or list (`reserve`).
final class Budget {
    let limits: ChatTemplate.Limits
    let shouldCancel: (@Sendable () -> Bool)?
    let deadline: ContinuousClock.Instant
    /// Position of the innermost statement or expression being evaluated, for error messages.
    var pos = Pos(line: 1, column: 1)
    private var work = 0, nextClockCheck = 0
    private var loopIterations = 0, callDepth = 0, allocated = 0
    private let stackBase = stackAddress()

    init(_ limits: ChatTemplate.Limits, shouldCancel: (@Sendable () -> Bool)?) {
        self.limits = limits
        self.shouldCancel = shouldCancel
        deadline = ContinuousClock.now.advanced(by: limits.timeout)
    }

    func fail(_ msg: String) -> ChatTemplateError { ChatTemplateError(message: msg, line: pos.line, column: pos.column) }

    /// Counts `units` of work (one per statement or expression, one per 4 KiB built);
    /// every 1024 units, checks the deadline and cancellation.
    func spend(_ units: Int = 1) throws {
        work += units
        guard work >= nextClockCheck else { return }
        nextClockCheck = work + 1024
        if Task.isCancelled || shouldCancel?() == true { throw fail("render cancelled") }
        if ContinuousClock.now > deadline { throw fail("render exceeded the time limit of \(limits.timeout) (Limits.timeout)") }
    }

    /// Called on entering every statement and expression: bounds evaluation recursion by the
    /// stack it has used.
    func enter(_ p: Pos?) throws {
        if let p { pos = p }
        let here = stackAddress()  // stacks grow down on every platform Swift supports
        if here < stackBase, stackBase - here > UInt(clamping: limits.maxStackBytes) {
            throw fail("template nests too deeply: evaluation used more than \(limits.maxStackBytes) bytes of stack (Limits.maxStackBytes)")
        }
        try spend()
    }

    func enterCall(_ name: String) throws {
        callDepth += 1
        if callDepth > limits.maxCallDepth {
            throw fail("call depth exceeds \(limits.maxCallDepth) (Limits.maxCallDepth) calling '\(name)'")
        }
    }
    func leaveCall() { callDepth -= 1 }

    func loopIteration() throws {
        loopIterations += 1
        if loopIterations > limits.maxLoopIterations {
            throw fail("loop iteration limit \(limits.maxLoopIterations) exceeded (Limits.maxLoopIterations)")
        }
        try spend()
    }

    /// Call before building a string of `bytes` UTF-8 bytes or a list of `elements` elements.
    func reserve(bytes: Int = 0, elements: Int = 0) throws {
        let (e, o1) = elements.multipliedReportingOverflow(by: listElementBytes)
        let (size, o2) = bytes.addingReportingOverflow(e)
        guard !o1, !o2, size <= limits.maxOutputBytes else { throw tooLarge(elements > 0 ? "list" : "string") }
        allocated += size
        if allocated > limits.maxAllocatedBytes {
            throw fail("render built more than \(limits.maxAllocatedBytes) bytes in total (Limits.maxAllocatedBytes)")
        }
        try spend(1 + size >> 12)
    }

    func tooLarge(_ what: String) -> ChatTemplateError {
        fail("\(what) exceeds the size limit of \(limits.maxOutputBytes) bytes (Limits.maxOutputBytes)")
    }

    /// Appends rendered text to `out` (the render's output, or a macro's or `{% set %}` block's).
    func emit(_ s: String, into out: inout String) throws {
        guard s.utf8.count <= limits.maxOutputBytes - out.utf8.count else {
            throw fail("output exceeds \(limits.maxOutputBytes) bytes (Limits.maxOutputBytes)")
        }
        try reserve(bytes: s.utf8.count)
        out += s
    }

    /// Checks that a list or dict holding `children` stays within `maxNestingDepth`
    /// (so printing, comparing and freeing values cannot overflow the stack).
    func checkNesting<S: Sequence<Value>>(_ children: S) throws {
        let cap = limits.maxNestingDepth - 1
        for c in children where try nesting(c, cap: cap) > cap {
            throw fail("lists and dicts nested deeper than \(limits.maxNestingDepth) (Limits.maxNestingDepth)")
        }
    }

    /// Nesting depth of `v` (0 for a scalar) when it is at most `cap`, else some number above `cap`.
    private func nesting(_ v: Value, cap: Int) throws -> Int {
        func deepest<S: Sequence<Value>>(_ xs: S, count: Int) throws -> Int {
            if cap < 1 { return 1 }
            try spend(count)
            var d = 0
            for x in xs { d = max(d, try nesting(x, cap: cap - 1)); if d > cap - 1 { break } }
            return d + 1
        }
        switch v {
        case .array(let a): return try deepest(a, count: a.count)
        case .object(_, let d): return try deepest(d.values, count: d.count)
        case .namespace(let ns): return try deepest(ns.vals.values, count: ns.vals.count)
        default: return 0
        }
    }
}
