import Foundation

/// A template parse or render failure. `description` is one line:
/// `chat_template line L, column C: message`. Errors raised by the template
/// itself via `raise_exception(msg)` have `isRaisedByTemplate == true` and
/// `message == msg`.
public struct ChatTemplateError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public let line: Int
    public let column: Int
    public var isRaisedByTemplate: Bool = false

    public init(message: String, line: Int, column: Int, isRaisedByTemplate: Bool = false) {
        self.message = message; self.line = line; self.column = column; self.isRaisedByTemplate = isRaisedByTemplate
    }
    public var description: String {
        "chat_template line \(line), column \(column): " + message.replacingOccurrences(of: "\n", with: "\\n")
    }
}

/// A Hugging Face chat template (Jinja2 subset), parsed once and rendered any
/// number of times, matching `transformers.apply_chat_template`
/// (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
/// `strftime_now`, `tojson` with `ensure_ascii=False`).
public struct ChatTemplate: Sendable {
    let nodes: [Node]
    /// The template source as given.
    public let source: String

    /// Parses `source`. Throws `ChatTemplateError` (with line/column) on syntax errors,
    /// unknown filters or tests, unclosed blocks, and nesting deeper than `limits.maxNestingDepth`.
    public init(_ source: String, limits: Limits = .default) throws {
        self.source = source
        var lexer = Lexer(source)
        let segs = try lexer.segments()
        var parser = Parser(segs, maxDepth: limits.maxNestingDepth)
        let (nodes, _) = try parser.parseBody(until: [], opener: nil)
        self.nodes = nodes
    }

    /// Renders with the given top-level variables. Throws `ChatTemplateError` when the template
    /// fails, exceeds one of `limits`, or is cancelled: `shouldCancel` returning true or the
    /// current Task being cancelled stops it within about a millisecond of work.
    public func render(_ context: [String: TemplateValue], limits: Limits = .default,
                       shouldCancel: (@Sendable () -> Bool)? = nil) throws -> String {
        let r = Renderer(globals: [:], budget: Budget(limits, shouldCancel: shouldCancel))
        var globals: [String: Value] = [:]
        globals["raise_exception"] = .callable(Callable("raise_exception") { [unowned r] args, _, p in
            throw ChatTemplateError(message: try args.first.map(r.text) ?? "", line: p.line, column: p.column, isRaisedByTemplate: true)
        })
        globals["strftime_now"] = .callable(Callable("strftime_now") { [unowned r] args, _, _ in
            .string(strftime(try args.first.map(r.text) ?? "", Date()))
        })
        globals["namespace"] = .callable(Callable("namespace") { [unowned r] args, kw, p in
            let ns = Namespace()
            if case .object(let k, let d)? = args.first { for key in k { ns.set(key, d[key]!) } }
            else if case .namespace(let other)? = args.first { for key in other.keys { ns.set(key, other.vals[key]!) } }
            for (k, v) in kw { ns.set(k, v) }
            for v in ns.vals.values { try r.checkNamespaceValue(v, p) }
            return .namespace(ns)
        })
        globals["range"] = .callable(Callable("range") { [unowned r] args, _, p in
            let ints = args.compactMap(intLike)
            guard ints.count == args.count, (1...3).contains(ints.count) else {
                throw ChatTemplateError(message: "range() expects 1 to 3 integer arguments", line: p.line, column: p.column)
            }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count > 2 ? ints[2] : 1)
            if step == 0 { throw ChatTemplateError(message: "range() arg 3 must not be zero", line: p.line, column: p.column) }
            // Exact length without overflow: the span fits in a UInt when it is positive.
            let span = step > 0 ? (stop > start ? UInt(bitPattern: stop &- start) : 0) : (start > stop ? UInt(bitPattern: start &- stop) : 0)
            let (q, rem) = span.quotientAndRemainder(dividingBy: step.magnitude)
            let count = q + (rem > 0 ? 1 : 0)
            try r.budget.reserve(elements: count > UInt(Int.max) ? .max : Int(count))
            return .array((0..<Int(count)).map { .int(start &+ $0 &* step) })  // each term lies between start and stop
        })
        globals["dict"] = .callable(Callable("dict") { [unowned r] args, kw, _ in
            var keys: [String] = [], d: [String: Value] = [:]
            if case .object(let k, let dd)? = args.first { keys = k; d = dd }
            for (k, v) in kw { if d.updateValue(v, forKey: k) == nil { keys.append(k) } }
            try r.budget.reserve(elements: keys.count); try r.budget.checkNesting(d.values)
            return .object(keys, d)
        })
        for (k, v) in context { globals[k] = Value(v) }
        r.root.vars = globals
        var out = ""
        do { try r.run(nodes, Scope(parent: r.root), &out) } catch is Interrupt {
            // break/continue outside a loop: jinja2 rejects at compile time; treat as stop.
        }
        return out
    }

    /// Convenience: `messages` (each e.g. `["role": "user", "content": "Hi"]`), plus
    /// `add_generation_prompt`, `bos_token`, `eos_token` (omitted when nil, i.e. undefined)
    /// and any `extra` variables (e.g. `tools`, `date_string`), which override the others.
    public func render(messages: [[String: TemplateValue]], addGenerationPrompt: Bool, bosToken: String?, eosToken: String?,
                       extra: [String: TemplateValue] = [:], limits: Limits = .default,
                       shouldCancel: (@Sendable () -> Bool)? = nil) throws -> String {
        var ctx: [String: TemplateValue] = [
            "messages": .array(messages.map { m in
                // role, content first (the usual order), then other keys sorted.
                var o = TemplateObject()
                for k in ["role", "content"] where m[k] != nil { o[k] = m[k] }
                for k in m.keys.sorted() where k != "role" && k != "content" { o[k] = m[k] }
                return .object(o)
            }),
            "add_generation_prompt": .bool(addGenerationPrompt),
        ]
        if let bosToken { ctx["bos_token"] = .string(bosToken) }
        if let eosToken { ctx["eos_token"] = .string(eosToken) }
        for (k, v) in extra { ctx[k] = v }
        return try render(ctx, limits: limits, shouldCancel: shouldCancel)
    }
}

/// C strftime on the local time (as Python's datetime.now().strftime).
func strftime(_ format: String, _ date: Date) -> String {
    var t = time_t(date.timeIntervalSince1970)
    var tmv = tm()
    localtime_r(&t, &tmv)
    var buf = [Int8](repeating: 0, count: 512)
    let n = Foundation.strftime(&buf, buf.count, format, &tmv)
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
