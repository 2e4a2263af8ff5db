import Foundation
import WeftRuntime

/// The fuzzing entry point for HTTP request bodies (`weft-fuzz`): the first
/// byte picks the endpoint, the rest is its body. Each body goes through the
/// same decoding and validation as a real request, against the limits of a
/// small model (no engine: validation is pure), and must be answered with an
/// error or accepted — never a trap.
public enum OpenAIRequestFuzz {
    static let limits = RequestLimits(maxModelLength: 2048, vocabularySize: 32000,
                                      scheduler: .init(maxRunning: 16, maxBatchTokens: 256, kvBlocks: 2048, kvBlockSize: 16))

    public static func run(_ bytes: [UInt8]) {
        guard let endpoint = bytes.first else { return }
        let body = Data(bytes.dropFirst())
        do {
            switch endpoint % 4 {
            case 0:
                let input = try OpenAIServer.decode(CompletionRequest.self, body)
                let prompt: [Int]
                switch input.prompt {
                case .tokens(let tokens): prompt = tokens
                case .text(let text): prompt = text.utf8.map { Int($0) }   // stands in for the tokenizer
                }
                _ = try OpenAIServer.generationRequest(input.sampling, prompt: prompt, limits: limits, modelName: "m", defaultMaxTokens: 16)
            case 1:
                let chat = try OpenAIServer.decode(ChatRequest.self, body)
                let prompt = chat.messages.flatMap { ($0.role + ($0.content ?? "")).utf8.map { Int($0) } }
                _ = try OpenAIServer.generationRequest(chat.sampling, prompt: prompt, limits: limits, modelName: "m", defaultMaxTokens: nil)
            case 2:
                _ = try OpenAIServer.decode(TokenizeRequest.self, body)
            default:
                let input = try OpenAIServer.decode(DetokenizeRequest.self, body)
                _ = limits.vocabularyProblem(input.tokens)
            }
        } catch {
            _ = String(describing: error)   // every error must describe itself
        }
    }
}
