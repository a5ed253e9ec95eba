"""What encryption costs on loopback, below daskfleet: TLS against plain TCP, side by side in one run.

daskfleet requires TLS, and distributed's TLS transport is what its messages travel over. The workloads benchmark
(``benchmarks/localcluster.py``) prints a LocalCluster with TLS against one without; this one takes the clusters
away and times the transport alone, so a reader can tell the cost of encryption from daskfleet's own:

- **distributed comm, small message**: one message the size of a ``task-finished`` written and echoed back over a
  connection of ``distributed.comm`` (``tcp://`` or ``tls://``, the same certificates the clusters use);
- **distributed comm, 2 MB**: a 2 MB NumPy buffer (an array chunk of 500 × 500 float64) sent, a short answer back;
- **raw sockets, 2 MB**: the same 2 MB over blocking sockets, with Python's ``ssl`` or without it: the floor under
  any Python transport, OpenSSL's own encryption and Python's ``recv``, which hands over one TLS record (at most
  16 KiB) per call. The server counts those calls.

Each listener runs in a process of its own; within a round the two schemes take turns, starting with a different one
each round. The ratios are times, TLS over TCP, the median of the rounds' own ratios. No target: they are the part
of the workloads' gap that is encryption.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from distributed import Security

from .common import HOST, rounds_ratio, summary, tls_files

#: Rounds are short (about 3 s): three times the other benchmarks' count, for the ratios' noise.
ROUNDS = 3 * int(os.environ.get("DASKFLEET_BENCH_ROUNDS", "3"))
SMALL_ECHOES = 2000
TRANSFERS = 100
TRANSFER_BYTES = 500 * 500 * 8
SCHEMES = ("tcp", "tls")
#: A message shaped like a worker's ``task-finished``.
SMALL_MESSAGE = {"op": "task-finished", "key": "inc-0f3a9c2b1d", "nbytes": 28, "type": b"builtins.int",
                 "typename": "int", "metadata": {}, "thread": 140000000000000,
                 "startstops": ({"action": "compute", "start": 1.0e9, "stop": 1.0e9 + 1e-4},)}

#: A listener in its own process: ``comm`` (distributed's, echoing small messages and answering a buffer with a
#: short reply) or ``raw`` (blocking sockets, TRANSFER_BYTES at a time, a one-byte reply). It prints its port or
#: address; ``comm`` serves a connection per turn, ``raw`` one connection for all turns and prints its ``recv`` calls per transfer at the end.
SERVER_SCRIPT = """
import asyncio, socket, ssl, sys
kind, scheme, tls, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kind == "comm":
    from distributed import Security
    from distributed.comm import listen
    security = Security(tls_ca_file=f"{tls}/ca.pem", tls_scheduler_cert=f"{tls}/scheduler.pem",
                        tls_scheduler_key=f"{tls}/scheduler.key", require_encryption=True)
    async def main():
        async def handle(comm):
            while True:
                try:
                    msg = await comm.read()
                except Exception:
                    break
                await comm.write({"ok": 1} if "data" in msg else msg)
        args = security.get_listen_args("scheduler") if scheme == "tls" else {}
        listener = listen(f"{scheme}://127.0.0.1:0", handle, **args)
        await listener.start()
        print(listener.contact_address, flush=True)
        await asyncio.Event().wait()  # one connection per turn, until the benchmark ends this process
    asyncio.run(main())
else:
    listening = socket.create_server(("127.0.0.1", 0))
    print(listening.getsockname()[1], flush=True)
    conn, _ = listening.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{tls}/scheduler.pem", f"{tls}/scheduler.key")
        conn = context.wrap_socket(conn, server_side=True)
    view, calls, transfers = memoryview(bytearray(size)), 0, 0
    while True:
        got = 0
        while got < size:
            n = conn.recv_into(view[got:])
            if not n:
                print(calls / max(transfers, 1), flush=True)
                sys.exit(0)
            got, calls = got + n, calls + 1
        transfers += 1
        conn.sendall(b"k")
