/// The GPT-2 reversible byte <-> printable code point mapping used by
/// byte-level BPE (`bytes_to_unicode` in GPT-2 / Hugging Face tokenizers).
enum ByteLevelMapping {
    /// Code point for each byte value.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = 256 + n
                n += 1
            }
        }
        return table
    }()

    /// UTF-8 encoding of the code point for each byte value.
    static let byteToUTF8: [[UInt8]] = byteToScalar.map { code in
        var out: [UInt8] = []
        appendUTF8(code, to: &out)
        return out
    }

    /// Byte value for each mapped code point (index = code point, -1 when not mapped).
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (b, code) in byteToScalar.enumerated() { table[Int(code)] = Int16(b) }
        return table
    }()

    /// Maps UTF-8 bytes to the UTF-8 of their byte-level characters.
    static func encode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(contentsOf: byteToUTF8[Int(b)]) }
        return out
    }

    /// Maps a token's characters back to bytes; nil if some character is not a
    /// byte-level character.
    static func decode(_ token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for scalar in token.unicodeScalars {
            let v = Int(scalar.value)
            guard v < scalarToByte.count else { return nil }
            let b = scalarToByte[v]
            guard b >= 0 else { return nil }
            out.append(UInt8(b))
        }
        return out
    }
}
