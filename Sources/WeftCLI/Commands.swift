import ArgumentParser
import Foundation
import WeftComm
import WeftModel
import WeftRuntime
import WeftTokenizer

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt, streaming it as it is produced.")

    @OptionGroup var options: ModelOptions

    @Option(help: "Prompt text (tokenized with the model's tokenizer, BOS added as the model's tokenizer_config says).")
    var prompt: String?

    @Option(help: "Prompt as comma-separated token ids, e.g. 1,2,3.")
    var tokens: String?

    @Option(help: "Maximum number of tokens to generate.")
    var maxTokens: Int = 64

    @OptionGroup var sampling: SamplingOptions

    @Flag(help: "Print one JSON object {prompt_tokens, completion_tokens, text} instead of streaming text.")
    var json = false

    @Flag(help: "Send --prompt as one user message through the model's chat template (with the generation prompt), as `weft chat` and /v1/chat/completions do.")
    var chat = false

    func validate() throws {
        if (prompt == nil) == (tokens == nil) { throw ValidationError("give exactly one of --prompt TEXT and --tokens 1,2,3") }
        if chat && prompt == nil { throw ValidationError("--chat needs --prompt TEXT (the user message)") }
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        if let tokens { _ = try parseTokenList(tokens, option: "--tokens") }
        _ = try options.parsedMode(allowing: options.allowedModes)
    }

    struct Result: Encodable {
        let prompt_tokens: [Int]
        let completion_tokens: [Int]
        let text: String
    }

    func run() throws {
        Session.run { communicator in
            let engine = try Engine(configuration: options.engineConfiguration(), communicator: communicator)
            let promptTokens: [Int]
            if let tokens {
                promptTokens = try parseTokenList(tokens, option: "--tokens")
            } else {
                guard let tokenizer = engine.tokenizer else {
                    throw RuntimeError.invalidOption("--prompt", "the model has no tokenizer.json; give --tokens instead")
                }
                promptTokens = chat
                    ? try ChatRenderer(tokenizer: tokenizer, model: options.model ?? "").render([(role: "user", content: prompt!)]).tokens
                    : tokenizer.encode(prompt!)
            }
            var decoder = engine.tokenizer.map { StreamingDecoder(tokenizer: $0) }
            let sampler = sampling.sampler()
            let generated = try engine.generate(prompt: promptTokens, maxNewTokens: maxTokens, sampler: sampler) { token in
                guard !json else { return }
                if decoder != nil {
                    Output.write(decoder!.push(token))
                } else {
                    Output.write("\(token) ")
                }
            }
            guard engine.isRoot else { return }
            if json {
                let text = engine.tokenizer?.decode(generated) ?? ""
                Output.write(try jsonString(Result(prompt_tokens: promptTokens, completion_tokens: generated, text: text)) + "\n")
            } else {
                if decoder != nil { Output.write(decoder!.flush()) }
                Output.write("\n")
            }
        }
    }
}

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the logits of every position of one or more token sequences.",
        discussion: """
        Several --tokens options run as several sequences in one flattened batch. With \
        --prefix-lengths, the first tokens of each sequence are run in an earlier step (cached), so \
        the printed batch mixes continuing prefills and decode tokens.
        """)

    @OptionGroup var options: ModelOptions

    @Option(help: "Comma-separated token ids, e.g. 1,2,3; repeat for several sequences.")
    var tokens: [String]

    @Option(help: "Per sequence, how many leading tokens to run in an earlier step (comma-separated; default 0).")
    var prefixLengths: String?

    @Flag(help: "Print JSON {\"tokens\":[…],\"logits\":[[…],…]} (one sequence) or {\"sequences\":[…]} (the only output format).")
    var json = false

    func validate() throws {
        guard !tokens.isEmpty else { throw ValidationError("give at least one --tokens") }
        for list in tokens { _ = try parseTokenList(list, option: "--tokens") }
        _ = try options.parsedMode(allowing: options.allowedModes)
        let prefixes = try parsedPrefixes()
        for (prefix, list) in zip(prefixes, try sequences()) where prefix < 0 || prefix >= list.count {
            throw ValidationError("--prefix-lengths: \(prefix) must be in 0..<\(list.count) (the sequence's length), so a token is left for the printed batch")
        }
    }

    func sequences() throws -> [[Int]] { try tokens.map { try parseTokenList($0, option: "--tokens") } }

    func parsedPrefixes() throws -> [Int] {
        guard let prefixLengths else { return [Int](repeating: 0, count: tokens.count) }
        let values = try parseTokenList(prefixLengths, option: "--prefix-lengths")
        guard values.count == tokens.count else {
            throw ValidationError("--prefix-lengths has \(values.count) entries for \(tokens.count) sequences")
        }
        return values
    }

    struct Result: Encodable {
        let tokens: [Int]
        let logits: [[Float]]
    }
    struct Many: Encodable { let sequences: [Result] }

    func run() throws {
        Session.run { communicator in
            let lists = try sequences(), prefixes = try parsedPrefixes()
            var configuration = try options.engineConfiguration(maxSequenceLength: lists.map(\.count).max()!)
            configuration.maxSequences = lists.count
            let engine = try Engine(configuration: configuration, communicator: communicator)
            for list in lists { try engine.validate(tokens: list) }
            let ids = lists.map { _ in engine.newSequence() }
            var prefix = FlatBatch(), main = FlatBatch()
            for (i, list) in lists.enumerated() {
                if prefixes[i] > 0 {
                    prefix.append(sequence: ids[i], tokens: list[..<prefixes[i]].map { Int32($0) }, firstPosition: 0, logits: .none)
                }
                main.append(sequence: ids[i], tokens: list[prefixes[i]...].map { Int32($0) }, firstPosition: prefixes[i], logits: .all)
            }
            if !prefix.isEmpty { _ = try engine.forward(prefix) }
            let rows = try engine.forward(main)
            guard engine.isRoot else { return }
            var results: [Result] = []
            var row = 0
            for (i, list) in lists.enumerated() {
                let count = list.count - prefixes[i]
                results.append(Result(tokens: list, logits: Array(rows[row..<row + count])))
                row += count
            }
            Output.write(try (results.count == 1 ? jsonString(results[0]) : jsonString(Many(sequences: results))) + "\n")
        }
    }
}

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Tokenize text with the model's tokenizer.")

    @Option(help: "Hugging Face model folder holding tokenizer.json, or a GGUF file (its tokenizer metadata).")
    var model: String

    @Option(help: "Text to tokenize.")
    var text: String

    @Flag(help: "Do not add special tokens (BOS).")
    var noSpecial = false

    @Flag(help: "Print JSON {\"ids\":[…]} (the only output format).")
    var json = false

    struct Result: Encodable { let ids: [Int] }

    func run() throws {
        Session.run { communicator in
            // Every rank checks the tokenizer, so a bad file fails everywhere alike.
            let tokenizer = try communicator.agree { () throws -> Tokenizer in
                guard let tokenizer = try Tokenizer.of(model: URL(fileURLWithPath: model)) else {
                    throw ValidationError("--model \(model): the model has no tokenizer (no tokenizer.json, no tokenizer.ggml.model)")
                }
                return tokenizer
            }
            if communicator.isRoot {
                let ids = tokenizer.encode(text, addSpecialTokens: !noSpecial)
                Output.write(try jsonString(Result(ids: ids)) + "\n")
            }
        }
    }
}
