#!/usr/bin/env python3
"""Load generator for an OpenAI-compatible completions server (standard library only).

Two modes.

Fixed mode (no --rate, no --num-requests): for each concurrency level C it sends
--requests streaming requests in total (at least C), from C worker threads each
sending requests back to back, every one with the same prompt length and
max_tokens, and prints one table row per level:

    Scripts/loadgen.py --url http://127.0.0.1:8000 --concurrency 1,4,16 \\
        --requests 32 --max-tokens 64 [--prompt-tokens 32 | --prompt TEXT]

Mix mode (--rate or --num-requests): a seeded mix of --num-requests requests
whose prompt and output lengths are drawn from log-normals fitted to published
ShareGPT statistics (SHAREGPT below), sent either as a Poisson process at
--rate R req/s (exponential gaps) or from --concurrency C closed-loop workers.
Several levels (--rate 0.5,1,2 or --concurrency 1,4,16) run one after another,
each with the same lengths and arrival pattern (gaps scaled by 1/R) but fresh
token ids, so a level never hits the prefix cache on an earlier level's prompts:

    # a Poisson sweep sized for a 2-core machine and a tiny model
    Scripts/loadgen.py --url http://127.0.0.1:18750 --rate 0.5,1,2 --num-requests 40 \\
        --seed 1 --length-scale 0.25 --max-prompt-tokens 256 --max-output-tokens 64 \\
        --slo-ttft-ms 2000 --slo-itl-ms 200 --json run.json --plot run.svg --label "prefix cache on"
    # 30 % of requests share a 64-token system prompt; 10 % of clients go away
    # mid-stream; 10 % ask for the whole context and stop reading at their sampled length
    Scripts/loadgen.py --url http://127.0.0.1:18750 --rate 1 --num-requests 60 \\
        --shared-prefix-tokens 64 --shared-prefix-share 0.3 \\
        --disconnect-share 0.1 --no-max-tokens-share 0.1
    # closed loop at fixed concurrency with the same mix
    Scripts/loadgen.py --url http://127.0.0.1:18750 --concurrency 1,4 --num-requests 16
    # two saved runs on one plot (e.g. prefix cache on vs off)
    Scripts/loadgen.py --compare on.json off.json --plot on-vs-off.svg
    # the unit tests of the pure parts
    Scripts/loadgen.py --self-test

Every request is a streaming POST /v1/completions with stream_options.include_usage,
ignore_eos, return_token_ids and temperature 0 (--temperature to change it); mix
prompts are token-id arrays (exact lengths; the server accepts "prompt": [ids])
drawn from the seeded RNG in [10, --vocab-size). Lengths are scaled by
--length-scale, clipped to --max-prompt-tokens / --max-output-tokens and to the
server's context (max_model_len from GET /v1/models): prompt + output <= context.

Request kinds in the mix (each request draws its kind from the seeded RNG):
  completed       max_tokens = sampled output length; read to data: [DONE].
  disconnected    (--disconnect-share) closes the connection after a random
                  1..output-1 received tokens; counted apart, never a failure.
  natural end     (--no-max-tokens-share) asks for the whole remaining context
                  (max_tokens = max_model_len - prompt, what the server allows a
                  chat request without max_tokens; /v1/completions, like OpenAI's
                  and vLLM's, defaults an absent max_tokens to 16, so the field is
                  sent explicitly, and only omitted when the server does not say
                  its context) and closes the connection after its sampled output
                  length, as a client whose answer ended would; counted as
                  finished.

Measures. Time to first token (TTFT) runs from sending the request to the first
chunk carrying tokens; inter-token latency (ITL) is the gap between successive
such chunks; E2E is sending to the last token (finished requests). Percentiles are
nearest-rank. Latency percentiles cover finished requests (completed and natural
end). Output tokens/s counts every token received (disconnected ones too); total
tokens/s adds the prompt tokens of the requests sent.

Goodput (DistServe, Zhong et al., OSDI 2024): a request attains the SLO when it
finished, its TTFT <= --slo-ttft-ms and its mean inter-token gap (TPOT,
(E2E - TTFT) / (tokens - 1)) <= --slo-itl-ms. Per level the report gives the SLO
attainment (share of the requests sent, disconnected ones left out, that attain
it) and goodput as requests/s that attained it (vLLM benchmark_serving's
--goodput); over a rate sweep it also gives
DistServe's goodput: the highest offered rate whose attainment is at least
--slo-attainment (default 90 %).

Server side, from GET /metrics before and after each level and every
--metrics-interval seconds during it (parsed leniently; "n/a" when absent): prefix
cache hit rate (delta weft_prefix_cache_hit_tokens / delta
weft_prefix_cache_queried_tokens), preemptions (delta weft_preemptions), peak
weft_running_sequences, weft_queue_depth and weft_kv_blocks_in_use.

Output: Markdown to stdout, progress to stderr, --json OUT for every number,
--plot OUT.svg for TTFT and ITL p50/p99 against offered load (hand-written SVG).
Exit status: 0; 1 if any request failed (non-200, error event, stream without
[DONE], exception; disconnects are not failures); 2 for a bad option (one line
naming it) or an unreachable server.
"""

import argparse
import http.client
import json
import math
import random
import statistics
import sys
import threading
import time
import urllib.parse
from xml.sax.saxutils import escape


def log(message):
    print(message, file=sys.stderr, flush=True)


