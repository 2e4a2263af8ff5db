import Foundation

// The subset of OpenAI's API that Weft serves, plus vLLM's common extensions
// (top_k, ignore_eos, stop_token_ids, return_token_ids). Unknown fields are
// ignored, as vLLM does; known fields with unsupported values are refused.

/// `prompt`: a string or token ids (one prompt per request).
enum PromptInput: Decodable {
    case text(String)
    case tokens([Int])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) { self = .text(text); return }
        if let tokens = try? container.decode([Int].self) { self = .tokens(tokens); return }
        if let texts = try? container.decode([String].self) {
            guard texts.count == 1 else { throw APIError.badRequest("prompt: give one prompt per request (got \(texts.count))", param: "prompt") }
            self = .text(texts[0]); return
        }
        if let lists = try? container.decode([[Int]].self) {
            guard lists.count == 1 else { throw APIError.badRequest("prompt: give one prompt per request (got \(lists.count))", param: "prompt") }
            self = .tokens(lists[0]); return
        }
        throw APIError.badRequest("prompt must be a string or an array of token ids", param: "prompt")
    }
}

/// `stop`: a string or up to 4 strings.
struct StopInput: Decodable {
    var strings: [String]
    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let one = try? container.decode(String.self) { strings = [one]; return }
        if let many = try? container.decode([String].self) { strings = many; return }
        throw APIError.badRequest("stop must be a string or an array of strings", param: "stop")
    }
}

struct StreamOptions: Decodable {
    var include_usage: Bool?
}

/// Fields shared by completions and chat completions.
struct SamplingFields: Decodable {
    var model: String?
    var max_tokens: Int?
    var max_completion_tokens: Int?
    var temperature: Double?
    var top_p: Double?
    var top_k: Int?
    var seed: Int?
    var stop: StopInput?
    var stop_token_ids: [Int]?
    var ignore_eos: Bool?
    var stream: Bool?
    var stream_options: StreamOptions?
    var n: Int?
    var return_token_ids: Bool?
    var logprobs: AnyJSON?
    var echo: Bool?
}

/// A request body is parsed once: the sampling fields first (so their
/// errors come first, as before), then the endpoint's own.
struct CompletionRequest: Decodable {
    var sampling: SamplingFields
    var prompt: PromptInput

    enum CodingKeys: String, CodingKey { case prompt }
    init(from decoder: Decoder) throws {
        sampling = try SamplingFields(from: decoder)
        prompt = try decoder.container(keyedBy: CodingKeys.self).decode(PromptInput.self, forKey: .prompt)
    }
}

struct ChatMessage: Decodable {
    var role: String
    var content: String?

    enum CodingKeys: String, CodingKey { case role, content }
    struct Part: Decodable { var type: String; var text: String? }

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        role = try container.decode(String.self, forKey: .role)
        if try container.decodeNil(forKey: .content) {
            content = nil
        } else if let text = try? container.decode(String.self, forKey: .content) {
            content = text
        } else if let parts = try? container.decode([Part].self, forKey: .content) {
            // Text parts are concatenated (OpenAI's content-part form).
            guard parts.allSatisfy({ $0.type == "text" }) else {
                throw APIError.badRequest("messages: only text content parts are supported", param: "messages")
            }
            content = parts.compactMap(\.text).joined()
        } else {
            throw APIError.badRequest("messages: content must be a string or an array of text parts", param: "messages")
        }
    }
}

struct ChatRequest: Decodable {
    var sampling: SamplingFields
    var messages: [ChatMessage]
    var add_generation_prompt: Bool?

    enum CodingKeys: String, CodingKey { case messages, add_generation_prompt }
    init(from decoder: Decoder) throws {
        sampling = try SamplingFields(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        messages = try container.decode([ChatMessage].self, forKey: .messages)
        add_generation_prompt = try container.decodeIfPresent(Bool.self, forKey: .add_generation_prompt)
    }
}

struct TokenizeRequest: Decodable {
    var prompt: String?
    var messages: [ChatMessage]?
    var add_special_tokens: Bool?
    var add_generation_prompt: Bool?
}

struct DetokenizeRequest: Decodable {
    var tokens: [Int]
}

/// Any JSON value, to accept fields whose only supported value is null/false.
struct AnyJSON: Decodable {
    let isNull: Bool
    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        isNull = container.decodeNil()
        if !isNull, let flag = try? container.decode(Bool.self) { isFalse = !flag } else { isFalse = false }
    }
    var isFalse: Bool
}

// MARK: Responses

struct Usage: Encodable {
    var prompt_tokens: Int
    var completion_tokens: Int
    var total_tokens: Int
    init(prompt: Int, completion: Int) {
        prompt_tokens = prompt
        completion_tokens = completion
        total_tokens = prompt + completion
    }
}

struct CompletionChoice: Encodable {
    var index = 0
    var text: String
    var logprobs: String? = nil
    var finish_reason: String?
    var token_ids: [Int]?

    enum CodingKeys: String, CodingKey { case index, text, logprobs, finish_reason, token_ids }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encode(text, forKey: .text)
        try container.encodeNil(forKey: .logprobs)
        try container.encode(finish_reason, forKey: .finish_reason)   // null while streaming
        try container.encodeIfPresent(token_ids, forKey: .token_ids)
    }
}

struct CompletionResponse: Encodable {
    var id: String
    var object = "text_completion"
    var created: Int
    var model: String
    var choices: [CompletionChoice]
    var usage: Usage?
    var prompt_token_ids: [Int]?
}

struct AssistantMessage: Encodable {
    var role: String?
    var content: String?
}

struct ChatChoice: Encodable {
    var index = 0
    var message: AssistantMessage?
    var delta: AssistantMessage?
    var finish_reason: String?
    var token_ids: [Int]?

    enum CodingKeys: String, CodingKey { case index, message, delta, logprobs, finish_reason, token_ids }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(index, forKey: .index)
        try container.encodeIfPresent(message, forKey: .message)
        try container.encodeIfPresent(delta, forKey: .delta)
        try container.encodeNil(forKey: .logprobs)
        try container.encode(finish_reason, forKey: .finish_reason)
        try container.encodeIfPresent(token_ids, forKey: .token_ids)
    }
}

struct ChatResponse: Encodable {
    var id: String
    var object: String
    var created: Int
    var model: String
    var choices: [ChatChoice]
    var usage: Usage?
    var prompt_token_ids: [Int]?
}

struct ModelList: Encodable {
    struct Model: Encodable {
        var id: String
        var object = "model"
        var created: Int
        var owned_by = "weft"
        var max_model_len: Int
    }
    var object = "list"
    var data: [Model]
}