"""


@contextmanager
def _server(kind: str, scheme: str, tls: Path, log: Path):
    proc = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, kind, scheme, str(tls), str(TRANSFER_BYTES)],
                            stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)  # noqa: SIM115
    try:
        address = proc.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"the {kind} {scheme} listener did not start; see {log}")
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _median_ms(run, count: int) -> float:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def _comm_turn(address: str, security: Security | None) -> tuple[float, float]:
    """Milliseconds per small echo and per 2 MB transfer over one ``distributed.comm`` connection."""
    import numpy as np
    from distributed.comm import connect
    from distributed.protocol import to_serialize

    comm = await connect(address, **(security.get_connection_args("client") if security else {}))
    try:
        buffer = {"data": to_serialize(np.ones(TRANSFER_BYTES // 8))}

        async def timed(msg, count: int) -> float:
            for _ in range(count // 10):  # warm-up
                await comm.write(msg)
                await comm.read()
            times = []
            for _ in range(count):
                start = time.perf_counter()
                await comm.write(msg)
                await comm.read()
                times.append(time.perf_counter() - start)
            return statistics.median(times) * 1000

        return await timed(SMALL_MESSAGE, SMALL_ECHOES), await timed(buffer, TRANSFERS)
    finally:
        await comm.close()


def _raw_client(port: int, scheme: str, tls: Path) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if scheme == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(tls / "ca.pem")
        context.load_cert_chain(tls / "client.pem", tls / "client.key")
        context.check_hostname = False  # the certificate names the cluster's role, as distributed's contexts do
        sock = context.wrap_socket(sock)
    return sock


def _raw_turn(sock: socket.socket) -> float:
    data = b"x" * TRANSFER_BYTES

    def transfer() -> None:
        sock.sendall(data)
        sock.recv(1)

    _median_ms(transfer, TRANSFERS // 10)
    return _median_ms(transfer, TRANSFERS)


def run(root: Path) -> dict[str, float]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tls").mkdir()
    client_tls = tls_files(root / "tls")
    small: dict[str, list[float]] = {scheme: [] for scheme in SCHEMES}
    bulk: dict[str, list[float]] = {scheme: [] for scheme in SCHEMES}
    raw: dict[str, list[float]] = {scheme: [] for scheme in SCHEMES}
    recv_calls: dict[str, str] = {}
    with ExitStack() as stack:
        comm_addresses = {scheme: stack.enter_context(_server("comm", scheme, root / "tls", root / f"comm-{scheme}.log"))[0]
                          for scheme in SCHEMES}
        raw_servers = {scheme: stack.enter_context(_server("raw", scheme, root / "tls", root / f"raw-{scheme}.log"))
                       for scheme in SCHEMES}
        raw_socks = {scheme: stack.enter_context(_raw_client(int(port), scheme, root / "tls"))
                     for scheme, (port, _) in raw_servers.items()}
        for index in range(ROUNDS):
            for scheme in SCHEMES[index % 2:] + SCHEMES[: index % 2]:
                security = client_tls if scheme == "tls" else None
                echo_ms, bulk_ms = asyncio.run(_comm_turn(comm_addresses[scheme], security))
                small[scheme].append(echo_ms)
                bulk[scheme].append(bulk_ms)
                raw[scheme].append(_raw_turn(raw_socks[scheme]))
        for scheme, sock in raw_socks.items():
            sock.close()
            proc = raw_servers[scheme][1]
            recv_calls[scheme] = proc.stdout.readline().strip()
            proc.wait(timeout=30)
    megabytes = TRANSFER_BYTES / 1e6
    for label, times in (("distributed comm, small message echo (ms)", small),
                         (f"distributed comm, {megabytes:.0f} MB transfer (ms)", bulk),
                         (f"raw sockets, {megabytes:.0f} MB transfer (ms)", raw)):
        for scheme in SCHEMES:
            print(f"  {label}, {scheme}: {summary(times[scheme])}")
    for scheme in SCHEMES:
        print(f"  raw sockets, recv calls per {megabytes:.0f} MB transfer, {scheme}: {recv_calls[scheme]}")
    return {
        "transport TLS / TCP, distributed comm, small message (time)": rounds_ratio(small["tls"], small["tcp"]),
        "transport TLS / TCP, distributed comm, 2 MB (time)": rounds_ratio(bulk["tls"], bulk["tcp"]),
        "transport TLS / TCP, raw sockets, 2 MB (time)": rounds_ratio(raw["tls"], raw["tcp"]),
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="daskfleet-bench-") as directory:
        for name, value in run(Path(directory) / "transport").items():
            print(f"  {name:<60} {value:.3f}")
