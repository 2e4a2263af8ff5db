import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// A small, dependency-free, blocking HTTP/1.1 client for end-to-end tests
// against a server on 127.0.0.1. One connection per request (`Connection:
// close`); every read and write waits at most `timeout` seconds, so a hung
// server fails the test with `HTTPClientError.timeout` instead of hanging it.

struct HTTPResponse {
    let status: Int
    /// Header names lower-cased; repeated headers joined with ", ".
    let headers: [String: String]
    let body: Data

    var text: String { String(decoding: body, as: UTF8.self) }

    /// The body as a JSON object.
    func json() throws -> [String: Any] {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: body, options: [.fragmentsAllowed])
        } catch {
            throw HTTPClientError.malformed("body is not JSON (status \(status)): \(text.prefix(500))")
        }
        guard let dictionary = object as? [String: Any] else {
            throw HTTPClientError.malformed("body is not a JSON object (status \(status)): \(text.prefix(500))")
        }
        return dictionary
    }
}

enum HTTPClientError: Error, CustomStringConvertible {
    case connect(String)
    case timeout
    case malformed(String)

    var description: String {
        switch self {
        case .connect(let message): "HTTP connection error: \(message)"
        case .timeout: "HTTP timeout: the server did not answer in time"
        case .malformed(let message): "malformed HTTP response: \(message)"
        }
    }
}

struct HTTPClient {
    let port: Int
    /// Seconds to wait for each read (and each write).
    var timeout: Double = 60
    /// IPv4 address of the server (a simulated cluster's host is not loopback).
    var host = "127.0.0.1"

    init(port: Int, timeout: Double = 60, host: String = "127.0.0.1") {
        self.port = port
        self.timeout = timeout
        self.host = host
    }

    /// Sends a request and reads the whole response (Content-Length, chunked, or until close).
    func send(_ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil) throws -> HTTPResponse {
        let connection = try HTTPSocketConnection(host: host, port: port, timeout: timeout)
        defer { connection.close() }
        return try connection.exchange(request(method, path, headers: headers, body: body)) {
            try connection.readResponse(method: method)
        }
    }

    /// POSTs `object` serialized with JSONSerialization (Content-Type: application/json).
    func postJSON(_ path: String, _ object: Any, headers: [String: String] = [:]) throws -> HTTPResponse {
        let body = try JSONSerialization.data(withJSONObject: object)
        return try send("POST", path, headers: jsonHeaders(headers), body: body)
    }

    /// Writes raw bytes (for malformed-request tests) and reads the response.
    /// With `halfClose` the write side is shut down after the bytes are sent,
    /// so a server waiting for the rest of a truncated request sees end of stream.
    func sendRaw(_ bytes: Data, halfClose: Bool = false) throws -> HTTPResponse {
        let connection = try HTTPSocketConnection(host: host, port: port, timeout: timeout)
        defer { connection.close() }
        return try connection.exchange(bytes, halfClose: halfClose) {
            try connection.readResponse(method: "")
        }
    }

    /// Starts a streaming request (server-sent events): POSTs `object` as JSON
    /// and returns after the status line and headers are read.
    func openStream(_ path: String, _ object: Any, headers: [String: String] = [:]) throws -> SSEStream {
        let body = try JSONSerialization.data(withJSONObject: object)
        var allHeaders = jsonHeaders(headers)
        if !allHeaders.keys.contains(where: { $0.lowercased() == "accept" }) {
            allHeaders["Accept"] = "text/event-stream"
        }
        let connection = try HTTPSocketConnection(host: host, port: port, timeout: timeout)
        do {
            let head = try connection.exchange(request("POST", path, headers: allHeaders, body: body)) {
                try connection.readHead(method: "POST")
            }
            return SSEStream(connection: connection, status: head.status, headers: head.headers)
        } catch {
            connection.close()
            throw error
        }
    }

    private func jsonHeaders(_ headers: [String: String]) -> [String: String] {
        var result = headers
        if !headers.keys.contains(where: { $0.lowercased() == "content-type" }) {
            result["Content-Type"] = "application/json"
        }
        return result
    }

