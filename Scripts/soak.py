#!/usr/bin/env python3
"""Soak test for `weft serve`: many clients for minutes, some hostile.

    Scripts/soak.py --url http://127.0.0.1:8000 --minutes 5 --clients 24 \
        [--api-key KEY] [--seed 1] [--json OUT.json]

Each client thread loops until the time is up (and at most --max-requests in
all), choosing per request, with a seeded random generator:
  - a streamed completion read to the end (the normal case),
  - a streamed completion abandoned after a few chunks (client disconnect),
  - a non-streamed completion, or a chat completion,
  - a non-streamed request whose client closes before the answer,
  - a malformed request: invalid JSON, wrong field types, token ids out of
    range, max_tokens near 2^63, a malformed chunked body, a request head
    that never ends (closed by the server's idle timeout), a body past
    --max-body-bytes.
Every request must end in one of its expected ways: a complete stream ending
in [DONE], an error status (4xx/5xx with an OpenAI error object), an error
event, or the disconnect the client chose. Anything else (a stream that ends
without [DONE], a 200 with a malformed body, a time-out) is counted as lost.

While it runs, the ranks' RSS is sampled from /proc (the processes whose
command line holds --served-model-name NAME, i.e. the `model` the server
lists); at the end it waits for the engine to go idle and reads /metrics:
KV blocks still in use must be 0.

Report: requests by outcome, errors by status, p50/p99 latency of completed
requests, KV blocks leaked, RSS per rank at start/end (drift), as Markdown on
stdout (and JSON with --json). Exits 1 if anything was lost, a KV block
leaked, or the server stopped answering. Loopback only; standard library only.
"""

import argparse
import http.client
import json
import math
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

HUGE = 2**63 - 5


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


