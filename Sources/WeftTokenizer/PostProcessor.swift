/// The effect of a post-processor on a single sequence: ids placed before and after it.
struct PostProcessor: Sendable, Equatable {
    var prefix: [Int] = []
    var suffix: [Int] = []
    /// Where each id came from in tokenizer.json, so the tokenizer can check
    /// that every id names a token (not part of equality).
    var sources: [(id: Int, node: JSONNode)] = []

    init(prefix: [Int] = [], suffix: [Int] = [], sources: [(id: Int, node: JSONNode)] = []) {
        self.prefix = prefix
        self.suffix = suffix
        self.sources = sources
    }

    static func == (a: PostProcessor, b: PostProcessor) -> Bool { a.prefix == b.prefix && a.suffix == b.suffix }

    static let supported = "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence"

    func apply(_ ids: [Int]) -> [Int] {
        if prefix.isEmpty && suffix.isEmpty { return ids }
        return prefix + ids + suffix
    }

    /// `self` applied to the output of `inner`.
    func wrapping(_ inner: PostProcessor) -> PostProcessor {
        PostProcessor(prefix: prefix + inner.prefix, suffix: inner.suffix + suffix, sources: inner.sources + sources)
    }

    static func parse(_ node: JSONNode) throws -> PostProcessor? {
        if node.isNull { return nil }
        let type = try node["type"].string()
        switch type {
        case "ByteLevel":
            return PostProcessor()
        case "TemplateProcessing":
            return try parseTemplate(node)
        case "BertProcessing", "RobertaProcessing":
            let cls = try pairID(node["cls"]), sep = try pairID(node["sep"])
            return PostProcessor(prefix: [cls.id], suffix: [sep.id], sources: [cls, sep])
        case "Sequence":
            var result = PostProcessor()
            for item in try node["processors"].array() {
                if let p = try parse(item) { result = p.wrapping(result) }
            }
            return result
        default:
            throw node["type"].error(
                "unsupported post-processor \(type.debugDescription) (supported: \(supported))", kind: .unsupported)
        }
    }

    /// `["[CLS]", 101]` -> 101.
    private static func pairID(_ node: JSONNode) throws -> (id: Int, node: JSONNode) {
        let items = try node.array()
        guard items.count == 2 else { throw node.error("expected [token, id]") }
        return (try items[1].int(), items[1])
    }

    private static func parseTemplate(_ node: JSONNode) throws -> PostProcessor {
        // special_tokens: { name: { "id": name, "ids": [..], "tokens": [..] } }
        var specials: [String: [Int]] = [:]
        var sources: [(id: Int, node: JSONNode)] = []
        let specialNode = node["special_tokens"]
        if !specialNode.isNull {
            for entry in try specialNode.objectEntries() {
                let child = specialNode.child(key: entry.key, value: entry.value)
                specials[entry.key] = try child["ids"].array().map { item in
                    let id = try item.int()
                    sources.append((id, item))
                    return id
                }
            }
        }
        var result = PostProcessor(sources: sources)
        var seenSequence = false
        for item in try node["single"].array() {
            if item["SpecialToken"].exists {
                let name = try item["SpecialToken"]["id"].string()
                // Dictionary lookup by exact code points.
                guard let ids = specials.first(where: { $0.key.unicodeScalars.elementsEqual(name.unicodeScalars) })?.value
                else {
                    throw item["SpecialToken"]["id"].error(
                        "special token \(name.debugDescription) is not in post_processor.special_tokens")
                }
                if seenSequence { result.suffix += ids } else { result.prefix += ids }
            } else if item["Sequence"].exists {
                let id = try item["Sequence"]["id"].string()
                guard id == "A" else {
                    throw item["Sequence"]["id"].error("a single-sequence template can only refer to sequence \"A\"")
                }
                guard !seenSequence else { throw item.error("sequence \"A\" appears twice") }
                seenSequence = true
            } else {
                throw item.error(#"expected {"SpecialToken": ...} or {"Sequence": ...}"#)
            }
        }
        guard seenSequence else { throw node["single"].error("template has no sequence \"A\"") }
        return result
    }
}