    private func request(_ method: String, _ path: String, headers: [String: String], body: Data?) -> Data {
        let names = Set(headers.keys.map { $0.lowercased() })
        var lines = ["\(method) \(path) HTTP/1.1"]
        if !names.contains("host") { lines.append("Host: \(host):\(port)") }
        lines.append("Connection: close")
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) where name.lowercased() != "connection" {
            lines.append("\(name): \(value)")
        }
        if !names.contains("content-length") && !names.contains("transfer-encoding") {
            if let body {
                lines.append("Content-Length: \(body.count)")
            } else if ["POST", "PUT", "PATCH"].contains(method.uppercased()) {
                lines.append("Content-Length: 0")
            }
        }
        var data = Data((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8)
        if let body { data.append(body) }
        return data
    }
}

/// A server-sent-events response being read event by event.
final class SSEStream {
    let status: Int
    let headers: [String: String]

    private let connection: HTTPSocketConnection
    /// Decoded body bytes not yet split into lines.
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private var finished = false

    fileprivate init(connection: HTTPSocketConnection, status: Int, headers: [String: String]) {
        self.connection = connection
        self.status = status
        self.headers = headers
    }

    deinit { connection.close() }

    /// The `data:` payload of the next event (multi-line data joined with "\n"),
    /// nil at end of stream. Handles chunked transfer encoding and events split
    /// across reads or chunks; ignores comment lines (starting with ':'), blank
    /// keep-alives and the `event:`/`id:`/`retry:` fields. As the SSE spec says,
    /// an event not terminated by a blank line before end of stream is dropped.
    func nextEvent() throws -> String? {
        var data: [String] = []
        while let line = try nextLine() {
            if line.isEmpty {
                if !data.isEmpty { return data.joined(separator: "\n") }
                continue
            }
            if line.hasPrefix(":") { continue }
            let field: Substring, value: Substring
            if let colon = line.firstIndex(of: ":") {
                field = line[..<colon]
                let rest = line[line.index(after: colon)...]
                value = rest.hasPrefix(" ") ? rest.dropFirst() : rest
            } else {
                field = line[...]
                value = ""
            }
            if field == "data" { data.append(String(value)) }
        }
        return nil
    }

    /// Every remaining event up to the end of the stream.
    func allEvents() throws -> [String] {
        var events: [String] = []
        while let event = try nextEvent() { events.append(event) }
        return events
    }

    /// The rest of the body, undecoded (e.g. a JSON error sent instead of a stream).
    func remainingBody() throws -> Data {
        var data = Data(pending[pendingStart...])
        pending = []
        pendingStart = 0
        while !finished, let piece = try connection.nextBodyPiece() { data.append(contentsOf: piece) }
        finished = true
        return data
    }

    /// Closes the socket mid-stream (a client disconnect).
    func close() {
        finished = true
        connection.close()
    }

    /// The next LF-terminated line of the body (trailing CR removed), nil at end of stream.
    private func nextLine() throws -> String? {
        var searchFrom = pendingStart
        while true {
            if let newline = pending[searchFrom...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > pendingStart && pending[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: pending[pendingStart..<end], as: UTF8.self)
                pendingStart = newline + 1
                if pendingStart == pending.count {
                    pending.removeAll(keepingCapacity: true)
                    pendingStart = 0
                }
                return line
            }
            if finished { return nil }
            guard let piece = try connection.nextBodyPiece() else {
                finished = true
                return nil
            }
            if pendingStart > 0 {
                pending.removeSubrange(0..<pendingStart)
                pendingStart = 0
            }
            searchFrom = pending.count
            pending.append(contentsOf: piece)
        }
    }
}

// MARK: - The socket

/// One TCP connection to 127.0.0.1 with a read buffer and HTTP/1.1 response framing.
final class HTTPSocketConnection {
    private var fd: Int32 = -1
    private let timeout: Double
    private var buffer: [UInt8] = []
    private var position = 0
    private var atEOF = false

    private enum BodyMode { case none, length(Int), chunked, untilClose }
    private var bodyMode = BodyMode.none
    /// Chunked bodies: bytes left in the current chunk, whether its CRLF is still to be read.
    private var chunkRemaining = 0
    private var chunkNeedsCRLF = false

