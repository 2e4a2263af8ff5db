#!/usr/bin/env python3
"""Bounded load generator for an OpenAI-compatible completions server.

For each concurrency level C it sends --requests streaming requests in total
(at least C), from C worker threads each sending requests back to back, and
reports throughput and latency:

    Scripts/loadgen.py --url http://127.0.0.1:8000 --concurrency 1,4,16 \
        --requests 32 --max-tokens 64 [--prompt-tokens 32 | --prompt TEXT] \
        [--model NAME] [--api-key KEY] [--warmup 2] [--json OUT.json]

Every request is POST /v1/completions with stream, stream_options.include_usage,
temperature 0 and ignore_eos, so each one generates exactly --max-tokens tokens
on a server that honours ignore_eos. Time to first token (TTFT) runs from
sending the request to the first chunk with text or token ids; inter-token
latency (ITL) is the gap between successive such chunks. Generated tokens come from the
final usage.completion_tokens (else the number of chunks with text).
Percentiles are nearest-rank.

A Markdown table goes to stdout, progress to stderr. Exits 1 if any request
failed (non-200 status, error event, stream without [DONE], or an exception).
Standard library only.
"""

import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
import urllib.parse


def log(message):
    print(message, file=sys.stderr, flush=True)


def percentile(values, p):
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class Target:
    """Where requests go: scheme, host, port and the path prefix."""

    def __init__(self, url, api_key, timeout):
        parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parsed.scheme not in ("http", "https"):
            raise SystemExit(f"loadgen: unsupported URL scheme in {url!r}")
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if self.https else 80)
        prefix = parsed.path.rstrip("/")
        if prefix.endswith("/v1"):  # accept both http://host:port and http://host:port/v1
            prefix = prefix[: -len("/v1")]
        self.prefix = prefix
        self.api_key = api_key
        self.timeout = timeout

    def connection(self):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def headers(self, extra=None):
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if extra:
            headers.update(extra)
        return headers


def first_model(target):
    connection = target.connection()
    try:
        connection.request("GET", target.prefix + "/v1/models", headers=target.headers())
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET /v1/models -> {response.status}: {body[:300]!r}")
        models = json.loads(body).get("data") or []
        if not models or "id" not in models[0]:
            raise RuntimeError(f"GET /v1/models listed no model: {body[:300]!r}")
        return models[0]["id"]
    finally:
        connection.close()


def make_prompt(args, r):
    if args.prompt is not None:
        return args.prompt
    return [(i * 7 + r) % 200 + 10 for i in range(args.prompt_tokens)]