class Soak:
    def __init__(self, args):
        parsed = urllib.parse.urlsplit(args.url if "://" in args.url else "http://" + args.url)
        self.host = parsed.hostname or "127.0.0.1"
        if self.host not in ("127.0.0.1", "localhost", "::1") and not self.host.startswith("127."):
            raise SystemExit("soak: loopback addresses only")
        self.port = parsed.port or 80
        self.args = args
        self.headers = {"Content-Type": "application/json"}
        if args.api_key:
            self.headers["Authorization"] = "Bearer " + args.api_key
        self.lock = threading.Lock()
        self.outcomes = {}
        self.statuses = {}
        self.latencies = []
        self.lost = []
        self.events = []
        self.sent = 0
        self.deadline = time.monotonic() + args.minutes * 60

    def count(self, outcome, status=None, latency=None, lost=None):
        with self.lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            if status is not None:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if latency is not None:
                self.latencies.append(latency)
            if lost is not None:
                self.lost.append(lost)

    def take(self):
        with self.lock:
            if time.monotonic() > self.deadline or self.sent >= self.args.max_requests:
                return False
            self.sent += 1
            return True

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)

    def model(self):
        conn = self.connection()
        conn.request("GET", "/v1/models", headers=self.headers)
        body = json.loads(conn.getresponse().read())
        return body["data"][0]["id"]

    # -- the kinds of request ------------------------------------------------

    def expect_error(self, kind, response):
        body = response.read()
        status = response.status
        if status >= 400:
            try:
                ok = "error" in json.loads(body)
            except ValueError:
                ok = False
            if ok:
                self.count(kind, status)
            else:
                self.count("lost", status, lost=f"{kind}: {status} without an error object: {body[:200]!r}")
        else:
            self.count("lost", status, lost=f"{kind}: expected an error, got {status}: {body[:200]!r}")

    def stream(self, rng, abandon):
        start = time.monotonic()
        body = {"prompt": [rng.randrange(1, 200) for _ in range(rng.randrange(1, 24))],
                "max_tokens": rng.randrange(1, 48), "stream": True, "temperature": rng.choice([0, 0.8]),
                "ignore_eos": True}
        conn = self.connection()
        conn.request("POST", "/v1/completions", json.dumps(body), self.headers)
        response = conn.getresponse()
        if response.status != 200:
            return self.expect_error("stream refused", response)
        chunks, done = 0, False
        stop_after = rng.randrange(1, 4) if abandon else None
        while True:
            line = response.fp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except ValueError:
                self.count("lost", lost=f"stream chunk is not JSON: {data[:200]!r}")
                conn.close()
                return
            if "error" in event:
                self.count("stream error event", "event")
                with self.lock:
                    self.events.append(data[:300].decode(errors="replace"))
                conn.close()
                return
            chunks += 1
            if stop_after is not None and chunks >= stop_after:
                conn.close()
                self.count("stream abandoned")
                return
        conn.close()
        if done:
            self.count("stream completed", 200, time.monotonic() - start)
        else:
            self.count("lost", lost=f"stream ended without [DONE] after {chunks} chunks")

    def whole(self, rng, chat, leave):
        start = time.monotonic()
        if chat:
            path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": "hello " * rng.randrange(1, 8)}],
                                                  "max_tokens": rng.randrange(1, 24)}
        else:
            path, body = "/v1/completions", {"prompt": [rng.randrange(1, 200) for _ in range(rng.randrange(1, 24))],
                                             "max_tokens": rng.randrange(1, 24), "temperature": 0}
        if leave:
            raw = socket.create_connection((self.host, self.port), timeout=self.args.timeout)
            payload = json.dumps(body).encode()
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            if "Authorization" in self.headers:
                head += f"Authorization: {self.headers['Authorization']}\r\n"
            raw.sendall(head.encode() + b"\r\n" + payload)
            time.sleep(rng.uniform(0, 0.2))
            raw.close()
            self.count("whole abandoned")
            return
        conn = self.connection()
        conn.request("POST", path, json.dumps(body), self.headers)
        response = conn.getresponse()
        if response.status != 200:
            return self.expect_error("whole refused", response)
        try:
            answer = json.loads(response.read())
            ok = bool(answer.get("choices"))
        except ValueError:
            ok = False
        conn.close()
        if ok:
            self.count("whole completed", 200, time.monotonic() - start)
        else:
            self.count("lost", 200, lost="200 without choices")

    def malformed(self, rng):
        kind = rng.randrange(7)
        if kind == 4:  # malformed chunked body
            raw = socket.create_connection((self.host, self.port), timeout=self.args.timeout)
            auth = f"Authorization: {self.headers['Authorization']}\r\n" if "Authorization" in self.headers else ""
            raw.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + auth
                         + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n").encode())
            reply = raw.recv(64)
            raw.close()
            status = int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None
            if status is not None and 400 <= status < 500:
                self.count("malformed", status)
            else:
                self.count("lost", status, lost=f"malformed chunked body answered {reply[:40]!r}")
            return
        if kind == 5:  # a request head that never ends: the server must close it
            raw = socket.create_connection((self.host, self.port), timeout=self.args.idle_timeout + 30)
            raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHo")
            try:
                closed = raw.recv(64) == b""
            except OSError:
                closed = True
            raw.close()
            self.count("malformed" if closed else "lost", "idle-closed",
                       lost=None if closed else "an unfinished request head was not closed")
            return
        bodies = [
            b"{not json",
            json.dumps({"prompt": [1, 2], "max_tokens": "four"}).encode(),
            json.dumps({"prompt": [1, 10**9]}).encode(),
            json.dumps({"prompt": [1, 2], "max_tokens": HUGE}).encode(),
        ]
        body = bodies[kind] if kind < 4 else b" " * (self.args.max_body_bytes + 1)
        conn = self.connection()
        try:
            conn.request("POST", "/v1/completions", body, self.headers)
            self.expect_error("malformed", conn.getresponse())
        except (ConnectionError, http.client.HTTPException) as error:
            # An oversized body may be refused before it is all sent.
            if kind == 6:
                self.count("malformed", 413)
            else:
                self.count("lost", lost=f"malformed request: {error}")
        conn.close()

    def client(self, index):
        rng = random.Random(self.args.seed * 1000 + index)
        while self.take():
            roll = rng.random()
            try:
                if roll < 0.35:
                    self.stream(rng, abandon=False)
                elif roll < 0.5:
                    self.stream(rng, abandon=True)
                elif roll < 0.62:
                    self.whole(rng, chat=False, leave=False)
                elif roll < 0.72:
                    self.whole(rng, chat=True, leave=False)
                elif roll < 0.8:
                    self.whole(rng, chat=False, leave=True)
                else:
                    self.malformed(rng)
            except (socket.timeout, TimeoutError) as error:
                self.count("lost", lost=f"time-out: {error}")
            except (ConnectionError, http.client.HTTPException, OSError) as error:
                self.count("lost", lost=f"connection: {error!r}")

    def metric(self, name):
        conn = self.connection()
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.split()[-1])
        return None


