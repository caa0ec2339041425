"""Benchmark: reads through ``custody serve`` against a bare endpoint of the same stack.

Run: ``.venv/bin/python bench/bench_api.py [--seconds 3] [--clients 1,4,16] [--rounds 2]
[--workers 1,2] [--threads 4]`` (one server per ``--workers`` value, in turn).

One ``custody serve`` (TLS 1.3, uvicorn h11, Starlette, auditing on with group commit) on
loopback, started with ``--bare-endpoint``. For C = 1, 4, 16 concurrent clients, each a
separate process with its own keep-alive TLS 1.3 connection, side by side in the same
run and alternating round by round:

- **bare**: ``GET /api/v1/bare``, a constant from a plain ASGI callable behind the same
  TLS, protocol and size-limit layers (no authentication, no store, no audit);
- **custody**: ``GET /api/v1/secrets/prod/payments/db``: bearer authentication, rate
  limiting, an access decision (audited), the value's DEK unwrapped on the token, the value
  decrypted, and a ``secret get`` audit entry, both entries durable before the answer.

Each client runs for ``--seconds`` or ``--max-requests``, whichever ends first. Reported:
reads per second (all clients), p50 and p99 latency (ms), and the ratios custody/bare (the
issue's goals: throughput >= 0.5x bare, p99 <= 2x bare). The audit log is verified after.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.server_fixtures import Server, make_pki, server_home  # noqa: E402

VALUE = "Bench-Value-5d!Tq8#Wm3@Lp6$Xz1"


class _Conn:
    """A minimal HTTP/1.1 keep-alive client on one TLS 1.3 socket (TCP_NODELAY), so the
    client's own overhead stays small next to the server's."""

    def __init__(self, port: int, ca: str, token: str | None) -> None:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
        self.buf = b""

    def get(self, path: str) -> int:
        self.sock.sendall(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n" + self.auth + b"\r\n"
        )
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        n = next(int(v) for k, _, v in (x.partition(b":") for x in lines[1:])
                 if k.strip().lower() == b"content-length")  # fmt: skip
        while len(rest) < n:
            rest += self.sock.recv(65536)
        self.buf = rest[n:]
        return status


def _client(
    port: int, ca: str, path: str, token: str | None, go: Any, seconds: float, cap: int, q: Any
) -> None:
    conn = _Conn(port, ca, token)
    lat: list[float] = []
    errors = 0
    conn.get("/api/v1/health")  # the TLS handshake is not part of the measurement
    go.wait()  # every client connected: all start together
    start = time.time()
    end = start + seconds
    while len(lat) < cap:
        t0 = time.perf_counter()
        if conn.get(path) != 200:
            errors += 1
        lat.append(time.perf_counter() - t0)
        if time.time() >= end:
            break
    q.put((lat, errors, time.time() - start))


def run(
    srv: Server, ca: str, path: str, token: str | None, n: int, seconds: float, cap: int
) -> dict[str, float]:
    ctxm = mp.get_context("spawn")
    q = ctxm.Queue()
    go = ctxm.Barrier(n)
    procs = [
        ctxm.Process(target=_client, args=(srv.port, ca, path, token, go, seconds, cap, q))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = sorted(x for g in got for x in g[0])
    wall = max(g[2] for g in got)
    return {
        "reads": len(lat),
        "errors": sum(g[1] for g in got),
        "rps": len(lat) / wall,
        "p50": lat[len(lat) // 2] * 1000,
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def _spread(v: list[dict[str, float]], m: str) -> str:
    xs = [r[m] for r in v]
    return f"{min(xs):.0f}-{max(xs):.0f}"


def measure(a: argparse.Namespace, workers: int, clients: list[int]) -> tuple[list[Any], bool]:
    """One server with *workers* processes: rounds of bare and custody runs per client
    count; then the audit log is verified and the value looked for in the output and log.
    Returns the rows and whether all was well."""
    with tempfile.TemporaryDirectory(prefix="bench-api-", dir=a.dir) as tmp:
        root = Path(tmp)
        home, pins, tokens, env = server_home(root, {"bench-svc": ("service-admin", ("payments",))})
        pki = make_pki(root / "pki")
        srv = Server(
            home, pins, pki, "--bare-endpoint", "--rate", "1000000/second",
            "--threads", str(a.threads), "--workers", str(workers), env=env,
        )  # fmt: skip
        try:
            import httpx

            ctx = ssl.create_default_context(cafile=str(pki.ca))
            tok = tokens["bench-svc"]
            with httpx.Client(base_url=srv.url, verify=ctx, timeout=30) as c:
                w = c.post(
                    "/v1/prod/data/payments/db",
                    headers={"X-Vault-Token": tok},
                    json={"data": {"value": VALUE}, "options": {"category": "service-credential"}},
                )
                assert w.status_code == 200, w.text
            rows = []
            for n in clients:
                res: dict[str, list[dict[str, float]]] = {"bare": [], "custody": []}
                for _ in range(a.rounds):
                    res["bare"].append(
                        run(srv, str(pki.ca), "/api/v1/bare", None, n, a.seconds, a.max_requests)
                    )
                    res["custody"].append(
                        run(srv, str(pki.ca), "/api/v1/secrets/prod/payments/db", tok, n,
                            a.seconds, a.max_requests)
                    )  # fmt: skip
                med = {
                    k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in res.items()
                }
                rows.append((n, med, res))
        finally:
            srv.stop()
        verify = subprocess.run(
            [sys.executable, "-m", "custody_cli", "audit", "verify", "--home", str(home)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        leaked = VALUE in srv.output() or VALUE.encode() in (home / "audit.db").read_bytes()
    errs = sum(m[k]["errors"] for _, m, _r in rows for k in m)
    print(
        f"custody serve --workers {workers} --threads {a.threads}, TLS 1.3, auditing on, home "
        f"in {a.dir or tempfile.gettempdir()}; {a.seconds:g} s per run, medians of {a.rounds} "
        "alternating rounds (spread: min-max r/s over the rounds)"
    )
    hdr = (
        f"{'clients':>7} | {'bare r/s':>9} {'spread':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'custody r/s':>11} {'spread':>11} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'r/s ratio':>9} {'p99 ratio':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for n, m, r in rows:
        bare, cus = m["bare"], m["custody"]
        print(
            f"{n:>7} | {bare['rps']:>9.0f} {_spread(r['bare'], 'rps'):>11} {bare['p50']:>7.2f} "
            f"{bare['p99']:>7.2f} | {cus['rps']:>11.0f} {_spread(r['custody'], 'rps'):>11} "
            f"{cus['p50']:>7.2f} {cus['p99']:>7.2f} | "
            f"{cus['rps'] / bare['rps']:>9.2f} {cus['p99'] / bare['p99']:>9.2f}"
        )
    print(f"errors: {errs:g}; audit verify: exit {verify.returncode}; value leaked: {leaked}\n")
    return rows, verify.returncode == 0 and not errs and not leaked


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per client run (3)")
    ap.add_argument("--max-requests", type=int, default=20000, help="per client, at most")
    ap.add_argument("--clients", default="1,4,16", help="concurrent client processes")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians")
    ap.add_argument(
        "--workers", default="1", help="server processes, a list: one server each (1; e.g. 1,2)"
    )
    ap.add_argument("--threads", type=int, default=4, help="backend threads per process (4)")
    ap.add_argument(
        "--dir", default=None, help="where the home goes (e.g. /dev/shm: fsync nearly free)"
    )
    a = ap.parse_args()
    clients = [int(x) for x in a.clients.split(",")]
    ok = True
    for w in (int(x) for x in a.workers.split(",")):
        ok = measure(a, w, clients)[1] and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
