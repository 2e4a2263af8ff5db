import WeftTokenizer

public enum FinishReason: String, Sendable {
    /// An end-of-sequence token, a stop token or a stop string.
    case stop
    /// `maxTokens` reached.
    case length
}

/// One step's output for a request: the token generated and the text it completed.
public struct GenerationOutput: Sendable {
    public var token: Int
    /// Text released by this token: may be empty (an incomplete character, or
    /// text held back because it could start a stop string).
    public var text: String
    /// Set on the last output of the stream.
    public var finishReason: FinishReason?
    public var promptTokenCount: Int
    /// Tokens generated so far, this one included.
    public var completionTokenCount: Int
}

/// Output processing for one request: turns each sampled token into its
/// `GenerationOutput` (detokenized text, stop strings held back and cut,
/// stop tokens, the length limit) and delivers it to the request's stream.
///
/// A value owned by the engine loop on rank 0; the stream's continuation is
/// the only part other threads see (through the stream).
struct GenerationStream {
    private let continuation: AsyncThrowingStream<GenerationOutput, Error>.Continuation
    private let promptTokenCount: Int
    private let maxTokens: Int
    private let stopTokens: Set<Int>
    private var decoder: StreamingDecoder?
    private var stopFilter: StopStringFilter
    private var completionTokens = 0

    /// `endOfSequence`: the model's end-of-sequence ids (they stop the request unless it ignores them).
    init(_ admitted: AdmittedRequest, tokenizer: Tokenizer?, endOfSequence: Set<Int>) {
        let request = admitted.request
        continuation = admitted.continuation
        promptTokenCount = request.prompt.count
        maxTokens = request.maxTokens
        stopTokens = request.ignoreEOS ? Set(request.stopTokenIDs) : endOfSequence.union(request.stopTokenIDs)
        decoder = tokenizer.map { StreamingDecoder(tokenizer: $0) }
        stopFilter = StopStringFilter(stops: request.stop)
    }

    /// Takes the sampled token; returns its output (with a finish reason if
    /// the request is done). Call `send` to deliver it.
    mutating func accept(_ token: Int) -> GenerationOutput {
        completionTokens += 1
        var output = GenerationOutput(token: token, text: "", finishReason: nil,
                                      promptTokenCount: promptTokenCount, completionTokenCount: completionTokens)
        if stopTokens.contains(token) {
            // The stop token's own text is not returned (it is special anyway).
            output.text = stopFilter.flush() + (decoder?.flush() ?? "")
            output.finishReason = .stop
        } else {
            let (release, stopped) = stopFilter.push(decoder?.push(token) ?? "")
            output.text = release
            if stopped {
                output.finishReason = .stop
            } else if completionTokens >= maxTokens {
                let tail = decoder?.flush() ?? ""
                output.text += stopFilter.push(tail).release + stopFilter.flush()
                output.finishReason = .length
            }
        }
        return output
    }

    func send(_ output: GenerationOutput) {
        continuation.yield(output)
    }

    /// Ends the stream: normally, or throwing `error`.
    func finish(throwing error: Error? = nil) {
        continuation.finish(throwing: error)
    }
}