def rank_rss(marker):
    """RSS in MiB of each process whose command line contains `marker`, by rank."""
    result = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            if marker.encode() not in cmd or b"weft" not in os.path.basename(cmd[0]):
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
            rank = int(env.get(b"OMPI_COMM_WORLD_RANK", b"0"))
            with open(f"/proc/{pid}/status") as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            result[rank] = rss / 1024
        except (OSError, StopIteration, ValueError):
            continue
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--api-key")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120, help="seconds any read may take before it counts as lost")
    parser.add_argument("--idle-timeout", type=float, default=30, help="the server's --idle-timeout")
    parser.add_argument("--max-body-bytes", type=int, default=4 << 20, help="the server's --max-body-bytes")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not (0 < args.minutes <= 24 * 60 and 0 < args.clients <= 1024):
        raise SystemExit("soak: --minutes must be in (0, 1440] and --clients in 1..1024")

    soak = Soak(args)
    marker = soak.model()
    rss_start = rank_rss(marker)
    rss_samples = []
    threads = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(5)
        rss_samples.append(rank_rss(marker))
        with soak.lock:
            print(f"soak: {time.monotonic() - started:.0f} s, {soak.sent} requests, {len(soak.lost)} lost",
                  file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started
    # Abandoned requests are cancelled at the next step: wait for the engine to go idle.
    leaked = None
    for _ in range(120):
        running, in_use = soak.metric("weft_running_sequences"), soak.metric("weft_kv_blocks_in_use")
        leaked = in_use
        if running == 0 and in_use == 0:
            break
        time.sleep(0.5)
    rss_end = rank_rss(marker)
    peak = {rank: max(sample.get(rank, 0) for sample in rss_samples + [rss_start]) for rank in rss_start}
    report = {
        "seconds": round(elapsed, 1), "clients": args.clients, "requests": soak.sent,
        "outcomes": soak.outcomes, "statuses": {str(k): v for k, v in soak.statuses.items()},
        "latency_p50_s": percentile(soak.latencies, 50), "latency_p99_s": percentile(soak.latencies, 99),
        "kv_blocks_leaked": leaked, "lost": len(soak.lost), "lost_examples": soak.lost[:10],
        "error_events": sorted(set(soak.events))[:10],
        "rss_mib_start": rss_start, "rss_mib_end": rss_end, "rss_mib_peak": peak,
    }
    print(f"| requests | seconds | completed | abandoned | malformed (answered 4xx) | refused | lost | KV blocks leaked | p50 / p99 latency |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    o = soak.outcomes
    print(f"| {soak.sent} | {elapsed:.0f} | {o.get('stream completed', 0) + o.get('whole completed', 0)} "
          f"| {o.get('stream abandoned', 0) + o.get('whole abandoned', 0)} | {o.get('malformed', 0)} "
          f"| {o.get('stream refused', 0) + o.get('whole refused', 0)} | {len(soak.lost)} | {leaked} "
          f"| {report['latency_p50_s'] or 0:.2f} / {report['latency_p99_s'] or 0:.2f} s |")
    print()
    print("| rank | RSS start MiB | RSS peak MiB | RSS end MiB | drift |")
    print("|--:|--:|--:|--:|--:|")
    for rank in sorted(rss_start):
        end = rss_end.get(rank, float("nan"))
        print(f"| {rank} | {rss_start[rank]:.0f} | {peak[rank]:.0f} | {end:.0f} | {end - rss_start[rank]:+.0f} |")
    print()
    print("statuses:", json.dumps(report["statuses"], sort_keys=True))
    for example in soak.lost[:10]:
        print("lost:", example)
    for example in sorted(set(soak.events))[:10]:
        print("error event:", example)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(1 if soak.lost or leaked != 0 else 0)


if __name__ == "__main__":
    main()