def percentile(values, p):
    """Nearest-rank percentile of `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values):
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "mean": statistics.mean(values) if values else None, "count": len(values)}


# ---------------------------------------------------------------------------
# The length distribution.
#
# Source: LMSYS-Chat-1M (Zheng et al., "LMSYS-Chat-1M: A Large-Scale Real-World
# LLM Conversation Dataset", ICLR 2024, arXiv:2309.11998), Table 1, row ShareGPT
# (94,145 conversations, 3.51 turns on average): 94.46 +- 626.39 tokens per
# prompt and 348.45 +- 269.93 tokens per response (mean +- standard deviation,
# Llama-2 tokenizer, per turn). Cross-check: the vLLM paper (Kwon et al.,
# "Efficient Memory Management for Large Language Model Serving with
# PagedAttention", SOSP 2023, Fig. 11) gives ShareGPT means of 161.31 input and
# 337.99 output tokens for the requests it replays; the response means agree
# within 3 %, and its input mean is longer because it counts the whole first
# user turn that its sampling keeps.
#
# Each length is a log-normal with that mean and standard deviation (method of
# moments: sigma^2 = ln(1 + (sd/mean)^2), mu = ln(mean) - sigma^2/2), which
# gives a median prompt of 14 tokens with a long tail (the pasted documents and
# code) and a median response of 275 tokens. Lengths are rounded, at least 1.
SHAREGPT = {
    "source": "LMSYS-Chat-1M (Zheng et al., ICLR 2024, arXiv:2309.11998), Table 1, ShareGPT row",
    "prompt": {"mean": 94.46, "std": 626.39},
    "output": {"mean": 348.45, "std": 269.93},
}


def fit_lognormal(mean, std):
    """(mu, sigma) of the log-normal with this mean and standard deviation."""
    sigma2 = math.log(1.0 + (std / mean) ** 2)
    return math.log(mean) - sigma2 / 2.0, math.sqrt(sigma2)


def lognormal_moments(mu, sigma):
    """(mean, std, median) of a log-normal."""
    mean = math.exp(mu + sigma * sigma / 2.0)
    return mean, mean * math.sqrt(math.exp(sigma * sigma) - 1.0), math.exp(mu)


FIRST_TOKEN_ID = 10  # skip the low ids, where tokenizers keep their special tokens


def build_mix(config):
    """The seeded request plan: one dict per request with its prompt length,
    output length, kind and shared-prefix flag (token ids are made per level).

    `config` keys: seed, num_requests, length_scale, max_prompt_tokens,
    max_output_tokens, context (or None), shared_prefix_tokens,
    shared_prefix_share, disconnect_share, no_max_tokens_share.
    """
    rng = random.Random(f"loadgen:{config['seed']}:mix")
    prompt_mu, prompt_sigma = fit_lognormal(SHAREGPT["prompt"]["mean"], SHAREGPT["prompt"]["std"])
    output_mu, output_sigma = fit_lognormal(SHAREGPT["output"]["mean"], SHAREGPT["output"]["std"])
    scale = config["length_scale"]
    prefix = config["shared_prefix_tokens"]
    context = config.get("context")
    plan = []
    for index in range(config["num_requests"]):
        user = max(1, round(rng.lognormvariate(prompt_mu, prompt_sigma) * scale))
        output = max(1, round(rng.lognormvariate(output_mu, output_sigma) * scale))
        shared = prefix > 0 and rng.random() < config["shared_prefix_share"]
        kind_draw = rng.random()
        stop_draw = rng.random()
        prompt = (prefix if shared else 0) + user
        prompt_cap = config["max_prompt_tokens"]
        if context is not None:
            prompt_cap = min(prompt_cap or context - 1, context - 1)
        if prompt_cap is not None:
            prompt = min(prompt, prompt_cap)
        if config["max_output_tokens"] is not None:
            output = min(output, config["max_output_tokens"])
        if context is not None:
            output = min(output, context - prompt)
        if kind_draw < config["disconnect_share"]:
            kind = "disconnect"
            stop_after = 1 + int(stop_draw * max(1, output - 1))  # 1 ... output-1 received tokens
        elif kind_draw < config["disconnect_share"] + config["no_max_tokens_share"]:
            kind, stop_after = "no_max_tokens", output
        else:
            kind, stop_after = "normal", None
        plan.append({"index": index, "prompt_tokens": prompt, "output_tokens": output, "shared_prefix": shared,
                     "kind": kind, "stop_after": stop_after})
    return plan


def prompt_ids(seed, level, item, shared_prefix_tokens, vocab_size):
    """The token ids of one request at one level: the level's shared prefix (if
    the request has it) and then ids unique to (seed, level, request)."""
    span = vocab_size - FIRST_TOKEN_ID
    ids = []
    if item["shared_prefix"]:
        prefix_rng = random.Random(f"loadgen:{seed}:prefix:{level}")
        ids = [FIRST_TOKEN_ID + prefix_rng.randrange(span) for _ in range(min(shared_prefix_tokens, item["prompt_tokens"]))]
    rng = random.Random(f"loadgen:{seed}:tokens:{level}:{item['index']}")
    ids += [FIRST_TOKEN_ID + rng.randrange(span) for _ in range(item["prompt_tokens"] - len(ids))]
    return ids


def poisson_offsets(seed, count):
    """Arrival offsets in seconds of a Poisson process at 1 req/s (divide by the
    rate): cumulative exponential gaps, the first request at 0."""
    rng = random.Random(f"loadgen:{seed}:arrivals")
    offsets, now = [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.expovariate(1.0)
    return offsets


# ---------------------------------------------------------------------------
# Prometheus text.

def parse_metrics(text):
    """{name: value} summed over label sets; a counter's `_total` suffix is also
    stored without it (and the bare name with it), so either spelling finds it.
    Lines that do not parse are skipped."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            _, _, rest = rest.rpartition("}")
        else:
            name, _, rest = line.partition(" ")
        fields = rest.split()
        if not name or not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        values[name] = values.get(name, 0.0) + value
    for name in list(values):
        alias = name[: -len("_total")] if name.endswith("_total") else name + "_total"
        values.setdefault(alias, values[name])
    return values


def metric(values, name):
    return None if values is None else values.get(name)


def delta(before, after, name):
    a, b = metric(before, name), metric(after, name)
    return None if a is None or b is None else b - a


def server_summary(before, after, samples):
    """What the server's metrics say about one level."""
    hits = delta(before, after, "weft_prefix_cache_hit_tokens_total")
    queried = delta(before, after, "weft_prefix_cache_queried_tokens_total")
    scrapes = [s for s in [before] + samples + [after] if s is not None]

    def peak(name):
        seen = [s[name] for s in scrapes if name in s]
        return max(seen) if seen else None

    return {
        "scrapes": len(scrapes),
        "prefix_cache_hit_tokens": hits,
        "prefix_cache_queried_tokens": queried,
        "prefix_cache_hit_rate": hits / queried if hits is not None and queried else None,
        "prefix_cache_blocks_end": metric(after, "weft_prefix_cache_blocks"),
        "preemptions": delta(before, after, "weft_preemptions_total"),
        "peak_running_sequences": peak("weft_running_sequences"),
        "peak_queue_depth": peak("weft_queue_depth"),
        "peak_kv_blocks_in_use": peak("weft_kv_blocks_in_use"),
        "kv_blocks_total": metric(after, "weft_kv_blocks_total"),
    }


# ---------------------------------------------------------------------------
# HTTP.

class Target:
    """Where requests go: scheme, host, port and the path prefix."""

    def __init__(self, url, api_key, timeout):
        parsed = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parsed.scheme not in ("http", "https"):
            raise SystemExit(f"loadgen: error: --url: unsupported scheme in {url!r}")
        self.https = parsed.scheme == "https"
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if self.https else 80)
        prefix = parsed.path.rstrip("/")
        if prefix.endswith("/v1"):  # accept both http://host:port and http://host:port/v1
            prefix = prefix[: -len("/v1")]
        self.prefix = prefix
        self.api_key = api_key
        self.timeout = timeout

    def connection(self, timeout=None):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout or self.timeout)

    def headers(self, extra=None):
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if extra:
            headers.update(extra)
        return headers

    def get(self, path, timeout=None):
        connection = self.connection(timeout)
        try:
            connection.request("GET", self.prefix + path, headers=self.headers())
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def model_info(target):
    """The first entry of GET /v1/models."""
    status, body = target.get("/v1/models")
    if status != 200:
        raise RuntimeError(f"GET /v1/models -> {status}: {body[:300]!r}")
    models = json.loads(body).get("data") or []
    if not models or "id" not in models[0]:
        raise RuntimeError(f"GET /v1/models listed no model: {body[:300]!r}")
    return models[0]


def first_model(target):
    return model_info(target)["id"]


def scrape(target):
    """The server's metrics, or None (no /metrics, or it failed)."""
    try:
        status, body = target.get("/metrics", timeout=10)
    except Exception:  # noqa: BLE001 - metrics are optional
        return None
    if status != 200:
        return None
    return parse_metrics(body.decode("utf-8", "replace"))


def make_prompt(args, r):
    if args.prompt is not None:
        return args.prompt
    return [(i * 7 + r) % 200 + 10 for i in range(args.prompt_tokens)]


def chunk_tokens(event):
    """Tokens a stream chunk carries: its token_ids, else 1 for any text."""
    count = 0
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        ids = choice.get("token_ids")
        if isinstance(ids, list) and ids:
            count += len(ids)
        elif choice.get("text"):
            count += 1
        else:
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("content"):
                count += 1
    return count


