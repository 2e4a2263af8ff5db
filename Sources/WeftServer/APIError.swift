import Foundation
import Hummingbird
import HTTPTypes
import WeftRuntime

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`
/// with its HTTP status.
struct APIError: Error, CustomStringConvertible {
    var status: HTTPResponse.Status
    var message: String
    var type: String
    var param: String?
    var code: String?
    /// Seconds a client should wait before retrying (503/429).
    var retryAfter: Int?

    var description: String { message }

    init(status: HTTPResponse.Status, message: String, type: String, param: String?, code: String?, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }

    static func badRequest(_ message: String, param: String? = nil) -> APIError {
        APIError(status: .badRequest, message: message, type: "invalid_request_error", param: param, code: nil)
    }

    static func unauthorized() -> APIError {
        APIError(status: .unauthorized, message: "missing or wrong API key: send Authorization: Bearer <key>",
                 type: "invalid_request_error", param: nil, code: "invalid_api_key")
    }

    static func modelNotFound(_ name: String, served: String) -> APIError {
        APIError(status: .notFound, message: "model '\(name)' does not exist; this server serves '\(served)'",
                 type: "invalid_request_error", param: "model", code: "model_not_found")
    }

    static func bodyTooLarge(limit: Int) -> APIError {
        APIError(status: .contentTooLarge, message: "request body exceeds the limit of \(limit) bytes",
                 type: "invalid_request_error", param: nil, code: "request_too_large")
    }

    static func unavailable(_ message: String, retryAfter: Int = 1) -> APIError {
        APIError(status: .serviceUnavailable, message: message, type: "server_error", param: nil, code: nil,
                 retryAfter: retryAfter)
    }

    static func internalError(_ message: String) -> APIError {
        APIError(status: .internalServerError, message: message, type: "server_error", param: nil, code: nil)
    }

    /// Maps the engine's errors to HTTP.
    init(_ error: ServingError) {
        switch error {
        case .invalidRequest(let param, let message): self = .badRequest(message, param: param)
        case .overloaded(let message): self = .unavailable(message)
        case .shuttingDown: self = .unavailable("the server is shutting down", retryAfter: 5)
        case .engineFailed(let message): self = .internalError("the engine failed: \(message)")
        }
    }

    /// Turns a JSON decoding failure into a message naming the field.
    init(decoding error: Error) {
        if let error = error as? APIError { self = error; return }
        guard let error = error as? DecodingError else {
            self = .badRequest("invalid request body: \(error)")
            return
        }
        func path(_ keys: [CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().drop(while: { $0 == "." }).description
        }
        switch error {
        case .keyNotFound(let key, let context):
            let name = path(context.codingPath + [key])
            self = .badRequest("missing required field '\(name)'", param: name)
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            let name = path(context.codingPath)
            self = .badRequest("field '\(name)' must be \(APIError.describe(type))", param: name)
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                self = .badRequest("request body is not valid JSON")
            } else {
                let name = path(context.codingPath)
                self = .badRequest("field '\(name)' is invalid: \(context.debugDescription)", param: name)
            }
        @unknown default:
            self = .badRequest("invalid request body")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        case is [Any].Type: return "an array"
        default: return type is Decodable.Type && String(describing: type).hasPrefix("Array") ? "an array" : "an object"
        }
    }

    struct Body: Encodable {
        struct Inner: Encodable {
            var message: String
            var type: String
            var param: String?
            var code: String?
            enum CodingKeys: String, CodingKey { case message, type, param, code }
            func encode(to encoder: Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(message, forKey: .message)
                try container.encode(type, forKey: .type)
                try container.encode(param, forKey: .param)
                try container.encode(code, forKey: .code)
            }
        }
        var error: Inner
    }

    var body: Body { Body(error: .init(message: message, type: type, param: param, code: code)) }

    func response() -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retryAfter { headers[HTTPField.Name("Retry-After")!] = String(retryAfter) }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSON.encode(body))))
    }
}

enum JSON {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(value))) ?? Array(#"{"error":{"message":"encoding failed","type":"server_error"}}"#.utf8)
    }

    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(bytes: encode(value))))
    }
}
