// A complete Hummingbird app embedding Weft's serving engine (Docs/Embedding.md).
//
//   swift build -c release --product weft-embedding-example
//   mpirun -np 2 .build/release/weft-embedding-example /path/to/model 8080
//   curl -N localhost:8080/generate -d 'The capital of France is'
//
// Every rank loads its shard of the model and runs the engine loop; rank 0
// also runs the HTTP app, whose handlers submit requests to the engine and
// stream the text back as it is generated.
import Foundation
import Hummingbird
import WeftRuntime

@main
struct EmbeddingExample {
    static func main() {
        let arguments = CommandLine.arguments
        guard arguments.count == 3, let port = Int(arguments[2]) else {
            FileHandle.standardError.write(Data("usage: weft-embedding-example MODEL_DIR PORT\n".utf8))
            exit(2)
        }
        var configuration = ServingConfiguration(engine: EngineConfiguration(weights: .checkpoint(URL(fileURLWithPath: arguments[1]))))
        configuration.maxRunningSequences = 8
        // Every rank: MPI, the model, the engine loop until shutdown, exit
        // (errors such as a bad model path are reported, and every rank exits 1).
        ServingJob.run(configuration, frontEnd: GenerateApp(port: port))
    }
}

/// Rank 0's HTTP app: POST /generate with the prompt as the body; the
/// completion streams back as text.
struct GenerateApp: ServingFrontEnd {
    let port: Int

    func start(_ engine: ServingEngine) {
        let router = Router()
        router.post("/generate") { request, _ -> Response in
            let prompt = String(buffer: try await request.body.collect(upTo: 1 << 20))
            guard let tokenizer = engine.tokenizer, !prompt.isEmpty else {
                throw HTTPError(.badRequest, message: "send a prompt")
            }
            var generation = GenerationRequest(prompt: tokenizer.encode(prompt), maxTokens: 32)
            generation.temperature = 0
            let submitted: ServingEngine.Generation
            do {
                submitted = try engine.submit(generation)
            } catch let error as ServingError {
                throw HTTPError(.badRequest, message: error.description)
            }
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody { writer in
                do {
                    for try await output in submitted.outputs {
                        try await writer.write(ByteBuffer(string: output.text))
                    }
                } catch {
                    engine.cancel(id: submitted.id)   // the client left, or the engine stopped
                    throw error
                }
                try await writer.finish(nil)
            })
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)),
                              onServerRunning: { channel in
                                  let line = "listening on http://127.0.0.1:\(channel.localAddress?.port ?? port)\n"
                                  FileHandle.standardOutput.write(Data(line.utf8))
                              })
        // The engine loop runs on this thread once `start` returns; the app runs beside it.
        Task.detached {
            // Until SIGTERM or SIGINT; then the engine stops on every rank.
            try? await app.runService()
            engine.shutdown(drain: 0)
        }
    }
}