def stream_completion(target, payload, stop_after=None):
    """One streaming completion. With `stop_after`, the client closes the
    connection once it has received that many tokens. Returns what happened."""
    body = json.dumps(payload).encode()
    result = {"ok": False, "status": None, "error": None, "ttft_ms": None, "itl_ms": [], "e2e_ms": None,
              "tokens": 0, "usage_completion_tokens": None, "usage_prompt_tokens": None, "content_chunks": 0,
              "closed_early": False, "duration_ms": None, "start": None}
    connection = target.connection()
    start = time.perf_counter()
    result["start"] = start
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
            if not isinstance(event, dict):
                continue
            tokens = chunk_tokens(event)
            if tokens:
                content_times.append(now)
                result["tokens"] += tokens
            usage = event.get("usage")
            if isinstance(usage, dict):
                if usage.get("completion_tokens") is not None:
                    result["usage_completion_tokens"] = int(usage["completion_tokens"])
                if usage.get("prompt_tokens") is not None:
                    result["usage_prompt_tokens"] = int(usage["prompt_tokens"])
            if stop_after is not None and result["tokens"] >= stop_after:
                result["closed_early"] = True
                break
        end = time.perf_counter()
        result["duration_ms"] = (end - start) * 1000
        result["content_chunks"] = len(content_times)
        if content_times:
            result["ttft_ms"] = (content_times[0] - start) * 1000
            result["itl_ms"] = [(b - a) * 1000 for a, b in zip(content_times, content_times[1:])]
            result["e2e_ms"] = (content_times[-1] - start) * 1000
        if not saw_done and not result["closed_early"]:
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
        connection.close()  # closing mid-stream is how a client disconnects


# ---------------------------------------------------------------------------
# Fixed mode (the original bounded load generator).

def run_request(target, args, model, r):
    """One fixed-mode streaming completion."""
    payload = {
        "model": model,
        "prompt": make_prompt(args, r),
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        # vLLM's extension: token ids per chunk, so tokens count even when they
        # complete no text (random-weight models have no tokenizer).
        "return_token_ids": True,
    }
    outcome = stream_completion(target, payload)
    tokens = outcome["usage_completion_tokens"]
    return {"request": r, "ok": outcome["ok"], "status": outcome["status"], "error": outcome["error"],
            "ttft_ms": outcome["ttft_ms"], "itl_ms": outcome["itl_ms"],
            "completion_tokens": tokens if tokens is not None else outcome["content_chunks"],
            "content_chunks": outcome["content_chunks"], "duration_ms": outcome["duration_ms"]}


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


def run_fixed(args, target, model):
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
    report = {
        "mode": "fixed",
        "label": args.label,
        "config": {"url": args.url, "model": model, "concurrency": args.levels, "requests": args.requests,
                   "max_tokens": args.max_tokens, "prompt_tokens": args.prompt_tokens,
                   "prompt": args.prompt, "warmup": args.warmup},
        "warmup_failures": warmup_failures,
        "levels": levels,
        "scaling": scaling,
        "failed": failed,
    }
    return report, failed


# ---------------------------------------------------------------------------
# Mix mode.

class MetricsPoller:
    """Scrapes /metrics every `interval` seconds on a thread of its own."""

    def __init__(self, target, interval):
        self.target, self.interval = target, interval
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(self.interval):
            sample = scrape(self.target)
            if sample is not None:
                self.samples.append(sample)

    def __enter__(self):
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


def mix_request(target, args, model, item, ids):
    payload = {
        "model": model,
        "prompt": ids,
        "temperature": args.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "return_token_ids": True,
    }
    if item["kind"] != "no_max_tokens":
        payload["max_tokens"] = item["output_tokens"]
    elif args.context is not None:
        payload["max_tokens"] = args.context - item["prompt_tokens"]  # all the server would allow
    outcome = stream_completion(target, payload, stop_after=item["stop_after"])
    if not outcome["ok"]:
        state = "failed"
    elif item["kind"] == "disconnect" and outcome["closed_early"]:
        state = "disconnected"
    elif item["kind"] == "no_max_tokens":
        state = "natural_end"
    else:
        state = "completed"
    outcome.update({"index": item["index"], "kind": item["kind"], "state": state,
                    "prompt_tokens": item["prompt_tokens"], "planned_output_tokens": item["output_tokens"]})
    return outcome


def attains(result, slo_ttft, slo_itl):
    """Whether a request met both SLOs (DistServe): finished, TTFT and TPOT within."""
    if result["state"] not in ("completed", "natural_end") or result["ttft_ms"] is None:
        return False
    if slo_ttft is not None and result["ttft_ms"] > slo_ttft:
        return False
    if slo_itl is not None and result["tokens"] > 1:
        tpot = (result["e2e_ms"] - result["ttft_ms"]) / (result["tokens"] - 1)
        if tpot > slo_itl:
            return False
    return True


def run_mix_level(target, args, model, plan, level_index, offered):
    """One level: every request of the plan, at a rate or a concurrency."""
    results = []
    lock = threading.Lock()
    total = len(plan)
    progress_every = max(1, total // 8)
    name = f"rate {offered:g}/s" if args.mode == "rate" else f"C={offered}"

    def one(item):
        ids = prompt_ids(args.seed, level_index, item, args.shared_prefix_tokens, args.vocab_size)
        result = mix_request(target, args, model, item, ids)
        with lock:
            results.append(result)
            done = len(results)
        if result["state"] == "failed":
            log(f"  request {item['index']} failed: status {result['status']}: {result['error']}")
        if done % progress_every == 0 or done == total:
            log(f"  {name}: {done}/{total} done")

    log(f"{name}: {total} requests")
    before = scrape(target)
    with MetricsPoller(target, args.metrics_interval) as poller:
        start = time.perf_counter()
        if args.mode == "rate":
            offsets = poisson_offsets(args.seed, total)
            threads = []
            for item, offset in zip(plan, offsets):
                wait = start + offset / offered - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                thread = threading.Thread(target=one, args=(item,), daemon=True)
                thread.start()
                threads.append(thread)
        else:
            queue = list(plan)

            def worker():
                while True:
                    with lock:
                        if not queue:
                            return
                        item = queue.pop(0)
                    one(item)

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(offered, total))]
            for thread in threads:
                thread.start()
        for thread in threads:
            thread.join()
        duration = time.perf_counter() - start
    after = scrape(target)
    return summarize_level(args, results, duration, offered, server_summary(before, after, poller.samples))


def summarize_level(args, results, duration, offered, server):
    results.sort(key=lambda item: item["index"])
    by_state = {state: [r for r in results if r["state"] == state]
                for state in ("completed", "natural_end", "disconnected", "failed")}
    finished = by_state["completed"] + by_state["natural_end"]
    sent = [r for r in results if r["state"] != "failed"]
    output_tokens = sum(r["tokens"] for r in sent)
    prompt_tokens = sum(r["usage_prompt_tokens"] or r["prompt_tokens"] for r in sent)
    slo_set = args.slo_ttft_ms is not None or args.slo_itl_ms is not None
    attained = sum(1 for r in results if attains(r, args.slo_ttft_ms, args.slo_itl_ms)) if slo_set else None
    rate = (lambda count: count / duration if duration > 0 else 0.0)
    level = {
        "mode": args.mode,
        "offered": offered,
        "requests": len(results),
        "completed": len(by_state["completed"]),
        "natural_end": len(by_state["natural_end"]),
        "disconnected": len(by_state["disconnected"]),
        "failed": len(by_state["failed"]),
        "failed_requests": [{"index": r["index"], "status": r["status"], "error": r["error"]} for r in by_state["failed"]],
        "duration_s": duration,
        "requests_per_s": rate(len(finished)),
        "output_tokens": output_tokens,
        "prompt_tokens": prompt_tokens,
        "output_tokens_per_s": rate(output_tokens),
        "total_tokens_per_s": rate(output_tokens + prompt_tokens),
        "disconnected_tokens": sum(r["tokens"] for r in by_state["disconnected"]),
        "ttft_ms": summary([r["ttft_ms"] for r in finished if r["ttft_ms"] is not None]),
        "itl_ms": summary([gap for r in finished for gap in r["itl_ms"]]),
        "e2e_ms": summary([r["e2e_ms"] for r in finished if r["e2e_ms"] is not None]),
        "slo": {"ttft_ms": args.slo_ttft_ms, "itl_ms": args.slo_itl_ms},
        "slo_attained": attained,
        # Disconnected clients left on their own: neither a hit nor a miss.
        "slo_attainment": attained / (len(results) - len(by_state["disconnected"]))
        if slo_set and len(results) > len(by_state["disconnected"]) else None,
        "goodput_rps": rate(attained) if slo_set else None,
        "server": server,
        "per_request": [{key: r[key] for key in ("index", "kind", "state", "status", "prompt_tokens",
                                                 "planned_output_tokens", "tokens", "ttft_ms", "e2e_ms", "duration_ms")}
                        for r in results],
    }
    # The legacy names, so fixed-mode readers (and --compare) find them too.
    level["wall_s"] = duration
    level["tokens_per_s"] = level["output_tokens_per_s"]
    log(f"  {level['completed'] + level['natural_end']}/{level['requests']} finished, {level['disconnected']} disconnected, "
        f"{level['failed']} failed in {duration:.2f}s, {level['output_tokens_per_s']:.1f} out tok/s")
    return level


