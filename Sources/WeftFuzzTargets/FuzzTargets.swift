import Foundation
import WeftChatTemplate
import WeftModel
import WeftRuntime
import WeftServer
import WeftTokenizer

/// Every parser of outside data, as a function of raw bytes for the fuzzers
/// (`weft-fuzz`, Scripts/fuzz) and for the regression replay in WeftFuzzTests.
///
/// A target must never trap, whatever the bytes: errors are thrown by the
/// parser and swallowed here. Where a parse succeeds, the target checks what
/// the parser promises (ranges inside the file, ids inside the vocabulary)
/// and traps on purpose if a promise is broken, so the fuzzer reports it.
public enum FuzzTargets {
    public static let all: [String: @Sendable ([UInt8]) -> Void] = [
        "safetensors": safetensors,
        "config": config,
        "tokenizer": tokenizer,
        "chat-template": ChatTemplateFuzz.run,
        "request": OpenAIRequestFuzz.run,
        "step-plan": StepPlanFuzz.run,
        "gguf": gguf,  // GGUFFuzz.swift
        "gguf-model": ggufModel,  // GGUFModelFuzz.swift
    ]

    /// Names in a stable order (for usage messages and the CI loop).
    public static var names: [String] { all.keys.sorted() }

    /// The bytes as the start of a safetensors file of the same length.
    public static func safetensors(_ bytes: [UInt8]) {
        guard let tensors = try? bytes.withUnsafeBytes({ try SafetensorsHeader.parse($0, fileLength: bytes.count, path: "fuzz") })
        else { return }
        var ranges: [(Int, Int)] = []
        for info in tensors.values {
            let end = info.byteOffset + info.byteCount
            promise(info.byteOffset >= 8 && end <= bytes.count, "tensor \(info.name) outside the file")
            promise(info.elementCount * info.dtype.byteSize == info.byteCount, "tensor \(info.name) size mismatch")
            if info.byteCount > 0 { ranges.append((info.byteOffset, end)) }
        }
        ranges.sort { $0.0 < $1.0 }
        for (a, b) in zip(ranges, ranges.dropFirst()) { promise(b.0 >= a.1, "overlapping tensors accepted") }
    }

    /// The bytes as config.json; an accepted config must give sizes without overflow.
    public static func config(_ bytes: [UInt8]) {
        guard let config = try? ModelConfig.parse(Data(bytes), file: "config.json") else { return }
        promise(config.parameterCount < Int.max, "parameter count overflowed")
        let frequencies = config.ropeInverseFrequencies()
        promise(frequencies.count == config.headDim / 2, "RoPE table size")
        for size in [1, 2, 3, 8] {
            _ = try? TensorParallelPlan(config: config, rank: size - 1, size: size)
            // Expert parallelism: every expert on exactly one rank, in order.
            let plans = (0..<size).compactMap { try? TensorParallelPlan(config: config, rank: $0, size: size, moePlacement: .expertParallel) }
            guard plans.count == size, let moe = config.moe else { continue }
            promise(plans.first?.experts.lowerBound == 0 && plans.last?.experts.upperBound == moe.expertCount
                        && zip(plans, plans.dropFirst()).allSatisfy { $0.experts.upperBound == $1.experts.lowerBound }
                        && plans.allSatisfy { !$0.experts.isEmpty && $0.expertIntermediate == 0..<moe.expertIntermediateSize },
                    "expert-parallel plans at degree \(size) share \(moe.expertCount) experts as \(plans.map(\.experts))")
            for (rank, plan) in plans.enumerated() {
                for e in [plan.experts.lowerBound, plan.experts.upperBound - 1] {
                    let owner = plan.owner(ofExpert: e, expertCount: moe.expertCount)
                    promise(owner == rank, "expert \(e) of rank \(rank)'s range owned by rank \(String(describing: owner))")
                }
            }
        }
    }

    /// The bytes as tokenizer.json, then (after a 0x00 byte, which JSON text
    /// cannot contain) tokenizer_config.json, then text to encode.
    public static func tokenizer(_ bytes: [UInt8]) {
        let parts = bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        let config = parts.count > 1 ? Data(parts[1]) : nil
        guard let tokenizer = try? Tokenizer(tokenizerJSON: Data(parts[0]), tokenizerConfig: config) else { return }
        let text = parts.count > 2 ? String(decoding: parts[2].prefix(256), as: UTF8.self) : "Hello, world! 123 <s> 東京\n"
        let ids = tokenizer.encode(text)
        for id in ids { promise(id >= 0 && id < tokenizer.vocabularySize, "encode produced id \(id) outside the vocabulary") }
        _ = tokenizer.decode(ids)
        _ = tokenizer.decode(ids + [-1, tokenizer.vocabularySize, Int.max, Int.min], skipSpecialTokens: false)
        var stream = StreamingDecoder(tokenizer: tokenizer)
        _ = stream.push(contentsOf: ids)
        _ = stream.flush()
        if let template = tokenizer.chatTemplate { _ = template.utf8.count }
    }

    /// Traps with `message` when a parser broke its own promise.
    static func promise(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz target invariant: \(message())") }
    }
}