    init(host: String = "127.0.0.1", port: Int, timeout: Double) throws {
        self.timeout = timeout
        #if os(Linux)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw HTTPClientError.connect("socket: \(Self.errorString(errno))") }
        #if !os(Linux)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        do {
            try connect(host: host, port: port)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    func close() {
        guard fd >= 0 else { return }
        #if canImport(Glibc)
        _ = Glibc.close(fd)
        #else
        _ = Darwin.close(fd)
        #endif
        fd = -1
    }

    /// Connects without blocking longer than `timeout` (non-blocking connect + poll).
    private func connect(host: String, port: Int) throws {
        guard (1...65535).contains(port) else { throw HTTPClientError.connect("bad port \(port)") }
        var ip = in_addr()
        guard inet_pton(AF_INET, host, &ip) == 1 else { throw HTTPClientError.connect("bad IPv4 address \(host)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = ip
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                #if canImport(Glibc)
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                #else
                Darwin.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                #endif
            }
        }
        if result != 0 {
            let code = errno
            guard code == EINPROGRESS || code == EINTR else {
                throw HTTPClientError.connect("\(host):\(port): \(Self.errorString(code))")
            }
            try wait(for: Int32(POLLOUT))
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { throw HTTPClientError.connect("\(host):\(port): \(Self.errorString(error))") }
        }
        _ = fcntl(fd, F_SETFL, flags)
    }

    /// Writes `request` and runs `read`. A failed write (the server may close
    /// early after rejecting a request) is reported only if no response can be read.
    func exchange<T>(_ request: Data, halfClose: Bool = false, read: () throws -> T) throws -> T {
        var writeError: Error?
        do {
            try write(request)
            if halfClose { _ = shutdown(fd, Int32(SHUT_WR)) }
        } catch {
            writeError = error
        }
        do {
            return try read()
        } catch {
            throw writeError ?? error
        }
    }

    private func write(_ data: Data) throws {
        #if os(Linux)
        let flags = Int32(MSG_NOSIGNAL)
        #else
        let flags: Int32 = 0
        #endif
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                guard fd >= 0 else { throw HTTPClientError.connect("send: socket closed") }
                try wait(for: Int32(POLLOUT))
                let sent = Foundation.send(fd, raw.baseAddress! + offset, raw.count - offset, flags)
                if sent >= 0 {
                    offset += sent
                    continue
                }
                let code = errno
                if code == EINTR || code == EAGAIN || code == EWOULDBLOCK { continue }
                throw HTTPClientError.connect("send: \(Self.errorString(code))")
            }
        }
    }

    /// Waits until the socket is ready for `events`, at most `timeout` seconds.
    private func wait(for events: Int32) throws {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, timeout) * 1e9)
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { throw HTTPClientError.timeout }
            let milliseconds = Int32(min(Double(deadline - now) / 1e6, Double(Int32.max)).rounded(.up))
            var descriptor = pollfd(fd: fd, events: Int16(events), revents: 0)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 { return } // ready, or an error/hang-up that the next call reports
            if ready == 0 { throw HTTPClientError.timeout }
            let code = errno
            if code == EINTR { continue }
            throw HTTPClientError.connect("poll: \(Self.errorString(code))")
        }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    private func fill() throws -> Bool {
        if atEOF || fd < 0 {
            atEOF = true
            return false
        }
        if position > 0 && position == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            position = 0
        } else if position > 65536 && position * 2 > buffer.count {
            buffer.removeSubrange(0..<position)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            try wait(for: Int32(POLLIN))
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                buffer.append(contentsOf: chunk[0..<count])
                return true
            }
            if count == 0 {
                atEOF = true
                return false
            }
            let code = errno
            if code == EINTR || code == EAGAIN || code == EWOULDBLOCK { continue }
            if code == ECONNRESET {
                atEOF = true
                return false
            }
            throw HTTPClientError.connect("recv: \(Self.errorString(code))")
        }
    }

    /// The next LF-terminated line (trailing CR removed), nil at end of stream.
    private func readLine() throws -> String? {
        var searchFrom = position
        while true {
            if let newline = buffer[searchFrom...].firstIndex(of: UInt8(ascii: "\n")) {
                var end = newline
                if end > position && buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let line = String(decoding: buffer[position..<end], as: UTF8.self)
                position = newline + 1
                return line
            }
            guard buffer.count - position < 1 << 20 else { throw HTTPClientError.malformed("line longer than 1 MiB") }
            let scanned = buffer.count - position
            guard try fill() else { return nil }
            searchFrom = position + scanned
        }
    }

    /// Up to `limit` buffered or newly received bytes; nil at end of stream.
    private func readSome(limit: Int) throws -> [UInt8]? {
        if position == buffer.count {
            guard try fill() else { return nil }
        }
        let end = min(buffer.count, position + limit)
        let bytes = Array(buffer[position..<end])
        position = end
        return bytes
    }

    /// Reads the status line and headers (skipping interim 1xx responses) and
    /// prepares `nextBodyPiece` for the body's framing.
    func readHead(method: String) throws -> (status: Int, headers: [String: String]) {
        while true {
            guard let statusLine = try readLine() else {
                throw HTTPClientError.malformed("connection closed before the status line")
            }
            let parts = statusLine.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100...999).contains(status) else {
                throw HTTPClientError.malformed("bad status line: \(statusLine.prefix(200))")
            }
            var headers: [String: String] = [:]
            while true {
                guard let line = try readLine() else {
                    throw HTTPClientError.malformed("connection closed inside the headers")
                }
                if line.isEmpty { break }
                guard let colon = line.firstIndex(of: ":") else {
                    throw HTTPClientError.malformed("bad header line: \(line.prefix(200))")
                }
                let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if let existing = headers[name] {
                    headers[name] = existing + ", " + value
                } else {
                    headers[name] = value
                }
            }
            if (100..<200).contains(status) && status != 101 { continue }

            chunkRemaining = 0
            chunkNeedsCRLF = false
            if method.uppercased() == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 {
                bodyMode = .none
            } else if let encoding = headers["transfer-encoding"],
                      encoding.lowercased().split(separator: ",").last?.trimmingCharacters(in: .whitespaces) == "chunked" {
                bodyMode = .chunked
            } else if let length = headers["content-length"] {
                guard let count = Int(length.split(separator: ",").first?.trimmingCharacters(in: .whitespaces) ?? ""),
                      count >= 0 else {
                    throw HTTPClientError.malformed("bad Content-Length: \(length)")
                }
                bodyMode = .length(count)
            } else {
                bodyMode = .untilClose
            }
            return (status, headers)
        }
    }

    /// The next piece of the decoded body, nil at its end.
    func nextBodyPiece() throws -> [UInt8]? {
        switch bodyMode {
        case .none:
            return nil
        case .length(let remaining):
            if remaining == 0 {
                bodyMode = .none
                return nil
            }
            guard let bytes = try readSome(limit: remaining) else {
                throw HTTPClientError.malformed("connection closed with \(remaining) body bytes missing")
            }
            bodyMode = .length(remaining - bytes.count)
            return bytes
        case .untilClose:
            guard let bytes = try readSome(limit: Int.max) else {
                bodyMode = .none
                return nil
            }
            return bytes
        case .chunked:
            if chunkRemaining == 0 {
                if chunkNeedsCRLF {
                    guard let line = try readLine() else {
                        throw HTTPClientError.malformed("connection closed after a chunk's data")
                    }
                    guard line.isEmpty else { throw HTTPClientError.malformed("chunk data longer than its size") }
                    chunkNeedsCRLF = false
                }
                guard let sizeLine = try readLine() else {
                    throw HTTPClientError.malformed("connection closed inside a chunked body (no final chunk)")
                }
                let sizeText = sizeLine.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
                    .trimmingCharacters(in: .whitespaces)
                guard let size = Int(sizeText, radix: 16), size >= 0 else {
                    throw HTTPClientError.malformed("bad chunk size line: \(sizeLine.prefix(100))")
                }
                if size == 0 {
                    // Trailers, up to the blank line (a missing one at close is tolerated).
                    while let trailer = try readLine(), !trailer.isEmpty {}
                    bodyMode = .none
                    return nil
                }
                chunkRemaining = size
            }
            guard let bytes = try readSome(limit: chunkRemaining) else {
                throw HTTPClientError.malformed("connection closed inside a chunk")
            }
            chunkRemaining -= bytes.count
            if chunkRemaining == 0 { chunkNeedsCRLF = true }
            return bytes
        }
    }

    /// Reads a whole response.
    func readResponse(method: String) throws -> HTTPResponse {
        let head = try readHead(method: method)
        var body = Data()
        while let piece = try nextBodyPiece() { body.append(contentsOf: piece) }
        return HTTPResponse(status: head.status, headers: head.headers, body: body)
    }

    private static func errorString(_ code: Int32) -> String {
        String(cString: strerror(code)) + " (errno \(code))"
    }
}