def plan_summary(plan):
    prompts = [item["prompt_tokens"] for item in plan]
    outputs = [item["output_tokens"] for item in plan]
    kinds = {kind: sum(1 for item in plan if item["kind"] == kind) for kind in ("normal", "disconnect", "no_max_tokens")}
    return {"requests": len(plan), "shared_prefix": sum(1 for item in plan if item["shared_prefix"]), "kinds": kinds,
            "prompt_tokens": {"mean": statistics.mean(prompts), "median": statistics.median(prompts),
                              "max": max(prompts), "sum": sum(prompts)},
            "output_tokens": {"mean": statistics.mean(outputs), "median": statistics.median(outputs),
                              "max": max(outputs), "sum": sum(outputs)}}


def pct(value):
    return "n/a" if value is None else f"{100 * value:.1f} %"


def num(value, digits=0):
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_mix_report(report):
    levels = report["levels"]
    config = report["config"]
    head = "rate req/s" if config["mode"] == "rate" else "C"
    mix = report["mix"]
    title = f" — {report['label']}" if report.get("label") else ""
    print(f"### Load mix{title}")
    print()
    print(f"{mix['requests']} requests per level, seed {config['seed']}: prompt tokens mean {mix['prompt_tokens']['mean']:.1f}, "
          f"median {mix['prompt_tokens']['median']:g}, max {mix['prompt_tokens']['max']}; output tokens mean "
          f"{mix['output_tokens']['mean']:.1f}, median {mix['output_tokens']['median']:g}, max {mix['output_tokens']['max']} "
          f"(ShareGPT log-normals x {config['length_scale']:g}, clipped); {mix['shared_prefix']} with the "
          f"{config['shared_prefix_tokens']}-token shared prefix; {mix['kinds']['disconnect']} disconnecting, "
          f"{mix['kinds']['no_max_tokens']} asking for the whole context.")
    print()
    print(f"| {head} | requests | completed | natural end | disconnected | failed | duration s | req/s | out tok/s | total tok/s |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for l in levels:
        print(f"| {l['offered']:g} | {l['requests']} | {l['completed']} | {l['natural_end']} | {l['disconnected']} | {l['failed']} "
              f"| {l['duration_s']:.2f} | {l['requests_per_s']:.2f} | {l['output_tokens_per_s']:.1f} | {l['total_tokens_per_s']:.1f} |")
    print()
    print(f"| {head} | TTFT p50 ms | TTFT p90 | TTFT p99 | ITL p50 ms | ITL p90 | ITL p99 | E2E p50 ms | E2E p90 | E2E p99 |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for l in levels:
        cells = [num(l[m][p]) for m in ("ttft_ms", "itl_ms", "e2e_ms") for p in ("p50", "p90", "p99")]
        print(f"| {l['offered']:g} | " + " | ".join(cells) + " |")
    print()
    slo = config["slo_ttft_ms"], config["slo_itl_ms"]
    slo_text = " and ".join(text for text in (slo[0] is not None and f"TTFT <= {slo[0]:g} ms",
                                                slo[1] is not None and f"TPOT <= {slo[1]:g} ms") if text) or "no SLO given"
    print(f"| {head} | SLO attainment ({slo_text}) | goodput req/s | prefix cache hit rate | preemptions | peak running | peak queue | peak KV blocks |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for l in levels:
        s = l["server"]
        kv = num(s["peak_kv_blocks_in_use"])
        if s["peak_kv_blocks_in_use"] is not None and s["kv_blocks_total"] is not None:
            kv += f" / {s['kv_blocks_total']:.0f}"
        print(f"| {l['offered']:g} | {pct(l['slo_attainment'])} | {num(l['goodput_rps'], 2)} | {pct(s['prefix_cache_hit_rate'])} "
              f"| {num(s['preemptions'])} | {num(s['peak_running_sequences'])} | {num(s['peak_queue_depth'])} | {kv} |")
    if report.get("distserve_goodput") is not None:
        g = report["distserve_goodput"]
        print()
        if g["rate"] is None:
            print(f"Goodput (DistServe, attainment >= {100 * g['attainment_target']:g} %): no rate met it.")
        else:
            print(f"Goodput (DistServe, attainment >= {100 * g['attainment_target']:g} %): {g['rate']:g} req/s offered.")


def run_mix(args, target, model, info):
    context = info.get("max_model_len")
    if isinstance(context, int) and context >= 2:
        if args.shared_prefix_tokens >= min(context - 1, args.max_prompt_tokens or context):
            raise OptionError(f"--shared-prefix-tokens: {args.shared_prefix_tokens} leaves no room for a request's own "
                              f"tokens (context {context}, --max-prompt-tokens {args.max_prompt_tokens})")
    else:
        context = None
    args.context = context
    config = {"seed": args.seed, "num_requests": args.num_requests, "length_scale": args.length_scale,
              "max_prompt_tokens": args.max_prompt_tokens, "max_output_tokens": args.max_output_tokens, "context": context,
              "shared_prefix_tokens": args.shared_prefix_tokens, "shared_prefix_share": args.shared_prefix_share,
              "disconnect_share": args.disconnect_share, "no_max_tokens_share": args.no_max_tokens_share}
    plan = build_mix(config)
    mix = plan_summary(plan)
    log(f"mix: {mix['requests']} requests, prompt mean {mix['prompt_tokens']['mean']:.1f} / output mean "
        f"{mix['output_tokens']['mean']:.1f} tokens, context {context}, vocab {args.vocab_size}")

    warmup_failures = []
    for number in range(args.warmup):
        rng = random.Random(f"loadgen:{args.seed}:warmup:{number}")
        ids = [FIRST_TOKEN_ID + rng.randrange(args.vocab_size - FIRST_TOKEN_ID) for _ in range(8)]
        outcome = stream_completion(target, {"model": model, "prompt": ids, "max_tokens": 4, "temperature": 0,
                                             "stream": True, "ignore_eos": True, "return_token_ids": True})
        if not outcome["ok"]:
            warmup_failures.append({"request": number, "status": outcome["status"], "error": outcome["error"]})
            log(f"warm-up request failed: status {outcome['status']}: {outcome['error']}")
    if args.warmup:
        log(f"warm-up: {args.warmup - len(warmup_failures)}/{args.warmup} ok")

    levels = [run_mix_level(target, args, model, plan, index, offered) for index, offered in enumerate(args.levels)]
    distserve = None
    if args.mode == "rate" and levels[0]["slo_attainment"] is not None:
        meeting = [l["offered"] for l in levels if l["slo_attainment"] >= args.slo_attainment]
        distserve = {"attainment_target": args.slo_attainment, "rate": max(meeting) if meeting else None}
    failed = sum(l["failed"] for l in levels) + len(warmup_failures)
    report = {
        "mode": "mix",
        "label": args.label,
        "config": {"url": args.url, "model": model, "mode": args.mode, "levels": args.levels, "seed": args.seed,
                   "num_requests": args.num_requests, "length_scale": args.length_scale,
                   "max_prompt_tokens": args.max_prompt_tokens, "max_output_tokens": args.max_output_tokens,
                   "context": context, "vocab_size": args.vocab_size, "temperature": args.temperature,
                   "shared_prefix_tokens": args.shared_prefix_tokens, "shared_prefix_share": args.shared_prefix_share,
                   "disconnect_share": args.disconnect_share, "no_max_tokens_share": args.no_max_tokens_share,
                   "slo_ttft_ms": args.slo_ttft_ms, "slo_itl_ms": args.slo_itl_ms, "slo_attainment": args.slo_attainment,
                   "metrics_interval": args.metrics_interval, "warmup": args.warmup, "distribution": SHAREGPT},
        "mix": mix,
        "warmup_failures": warmup_failures,
        "levels": levels,
        "distserve_goodput": distserve,
        "failed": failed,
    }
    print_mix_report(report)
    return report, failed


# ---------------------------------------------------------------------------
# The plot: TTFT and ITL p50/p99 against offered load, SVG by hand.

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]


def nice_ticks(low, high, count=5):
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = [round(math.floor(low / step) * step, 10)]
    while ticks[-1] < high:  # the last tick at or above the highest value
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def log_ticks(low, high):
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10 ** exponent
            if low / 1.0001 <= value <= high * 1.0001:
                ticks.append(value)
    return ticks


class Axis:
    """Maps data to pixels, linear or logarithmic (when the data span a factor
    of `log_ratio` or more). A logarithmic y axis spans whole decades; the x
    axis (`zero_based` false) is padded a little around the data instead."""

    def __init__(self, values, pixel_low, pixel_high, zero_based, log_ratio=20):
        positive = [v for v in values if v is not None and v > 0]
        self.log = (len(positive) == len([v for v in values if v is not None]) and bool(positive)
                    and max(positive) / min(positive) >= log_ratio)
        if self.log:
            if zero_based:
                self.low = 10 ** math.floor(math.log10(min(positive)))
                self.high = 10 ** math.ceil(math.log10(max(positive)))
            else:
                self.low, self.high = min(positive) / 1.25, max(positive) * 1.25
            self.ticks = log_ticks(self.low, self.high)
            if len(self.ticks) > 10:
                self.ticks = [t for t in self.ticks if str(t).lstrip("0.").startswith("1")]
        else:
            present = [v for v in values if v is not None] or [0, 1]
            low = 0 if zero_based else min(present)
            self.ticks = nice_ticks(low, max(present) if max(present) > low else low + 1)
            self.low, self.high = self.ticks[0], self.ticks[-1]
        self.pixel_low, self.pixel_high = pixel_low, pixel_high

    def __call__(self, value):
        if self.log:
            share = (math.log10(value) - math.log10(self.low)) / (math.log10(self.high) - math.log10(self.low))
        else:
            share = (value - self.low) / (self.high - self.low) if self.high > self.low else 0.5
        return self.pixel_low + share * (self.pixel_high - self.pixel_low)


def tick_label(value):
    if value >= 1000 and value == int(value):
        return f"{value / 1000:g}k" if value % 1000 == 0 else f"{value:g}"
    return f"{value:g}"


def plot_series(report, fallback_label):
    """(label, x-axis name, [(x, ttft p50, ttft p99, itl p50, itl p99)]) of a saved report."""
    levels = report.get("levels") or []
    mode = (report.get("config") or {}).get("mode")
    xname = "offered load (req/s)" if mode == "rate" else "concurrency (clients)"
    points = []
    for level in levels:
        x = level.get("offered", level.get("concurrency"))
        ttft, itl = level.get("ttft_ms") or {}, level.get("itl_ms") or {}
        points.append((x, ttft.get("p50"), ttft.get("p99"), itl.get("p50"), itl.get("p99")))
    points.sort(key=lambda point: point[0])
    return report.get("label") or fallback_label, xname, points


def render_svg(series, title):
    """Two panels (TTFT, ITL) with p50 (solid) and p99 (dashed) per run."""
    width, height = 960, 430
    panel_w, top, bottom = 380, 60, 340
    lefts = [80, 560]
    xnames = sorted({name for _, name, _ in series})
    xname = xnames[0] if len(xnames) == 1 else " / ".join(xnames)
    xs = [p[0] for _, _, points in series for p in points]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">{escape(title)}</text>']
    for panel, (name, columns) in enumerate((("TTFT (ms)", (1, 2)), ("ITL (ms)", (3, 4)))):
        left = lefts[panel]
        right = left + panel_w
        ys = [p[c] for _, _, points in series for p in points for c in columns]
        xaxis = Axis(xs, left, right, zero_based=False, log_ratio=4)
        yaxis = Axis(ys, bottom, top, zero_based=True)
        out.append(f'<text x="{(left + right) / 2}" y="{top - 12}" text-anchor="middle" font-size="14">{escape(name)} '
                   f'p50 and p99{" (log scale)" if yaxis.log else ""}</text>')
        for tick in yaxis.ticks:
            y = yaxis(tick)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="#e0e0e0"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(tick_label(tick))}</text>')
        for tick in sorted(set(xs)) if len(set(xs)) <= 8 else xaxis.ticks:
            x = xaxis(tick)
            out.append(f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="black"/>')
            out.append(f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{escape(tick_label(tick))}</text>')
        out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>')
        out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>')
        out.append(f'<text x="{(left + right) / 2}" y="{bottom + 36}" text-anchor="middle">{escape(xname)}'
                   f'{" (log scale)" if xaxis.log else ""}</text>')
        out.append(f'<text transform="translate({left - 56},{(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
                   f'{escape(name)}</text>')
        for index, (label, _, points) in enumerate(series):
            color = COLORS[index % len(COLORS)]
            for column, dash in zip(columns, ("", ' stroke-dasharray="6,4"')):
                coords = [(xaxis(p[0]), yaxis(p[column])) for p in points if p[column] is not None and (p[column] > 0 or not yaxis.log)]
                if not coords:
                    continue
                text = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                out.append(f'<polyline points="{text}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
                for x, y in coords:
                    if dash:
                        out.append(f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="white" stroke="{color}"/>')
                    else:
                        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    legend_y = bottom + 62
    x = 80
    for index, (label, _, _) in enumerate(series):
        color = COLORS[index % len(COLORS)]
        for kind, dash in (("p50", ""), ("p99", ' stroke-dasharray="6,4"')):
            out.append(f'<line x1="{x}" y1="{legend_y}" x2="{x + 28}" y2="{legend_y}" stroke="{color}" stroke-width="2"{dash}/>')
            text = f"{label} {kind}"
            out.append(f'<text x="{x + 34}" y="{legend_y + 4}">{escape(text)}</text>')
            x += 44 + 7 * len(text)
            if x > width - 200:
                x, legend_y = 80, legend_y + 20
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_plot(path, reports, title):
    series = [plot_series(report, name) for name, report in reports]
    with open(path, "w") as out:
        out.write(render_svg(series, title))
    log(f"wrote {path}")


# ---------------------------------------------------------------------------
# Options.

class OptionError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2)."""

    def error(self, message):
        print(f"loadgen: error: {message}", file=sys.stderr)
        sys.exit(2)


def float_list(text, option):
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise OptionError(f"{option}: expected at least one value, got {text!r}")
    return values


def parse_args(argv):
    parser = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="See the module docstring (head -90 Scripts/loadgen.py) for the definitions.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL (default %(default)s)")
    parser.add_argument("--concurrency", default=None,
                        help="comma-separated levels: clients sending back to back (fixed mode default 1,4,16)")
    parser.add_argument("--model", default=None, help="model name (default: first id of GET /v1/models)")
    parser.add_argument("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    parser.add_argument("--warmup", type=int, default=2, help="sequential warm-up requests, not measured (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600, help="socket timeout per request, seconds (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    parser.add_argument("--json", metavar="OUT.json", default=None, help="also write every number here")
    parser.add_argument("--plot", metavar="OUT.svg", default=None, help="TTFT and ITL p50/p99 against offered load")
    parser.add_argument("--label", default=None, help="name of this run (in the JSON, the report and plots)")
    parser.add_argument("--compare", nargs="+", metavar="RUN.json", default=None,
                        help="plot these saved runs (--json output) on one --plot, without a server")
    parser.add_argument("--self-test", action="store_true", help="run the unit tests of the pure parts and exit")
    fixed = parser.add_argument_group("fixed mode")
    fixed.add_argument("--requests", type=int, default=None, help="requests per level, at least C (default 32)")
    fixed.add_argument("--max-tokens", type=int, default=None, help="max_tokens per request (default 64)")
    prompt = fixed.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-tokens", type=int, default=None,
                        help="send a prompt of K token ids (default 32 when --prompt is absent)")
    prompt.add_argument("--prompt", default=None, help="send this text as the prompt")
    mix = parser.add_argument_group("mix mode (on with --rate or --num-requests)")
    mix.add_argument("--rate", default=None, help="comma-separated Poisson arrival rates, requests/s")
    mix.add_argument("--num-requests", type=int, default=None, help="requests per level (default 50)")
    mix.add_argument("--seed", type=int, default=0, help="seed of lengths, kinds, token ids and arrivals (default 0)")
    mix.add_argument("--length-scale", type=float, default=1.0, help="multiply sampled lengths by this (default 1)")
    mix.add_argument("--max-prompt-tokens", type=int, default=None, help="clip prompts (shared prefix included) to this")
    mix.add_argument("--max-output-tokens", type=int, default=None, help="clip output lengths to this")
    mix.add_argument("--vocab-size", type=int, default=None,
                     help="token ids are drawn from [10, N) (default: vocab_size of GET /v1/models, else 4000)")
    mix.add_argument("--shared-prefix-tokens", type=int, default=0, help="length P of the shared system prompt")
    mix.add_argument("--shared-prefix-share", type=float, default=0.0, help="fraction S of requests that start with it")
    mix.add_argument("--disconnect-share", type=float, default=0.0, help="fraction of clients that disconnect mid-stream")
    mix.add_argument("--no-max-tokens-share", type=float, default=0.0,
                     help="fraction of requests asking for the whole remaining context (client stops at its sampled length)")
    mix.add_argument("--slo-ttft-ms", type=float, default=None, help="TTFT SLO for goodput, ms")
    mix.add_argument("--slo-itl-ms", type=float, default=None, help="mean inter-token (TPOT) SLO for goodput, ms")
    mix.add_argument("--slo-attainment", type=float, default=0.9,
                     help="attainment a rate must reach to count for DistServe goodput (default 0.9)")
    mix.add_argument("--metrics-interval", type=float, default=1.0,
                     help="seconds between /metrics scrapes during a level (0: before/after only; default 1)")
    args = parser.parse_args(argv)
    try:
        validate(args, argv)
    except OptionError as error:
        parser.error(str(error))
    return args


def given(argv, option):
    return any(arg == option or arg.startswith(option + "=") for arg in argv)


def validate(args, argv):
    if args.self_test:
        return
    if args.compare is not None:
        if not args.plot:
            raise OptionError("--compare: needs --plot OUT.svg")
        return
    args.mix = args.rate is not None or args.num_requests is not None
    mix_only = ["--seed", "--length-scale", "--max-prompt-tokens", "--max-output-tokens", "--vocab-size",
                "--shared-prefix-tokens", "--shared-prefix-share", "--disconnect-share", "--no-max-tokens-share",
                "--slo-ttft-ms", "--slo-itl-ms", "--slo-attainment", "--metrics-interval"]
    fixed_only = ["--requests", "--max-tokens", "--prompt-tokens", "--prompt"]
    if not (0 <= args.temperature <= 2):
        raise OptionError(f"--temperature: must be within [0, 2], got {args.temperature:g}")
    if args.warmup < 0:
        raise OptionError(f"--warmup: must be >= 0, got {args.warmup}")
    if args.timeout <= 0:
        raise OptionError(f"--timeout: must be > 0, got {args.timeout:g}")
    if not args.mix:
        for option in mix_only:
            if given(argv, option):
                raise OptionError(f"{option}: only in mix mode (give --rate or --num-requests)")
        concurrency = args.concurrency or "1,4,16"
        try:
            args.levels = [int(part) for part in concurrency.split(",") if part.strip()]
        except ValueError:
            raise OptionError(f"--concurrency: expected comma-separated integers, got {concurrency!r}") from None
        if not args.levels or any(level < 1 for level in args.levels):
            raise OptionError(f"--concurrency: levels must be >= 1, got {concurrency!r}")
        args.requests = 32 if args.requests is None else args.requests
        args.max_tokens = 64 if args.max_tokens is None else args.max_tokens
        if args.requests < 1:
            raise OptionError(f"--requests: must be >= 1, got {args.requests}")
        if args.max_tokens < 1:
            raise OptionError(f"--max-tokens: must be >= 1, got {args.max_tokens}")
        if args.prompt is None and args.prompt_tokens is None:
            args.prompt_tokens = 32
        if args.prompt_tokens is not None and args.prompt_tokens < 1:
            raise OptionError(f"--prompt-tokens: must be >= 1, got {args.prompt_tokens}")
        return
    for option in fixed_only:
        if given(argv, option):
            raise OptionError(f"{option}: only in fixed mode (mix mode draws lengths; see --max-output-tokens)")
    if args.rate is not None and args.concurrency is not None:
        raise OptionError("--rate: give either --rate or --concurrency, not both")
    if args.rate is not None:
        args.mode = "rate"
        args.levels = float_list(args.rate, "--rate")
        if any(rate <= 0 or math.isinf(rate) for rate in args.levels):
            raise OptionError(f"--rate: rates must be > 0 req/s, got {args.rate!r}")
    else:
        args.mode = "concurrency"
        concurrency = args.concurrency or "1"
        values = float_list(concurrency, "--concurrency")
        if any(value < 1 or value != int(value) for value in values):
            raise OptionError(f"--concurrency: levels must be integers >= 1, got {concurrency!r}")
        args.levels = [int(value) for value in values]
    args.num_requests = 50 if args.num_requests is None else args.num_requests
    if args.num_requests < 1:
        raise OptionError(f"--num-requests: must be >= 1, got {args.num_requests}")
    if not (args.length_scale > 0) or math.isinf(args.length_scale):
        raise OptionError(f"--length-scale: must be > 0, got {args.length_scale:g}")
    for option, value in (("--max-prompt-tokens", args.max_prompt_tokens), ("--max-output-tokens", args.max_output_tokens)):
        if value is not None and value < 1:
            raise OptionError(f"{option}: must be >= 1, got {value}")
    if args.vocab_size is not None and args.vocab_size < FIRST_TOKEN_ID + 10:
        raise OptionError(f"--vocab-size: must be >= {FIRST_TOKEN_ID + 10}, got {args.vocab_size}")
    for option, value in (("--shared-prefix-share", args.shared_prefix_share), ("--disconnect-share", args.disconnect_share),
                          ("--no-max-tokens-share", args.no_max_tokens_share), ("--slo-attainment", args.slo_attainment)):
        if not (0 <= value <= 1):
            raise OptionError(f"{option}: must be within [0, 1], got {value:g}")
    if args.disconnect_share + args.no_max_tokens_share > 1:
        raise OptionError(f"--no-max-tokens-share: with --disconnect-share it exceeds 1 "
                          f"({args.disconnect_share:g} + {args.no_max_tokens_share:g})")
    if args.shared_prefix_tokens < 0:
        raise OptionError(f"--shared-prefix-tokens: must be >= 0, got {args.shared_prefix_tokens}")
    if args.shared_prefix_tokens > 0 and args.shared_prefix_share == 0:
        raise OptionError("--shared-prefix-tokens: needs --shared-prefix-share > 0")
    if args.shared_prefix_share > 0 and args.shared_prefix_tokens == 0:
        raise OptionError("--shared-prefix-share: needs --shared-prefix-tokens > 0")
    if args.max_prompt_tokens is not None and args.shared_prefix_tokens >= args.max_prompt_tokens:
        raise OptionError(f"--shared-prefix-tokens: must be below --max-prompt-tokens ({args.max_prompt_tokens}), "
                          f"got {args.shared_prefix_tokens}")
    for option, value in (("--slo-ttft-ms", args.slo_ttft_ms), ("--slo-itl-ms", args.slo_itl_ms)):
        if value is not None and not value > 0:
            raise OptionError(f"{option}: must be > 0, got {value:g}")
    if args.metrics_interval < 0:
        raise OptionError(f"--metrics-interval: must be >= 0, got {args.metrics_interval:g}")


# ---------------------------------------------------------------------------
# Self-test.

def self_test():
    import contextlib
    import io
    import os
    import tempfile
    import xml.etree.ElementTree as ET

    checks = []

    def check(name, condition, detail=""):
        checks.append((name, bool(condition), detail))

    # The fitted log-normals reproduce the published mean and standard deviation
    # exactly, and a large seeded sample (unclipped, unscaled) their mean and median.
    for part in ("prompt", "output"):
        stats = SHAREGPT[part]
        mu, sigma = fit_lognormal(stats["mean"], stats["std"])
        mean, std, median = lognormal_moments(mu, sigma)
        check(f"{part}: fitted mean", abs(mean - stats["mean"]) < 1e-9, mean)
        check(f"{part}: fitted std", abs(std - stats["std"]) < 1e-9, std)
        rng = random.Random(7)
        sample = sorted(rng.lognormvariate(mu, sigma) for _ in range(200_000))
        sample_mean = sum(sample) / len(sample)
        sample_median = sample[len(sample) // 2]
        tolerance = 0.05 if part == "prompt" else 0.02  # the prompt tail is heavy (sd/mean 6.6)
        check(f"{part}: sample mean {sample_mean:.1f} ~ {stats['mean']}",
              abs(sample_mean / stats["mean"] - 1) < tolerance)
        check(f"{part}: sample median {sample_median:.1f} ~ {median:.1f}", abs(sample_median / median - 1) < 0.02)
    # Published cross-check: the response mean is within 5 % of the vLLM paper's 337.99.
    check("output mean ~ vLLM paper's 337.99", abs(SHAREGPT["output"]["mean"] / 337.99 - 1) < 0.05)

    # The request plan: reproducible, seed-dependent, clipped, shares respected.
    config = {"seed": 3, "num_requests": 4000, "length_scale": 1.0, "max_prompt_tokens": 512, "max_output_tokens": 256,
              "context": 600, "shared_prefix_tokens": 32, "shared_prefix_share": 0.3, "disconnect_share": 0.2,
              "no_max_tokens_share": 0.1}
    plan = build_mix(config)
    check("mix reproducible", plan == build_mix(dict(config)))
    check("mix depends on seed", plan != build_mix(dict(config, seed=4)))
    check("prompts clipped to --max-prompt-tokens", all(1 <= p["prompt_tokens"] <= 512 for p in plan))
    check("outputs clipped", all(1 <= p["output_tokens"] <= 256 for p in plan))
    check("prompt + output within the context", all(p["prompt_tokens"] + p["output_tokens"] <= 600 for p in plan))
    shared = sum(p["shared_prefix"] for p in plan) / len(plan)
    check(f"shared-prefix share {shared:.3f} ~ 0.3", abs(shared - 0.3) < 0.03)
    disconnect = [p for p in plan if p["kind"] == "disconnect"]
    nomax = [p for p in plan if p["kind"] == "no_max_tokens"]
    check(f"disconnect share {len(disconnect) / len(plan):.3f} ~ 0.2", abs(len(disconnect) / len(plan) - 0.2) < 0.03)
    check(f"no-max-tokens share {len(nomax) / len(plan):.3f} ~ 0.1", abs(len(nomax) / len(plan) - 0.1) < 0.03)
    check("disconnects stop before the end", all(1 <= p["stop_after"] <= max(1, p["output_tokens"] - 1) for p in disconnect))
    check("no-max-tokens stop at their length", all(p["stop_after"] == p["output_tokens"] for p in nomax))
    check("normal requests read to the end", all(p["stop_after"] is None for p in plan if p["kind"] == "normal"))
    unscaled = build_mix(dict(config, max_prompt_tokens=None, max_output_tokens=None, context=None, shared_prefix_tokens=0,
                              shared_prefix_share=0))
    scaled = build_mix(dict(config, max_prompt_tokens=None, max_output_tokens=None, context=None, shared_prefix_tokens=0,
                            shared_prefix_share=0, length_scale=0.25))
    ratio = sum(p["output_tokens"] for p in scaled) / sum(p["output_tokens"] for p in unscaled)
    check(f"--length-scale 0.25 scales outputs ({ratio:.3f})", abs(ratio - 0.25) < 0.01)
    first_shared = [p for p in plan if p["shared_prefix"]][:2]
    a, b = (prompt_ids(3, 0, p, 32, 4000) for p in first_shared)
    check("shared requests start with the same prefix", a[:32] == b[:32] and a[32:] != b[32:])
    check("prompt ids have the planned length", len(a) == first_shared[0]["prompt_tokens"])
    check("the prefix differs per level", prompt_ids(3, 1, first_shared[0], 32, 4000)[:32] != a[:32])
    unique = [p for p in plan if not p["shared_prefix"] and p["prompt_tokens"] >= 4][:2]
    u = [prompt_ids(3, 0, p, 32, 4000) for p in unique]
    check("unique prompts differ", u[0][:4] != u[1][:4])
    check("ids within [10, vocab)", all(FIRST_TOKEN_ID <= t < 4000 for p in plan[:200] for t in prompt_ids(3, 0, p, 32, 4000)))
    check("ids reproducible", prompt_ids(3, 0, plan[5], 32, 4000) == prompt_ids(3, 0, plan[5], 32, 4000))

    # Nearest-rank percentiles.
    values = list(range(1, 11))
    check("percentile p50 of 1..10 = 5", percentile(values, 50) == 5)
    check("percentile p90 of 1..10 = 9", percentile(values, 90) == 9)
    check("percentile p99 of 1..10 = 10", percentile(values, 99) == 10)
    check("percentile of one value", percentile([4.2], 99) == 4.2)
    check("percentile of none", percentile([], 50) is None)
    check("percentile p0 is the minimum", percentile([3, 1, 2], 0) == 1)

    # Poisson arrivals: mean gap 1/rate, coefficient of variation 1, seeded.
    offsets = poisson_offsets(11, 100_001)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    rate = 2.5
    mean_gap = statistics.mean(gaps) / rate
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    check(f"Poisson mean gap {mean_gap:.4f} ~ 1/rate = {1 / rate}", abs(mean_gap * rate - 1) < 0.02)
    check(f"Poisson gaps exponential (cv {cv:.3f} ~ 1)", abs(cv - 1) < 0.03)
    check("arrivals reproducible, first at 0", poisson_offsets(11, 10) == offsets[:10] and offsets[0] == 0.0)

    # Prometheus text, both counter spellings, labels, floats; absent metrics.
    text = """# HELP weft_prefix_cache_hit_tokens_total Prompt tokens found.
# TYPE weft_prefix_cache_hit_tokens_total counter
weft_prefix_cache_hit_tokens_total 120
weft_prefix_cache_queried_tokens 4.8e2
weft_preemptions_total{reason="kv"} 2
weft_preemptions_total{reason="other"} 1.0
weft_running_sequences 3
weft_requests_total{endpoint="completions",status="200"} 5
weft_step_communication_share NaN
garbage line here
"""
    after = parse_metrics(text)
    before = parse_metrics("weft_prefix_cache_hit_tokens 20\nweft_prefix_cache_queried_tokens_total 80\nweft_preemptions 1\n"
                           "weft_running_sequences 0\n")
    server = server_summary(before, after, [{"weft_running_sequences": 7.0}])
    check("hit rate from deltas (100/400)", server["prefix_cache_hit_rate"] == 0.25, server["prefix_cache_hit_rate"])
    check("preemptions summed over labels, delta", server["preemptions"] == 2.0, server["preemptions"])
    check("peak running from polled samples", server["peak_running_sequences"] == 7.0)
    check("NaN and garbage skipped", "weft_step_communication_share" not in after and "garbage" not in after)
    empty = server_summary(None, None, [])
    check("absent metrics are None", all(empty[key] is None for key in ("prefix_cache_hit_rate", "preemptions",
                                                                        "peak_running_sequences")))
    check("absent metrics print n/a", pct(empty["prefix_cache_hit_rate"]) == "n/a" and num(None) == "n/a")

    # Goodput: both SLOs, TPOT from E2E.
    good = {"state": "completed", "ttft_ms": 100.0, "e2e_ms": 1000.0, "tokens": 10}
    check("attains both SLOs", attains(good, 200, 100))
    check("misses TTFT", not attains(good, 50, 100))
    check("misses TPOT (900/9 = 100 > 99)", not attains(good, 200, 99))
    check("disconnected never attains", not attains(dict(good, state="disconnected"), 200, 100))

    # The SVG is well-formed XML with one line per run and percentile per panel.
    def fake(label, mode, xs):
        return {"label": label, "config": {"mode": mode},
                "levels": [{"offered": x, "ttft_ms": {"p50": 10 * x, "p99": 30 * x}, "itl_ms": {"p50": 5 + x, "p99": 9 + x}}
                           for x in xs]}
    svg = render_svg([plot_series(fake("on & <cache>", "rate", [0.5, 1, 2]), "a"),
                      plot_series(fake(None, "rate", [0.5, 1, 2, 4]), "off")], "TTFT & ITL")
    try:
        root = ET.fromstring(svg)
        parsed = True
    except ET.ParseError as error:
        parsed, root = False, None
        checks.append(("SVG parses", False, str(error)))
    if parsed:
        ns = "{http://www.w3.org/2000/svg}"
        lines = root.findall(f"{ns}polyline")
        texts = [t.text or "" for t in root.iter(f"{ns}text")]
        check("SVG: 2 runs x 2 percentiles x 2 panels = 8 lines", len(lines) == 8, len(lines))
        check("SVG: legend names both runs", any("on & <cache> p50" in t for t in texts) and any(t == "off p99" for t in texts))
        check("SVG: axis titles", any("offered load" in t for t in texts) and any("TTFT" in t for t in texts))
    fixed_report = {"config": {"concurrency": [1, 4, 16]},
                    "levels": [{"concurrency": c, "ttft_ms": {"p50": 500.0 * c, "p99": 700.0 * c},
                                "itl_ms": {"p50": 200.0, "p99": None}} for c in (1, 4, 16)]}
    svg = render_svg([plot_series(fixed_report, "fixed")], "fixed mode")
    check("linear ticks cover the data", nice_ticks(0, 10.6)[-1] >= 10.6 and nice_ticks(0, 10)[-1] == 10
          and nice_ticks(0.5, 4)[0] <= 0.5)
    check("log ticks 1-2-5", log_ticks(10, 1000) == [10, 20, 50, 100, 200, 500, 1000])
    check("SVG of a fixed-mode run parses", ET.fromstring(svg) is not None and "concurrency" in svg)

    # Options: one line naming the option, exit 2.
    for argv, option in ((["--rate", "0"], "--rate"), (["--rate", "x"], "--rate"),
                         (["--num-requests", "5", "--disconnect-share", "0.7", "--no-max-tokens-share", "0.5"],
                          "--no-max-tokens-share"),
                         (["--num-requests", "5", "--shared-prefix-tokens", "8"], "--shared-prefix-tokens"),
                         (["--seed", "3"], "--seed"), (["--rate", "1", "--max-tokens", "4"], "--max-tokens"),
                         (["--rate", "1", "--concurrency", "2"], "--rate"), (["--concurrency", "0"], "--concurrency"),
                         (["--compare", "a.json"], "--compare"), (["--num-requests", "x"], "--num-requests")):
        stderr = io.StringIO()
        code = None
        with contextlib.redirect_stderr(stderr):
            try:
                parse_args(argv)
            except SystemExit as exit_:
                code = exit_.code
        message = stderr.getvalue()
        check(f"bad option {' '.join(argv)} -> exit 2, one line naming {option}",
              code == 2 and message.count("\n") == 1 and option in message, message.strip())
    args = parse_args(["--concurrency", "1,4", "--requests", "8"])
    check("fixed mode options as before", not args.mix and args.levels == [1, 4] and args.max_tokens == 64
          and args.prompt_tokens == 32)
    args = parse_args(["--rate", "0.5,1,2", "--num-requests", "10"])
    check("rate sweep parsed", args.mix and args.mode == "rate" and args.levels == [0.5, 1.0, 2.0])

    # --compare reads saved runs.
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, report in (("a", fake("A", "rate", [1, 2])), ("b", fake("B", "rate", [1, 2]))):
            path = os.path.join(directory, f"{name}.json")
            with open(path, "w") as out:
                json.dump(report, out)
            paths.append(path)
        plot = os.path.join(directory, "x.svg")
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            code = main(["--compare"] + paths + ["--plot", plot])
        check("--compare writes a plot", code == 0 and len(ET.parse(plot).getroot().findall(
            "{http://www.w3.org/2000/svg}polyline")) == 8)

    failed = [c for c in checks if not c[1]]
    for name, ok, detail in checks:
        if not ok:
            print(f"FAIL {name}: {detail}")
    print(f"self-test: {len(checks) - len(failed)}/{len(checks)} checks passed")
    return 1 if failed else 0


# ---------------------------------------------------------------------------

def main(argv):
    args = parse_args(argv)
    if args.self_test:
        return self_test()
    if args.compare is not None:
        reports = []
        for path in args.compare:
            try:
                with open(path) as source:
                    reports.append((path.rsplit("/", 1)[-1].removesuffix(".json"), json.load(source)))
            except (OSError, ValueError) as error:
                print(f"loadgen: error: --compare: cannot read {path}: {error}", file=sys.stderr)
                return 2
        title = "TTFT and ITL against load: " + " vs ".join(report.get("label") or name for name, report in reports)
        write_plot(args.plot, reports, title)
        print("| run | load | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms |")
        print("|---|--:|--:|--:|--:|--:|")
        for name, report in reports:
            label, _, points = plot_series(report, name)
            for x, t50, t99, i50, i99 in points:
                print(f"| {label} | {x:g} | {num(t50)} | {num(t99)} | {num(i50)} | {num(i99)} |")
        return 0

    target = Target(args.url, args.api_key, args.timeout)
    try:
        info = model_info(target)
    except Exception as error:  # noqa: BLE001
        print(f"loadgen: error: --url: cannot read GET /v1/models: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    model = args.model or info["id"]
    log(f"model: {model}")
    try:
        if args.mix:
            if args.vocab_size is None:
                vocab = info.get("vocab_size")
                args.vocab_size = vocab if isinstance(vocab, int) and vocab >= FIRST_TOKEN_ID + 10 else 4000
            report, failed = run_mix(args, target, model, info)
        else:
            report, failed = run_fixed(args, target, model)
    except OptionError as error:
        print(f"loadgen: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=2)
            out.write("\n")
        log(f"wrote {args.json}")
    if args.plot:
        title = "TTFT and ITL against load" + (f": {args.label}" if args.label else "")
        write_plot(args.plot, [(args.label or "run", report)], title)
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
