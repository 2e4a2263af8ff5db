/// Decodes UTF-8 like Rust's `String::from_utf8_lossy`: each maximal invalid
/// subsequence becomes one U+FFFD.
func lossyString(_ bytes: [UInt8]) -> String {
    String(decoding: bytes, as: UTF8.self)
}

/// Strict UTF-8 decoding (nil when invalid).
func strictString(_ bytes: [UInt8]) -> String? {
    let s = String(decoding: bytes, as: UTF8.self)
    return s.utf8.elementsEqual(bytes) ? s : nil
}

/// The supported decoders (Hugging Face `decode_chain` semantics).
indirect enum TokenDecoder: Sendable {
    case byteLevel
    case byteFallback
    case fuse
    case replace(pattern: TextPattern, content: [UInt8])
    case strip(content: Unicode.Scalar, start: Int, stop: Int)
    case metaspace(replacement: Unicode.Scalar, prependScheme: PrependScheme)
    case sequence([TokenDecoder])

    static let supported = "ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence"

    static func parse(_ node: JSONNode) throws -> TokenDecoder? {
        if node.isNull { return nil }
        let type = try node["type"].string()
        switch type {
        case "ByteLevel":
            return .byteLevel
        case "ByteFallback":
            return .byteFallback
        case "Fuse":
            return .fuse
        case "Replace":
            return .replace(
                pattern: try TextPattern.parse(node["pattern"]), content: Array(try node["content"].string().utf8))
        case "Strip":
            let content = try node["content"].string()
            guard content.unicodeScalars.count == 1, let scalar = content.unicodeScalars.first else {
                throw node["content"].error("expected a single character")
            }
            let start = try node["start"].int()
            let stop = try node["stop"].int()
            guard start >= 0, stop >= 0 else { throw node.error("start and stop must be non-negative") }
            return .strip(content: scalar, start: start, stop: stop)
        case "Metaspace":
            let (replacement, scheme) = try parseMetaspace(node)
            return .metaspace(replacement: replacement, prependScheme: scheme)
        case "Sequence":
            let items = try node["decoders"].array()
            return .sequence(try items.map { item in
                guard let d = try parse(item) else { throw item.error("expected a decoder") }
                return d
            })
        default:
            throw node["type"].error(
                "unsupported decoder \(type.debugDescription) (supported: \(supported))", kind: .unsupported)
        }
    }

    /// Full decode: the chain, then concatenation.
    func decode(_ tokens: [String]) -> String {
        decodeChain(tokens).joined()
    }

    func decodeChain(_ tokens: [String]) -> [String] {
        switch self {
        case .byteLevel:
            var bytes: [UInt8] = []
            for token in tokens {
                if let b = ByteLevelMapping.decode(token) {
                    bytes.append(contentsOf: b)
                } else {
                    bytes.append(contentsOf: token.utf8)
                }
            }
            return [lossyString(bytes)]

        case .byteFallback:
            var out: [String] = []
            out.reserveCapacity(tokens.count)
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = strictString(pending) {
                    out.append(s)
                } else {
                    for _ in pending { out.append("\u{FFFD}") }
                }
                pending.removeAll(keepingCapacity: true)
            }
            for token in tokens {
                if let byte = Self.byteFallbackValue(token) {
                    pending.append(byte)
                } else {
                    flush()
                    out.append(token)
                }
            }
            flush()
            return out

        case .fuse:
            return [tokens.joined()]

        case .replace(let pattern, let content):
            return tokens.map { lossyString(pattern.replace(in: Array($0.utf8), with: content)) }

        case .strip(let content, let start, let stop):
            return tokens.map { token in
                let scalars = Array(token.unicodeScalars)
                var startCut = 0
                for i in 0..<min(start, scalars.count) {
                    if scalars[i] == content { startCut = i + 1 } else { break }
                }
                var stopCut = scalars.count
                for i in 0..<min(stop, scalars.count) {
                    let index = scalars.count - i - 1
                    if scalars[index] == content { stopCut = index } else { break }
                }
                if stopCut < startCut { return "" }
                var s = String.UnicodeScalarView()
                s.append(contentsOf: scalars[startCut..<stopCut])
                return String(s)
            }

        case .metaspace(let replacement, let scheme):
            return tokens.enumerated().map { i, token in
                var s = String.UnicodeScalarView()
                for scalar in token.unicodeScalars {
                    if scalar == replacement {
                        if i == 0 && scheme != .never { continue }
                        s.append(" ")
                    } else {
                        s.append(scalar)
                    }
                }
                return String(s)
            }

        case .sequence(let items):
            var current = tokens
            for item in items { current = item.decodeChain(current) }
            return current
        }
    }

    /// `<0xAB>` -> 0xAB.
    static func byteFallbackValue(_ token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == UInt8(ascii: "<"), u[1] == UInt8(ascii: "0"), u[2] == UInt8(ascii: "x"),
            u[5] == UInt8(ascii: ">")
        else { return nil }
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case 0x30...0x39: return b - 0x30
            case 0x41...0x46: return b - 0x41 + 10
            case 0x61...0x66: return b - 0x61 + 10
            default: return nil
            }
        }
        guard let hi = hex(u[3]), let lo = hex(u[4]) else { return nil }
        return hi << 4 | lo
    }
}