def chunk_has_text(event):
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if choice.get("text") or choice.get("token_ids"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta.get("content"):
            return True
    return False


def run_request(target, args, model, r):
    """One streaming completion. Returns a dict describing what happened."""
    body = json.dumps({
        "model": model,
        "prompt": make_prompt(args, r),
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        # vLLM's extension: token ids per chunk, so tokens count even when they
        # complete no text (random-weight models have no tokenizer).
        "return_token_ids": True,
    }).encode()
    result = {"request": r, "ok": False, "status": None, "error": None, "ttft_ms": None,
              "itl_ms": [], "completion_tokens": 0, "content_chunks": 0, "duration_ms": None}
    connection = target.connection()
    start = time.perf_counter()
    try:
        connection.request("POST", target.prefix + "/v1/completions", body=body,
                           headers=target.headers({"Content-Type": "application/json",
                                                   "Accept": "text/event-stream"}))
        response = connection.getresponse()
        result["status"] = response.status
        if response.status != 200:
            result["error"] = response.read()[:500].decode("utf-8", "replace")
            return result
        content_times = []
        usage_tokens = None
        saw_done = False
        data_lines = []
        while True:
            raw = response.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                if line.startswith("data:"):
                    data_lines.append(line[5:][1:] if line[5:6] == " " else line[5:])
                continue  # comments and other fields are ignored
            if not data_lines:
                continue
            data, data_lines = "\n".join(data_lines), []
            now = time.perf_counter()
            if data == "[DONE]":
                saw_done = True
                break
            event = json.loads(data)
            if isinstance(event, dict) and event.get("error"):
                result["error"] = f"error event: {json.dumps(event['error'])[:500]}"
                return result
            if chunk_has_text(event):
                content_times.append(now)
            usage = event.get("usage") if isinstance(event, dict) else None
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                usage_tokens = int(usage["completion_tokens"])
        end = time.perf_counter()
        result["duration_ms"] = (end - start) * 1000
        result["content_chunks"] = len(content_times)
        result["completion_tokens"] = usage_tokens if usage_tokens is not None else len(content_times)
        if content_times:
            result["ttft_ms"] = (content_times[0] - start) * 1000
            result["itl_ms"] = [(b - a) * 1000 for a, b in zip(content_times, content_times[1:])]
        if not saw_done:
            result["error"] = "stream ended without data: [DONE]"
            return result
        result["ok"] = True
        return result
    except Exception as error:  # noqa: BLE001 - every failure is recorded, not raised
        result["error"] = f"{type(error).__name__}: {error}"
        if result["status"] is None:
            result["status"] = "exception"
        return result
    finally:
        if result["duration_ms"] is None:
            result["duration_ms"] = (time.perf_counter() - start) * 1000
        connection.close()


def run_level(target, args, model, concurrency, first_request):
    total = max(args.requests, concurrency)
    next_index = [0]
    lock = threading.Lock()
    results = []

    def worker():
        while True:
            with lock:
                if next_index[0] >= total:
                    return
                index = next_index[0]
                next_index[0] += 1
            result = run_request(target, args, model, first_request + index)
            with lock:
                results.append(result)
                done = len(results)
            if not result["ok"]:
                log(f"  request {result['request']} failed: status {result['status']}: {result['error']}")
            if done % max(1, total // 8) == 0 or done == total:
                log(f"  C={concurrency}: {done}/{total} done")

    log(f"C={concurrency}: {total} requests")
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start

    results.sort(key=lambda item: item["request"])
    succeeded = [item for item in results if item["ok"]]
    failures = [{"request": item["request"], "status": item["status"], "error": item["error"]}
                for item in results if not item["ok"]]
    tokens = sum(item["completion_tokens"] for item in succeeded)
    ttfts = [item["ttft_ms"] for item in succeeded if item["ttft_ms"] is not None]
    itls = [gap for item in succeeded for gap in item["itl_ms"]]
    level = {
        "concurrency": concurrency,
        "requests": total,
        "succeeded": len(succeeded),
        "failures": len(failures),
        "failed_requests": failures,
        "wall_s": wall,
        "requests_per_s": len(succeeded) / wall if wall > 0 else 0.0,
        "completion_tokens": tokens,
        "tokens_per_request_mean": statistics.mean(item["completion_tokens"] for item in succeeded) if succeeded else None,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "ttft_ms": {"p50": percentile(ttfts, 50), "p99": percentile(ttfts, 99),
                    "mean": statistics.mean(ttfts) if ttfts else None},
        "itl_ms": {"p50": percentile(itls, 50), "p99": percentile(itls, 99),
                   "mean": statistics.mean(itls) if itls else None},
        "per_request": [{key: item[key] for key in ("request", "ok", "status", "ttft_ms", "duration_ms",
                                                     "completion_tokens", "content_chunks")}
                        for item in results],
    }
    log(f"C={concurrency}: {len(succeeded)}/{total} ok in {wall:.2f}s, {level['tokens_per_s']:.1f} tok/s")
    return level


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(levels, scaling):
    print("| C | requests | failures | wall s | req/s | tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for level in levels:
        print(f"| {level['concurrency']} | {level['requests']} | {level['failures']} | {fmt(level['wall_s'], 2)} "
              f"| {fmt(level['requests_per_s'], 2)} | {fmt(level['tokens_per_s'])} "
              f"| {fmt(level['ttft_ms']['p50'])} | {fmt(level['ttft_ms']['p99'])} "
              f"| {fmt(level['itl_ms']['p50'])} | {fmt(level['itl_ms']['p99'])} |")
    if scaling is not None:
        print()
        if scaling["ratio"] is None:
            print(f"tokens/s scaling C={scaling['c_max']} vs C={scaling['c_min']}: n/a")
        else:
            print(f"tokens/s scaling C={scaling['c_max']} vs C={scaling['c_min']}: {scaling['ratio']:.2f}x")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default %(default)s)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default %(default)s)")
    parser.add_argument("--requests", type=int, default=32, help="requests per level, at least C (default %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per request (default %(default)s)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-tokens", type=int, default=None,
                        help="send a prompt of K token ids (default 32 when --prompt is absent)")
    prompt.add_argument("--prompt", default=None, help="send this text as the prompt")
    parser.add_argument("--model", default=None, help="model name (default: first id of GET /v1/models)")
    parser.add_argument("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    parser.add_argument("--warmup", type=int, default=2, help="sequential warm-up requests, not measured (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600, help="socket timeout per request, seconds (default %(default)s)")
    parser.add_argument("--json", metavar="OUT.json", default=None, help="also write every number here")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.levels or any(level < 1 for level in args.levels):
        parser.error("--concurrency levels must be >= 1")
    if args.requests < 1 or args.max_tokens < 1 or args.warmup < 0:
        parser.error("--requests and --max-tokens must be >= 1, --warmup >= 0")
    if args.prompt is None and args.prompt_tokens is None:
        args.prompt_tokens = 32
    if args.prompt_tokens is not None and args.prompt_tokens < 1:
        parser.error("--prompt-tokens must be >= 1")
    return args


def main(argv):
    args = parse_args(argv)
    target = Target(args.url, args.api_key, args.timeout)
    model = args.model
    if model is None:
        try:
            model = first_model(target)
        except Exception as error:  # noqa: BLE001
            log(f"loadgen: cannot determine the model: {type(error).__name__}: {error}")
            return 2
        log(f"model: {model}")

    warmup_failures = []
    request_number = 0
    for _ in range(args.warmup):
        result = run_request(target, args, model, request_number)
        request_number += 1
        if not result["ok"]:
            warmup_failures.append({"request": result["request"], "status": result["status"], "error": result["error"]})
            log(f"warm-up request failed: status {result['status']}: {result['error']}")
    if args.warmup:
        log(f"warm-up: {args.warmup - len(warmup_failures)}/{args.warmup} ok")

    levels = []
    for concurrency in args.levels:
        level = run_level(target, args, model, concurrency, request_number)
        request_number += level["requests"]
        levels.append(level)

    c_min = min(levels, key=lambda level: level["concurrency"])
    c_max = max(levels, key=lambda level: level["concurrency"])
    scaling = None
    if len(levels) > 1:
        ratio = c_max["tokens_per_s"] / c_min["tokens_per_s"] if c_min["tokens_per_s"] > 0 else None
        scaling = {"c_min": c_min["concurrency"], "c_max": c_max["concurrency"], "ratio": ratio}

    print_table(levels, scaling)
    failed = sum(level["failures"] for level in levels) + len(warmup_failures)
    if args.json:
        report = {
            "config": {"url": args.url, "model": model, "concurrency": args.levels, "requests": args.requests,
                       "max_tokens": args.max_tokens, "prompt_tokens": args.prompt_tokens,
                       "prompt": args.prompt, "warmup": args.warmup},
            "warmup_failures": warmup_failures,
            "levels": levels,
            "scaling": scaling,
            "failed": failed,
        }
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        log(f"wrote {args.json}")
    if failed:
        log(f"loadgen: {failed} request(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        log("loadgen: interrupted")
        sys.exit(130)
