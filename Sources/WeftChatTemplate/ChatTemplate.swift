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
    /// unknown filters or tests, and unclosed blocks.
    public init(_ source: String) throws {
        self.source = source
        var lexer = Lexer(source)
        let segs = try lexer.segments()
        var parser = Parser(segs)
        let (nodes, _) = try parser.parseBody(until: [], opener: nil)
        self.nodes = nodes
    }

    /// Renders with the given top-level variables.
    public func render(_ context: [String: TemplateValue]) throws -> String {
        var globals: [String: Value] = [:]
        globals["raise_exception"] = .callable(Callable("raise_exception") { args, _, p in
            throw ChatTemplateError(message: args.first.map(pyStr) ?? "", line: p.line, column: p.column, isRaisedByTemplate: true)
        })
        globals["strftime_now"] = .callable(Callable("strftime_now") { args, _, _ in
            .string(strftime(args.first.map(pyStr) ?? "", Date()))
        })
        globals["namespace"] = .callable(Callable("namespace") { args, kw, p in
            let ns = Namespace()
            if case .object(let k, let d)? = args.first { for key in k { ns.set(key, d[key]!) } }
            else if case .namespace(let other)? = args.first { for key in other.keys { ns.set(key, other.vals[key]!) } }
            for (k, v) in kw { ns.set(k, v) }
            return .namespace(ns)
        })
        globals["range"] = .callable(Callable("range") { args, _, p in
            let ints = args.compactMap(intLike)
            guard ints.count == args.count, (1...3).contains(ints.count) else {
                throw ChatTemplateError(message: "range() expects 1 to 3 integer arguments", line: p.line, column: p.column)
            }
            let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : (ints[0], ints[1], ints.count > 2 ? ints[2] : 1)
            if step == 0 { throw ChatTemplateError(message: "range() arg 3 must not be zero", line: p.line, column: p.column) }
            guard abs((stop - start) / step) <= 100_000 else { throw ChatTemplateError(message: "range too big", line: p.line, column: p.column) }
            return .array(Swift.stride(from: start, to: stop, by: step).map { .int($0) })
        })
        globals["dict"] = .callable(Callable("dict") { args, kw, _ in
            var keys: [String] = [], d: [String: Value] = [:]
            if case .object(let k, let dd)? = args.first { keys = k; d = dd }
            for (k, v) in kw { if d.updateValue(v, forKey: k) == nil { keys.append(k) } }
            return .object(keys, d)
        })
        for (k, v) in context { globals[k] = Value(v) }
        let r = Renderer(globals: globals)
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
                       extra: [String: TemplateValue] = [:]) throws -> String {
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
        return try render(ctx)
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
