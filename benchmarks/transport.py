"""Transport benchmark: streaming a large update over gRPC with mutual TLS, and the round overhead.

Run from the repository root::

    .venv/bin/python benchmarks/transport.py                 # 256 MB update, 10-member federation
    .venv/bin/python benchmarks/transport.py --mb 64 --rounds 5

Prints one JSON line: ``grpc_mb_s`` (update streamed with ``Peer.SubmitUpdate`` between two processes
over loopback mutual TLS, signed header, 1 MiB chunks, digest checked, decoded into an array by the
receiver), ``raw_tls_mb_s`` (the same bytes over a plain ``ssl`` socket with the same certificates), their
ratio (target >= 0.5); memory: the receiving process's peak RSS (``VmHWM``: its own high-water mark since
it started, which a ``getrusage`` maximum is not, since that survives ``fork``/``exec`` from the parent),
its growth while receiving, each relative to the update size (target <= 2), and the sending process's
growth while streaming beyond the update it holds (a bounded window: a few chunks); and the per-round
overhead of a 10-member ``fedswarm up`` federation with a tiny model: the median time from one round's
start to the next's at its coordinator (``started_ms`` in the round records, so the commit and its
delivery count) less the median compute of the same rounds in the in-process simulation (target <= 50
ms). ``round_seconds_engine`` is the round engine's own part of a round, for comparison. With
``--repeat N`` the federation runs N times and the median period counts. ``round_cpu_ms_*``: CPU
milliseconds (user + system, from ``/proc``) per round of all node processes together, of the
coordinator, and of the mean other member, over the same rounds; ``round_cpu_over_compute`` relates the
first to the simulated round's compute. On a shared machine the period depends on the load (``load_1m``,
before and after), the CPU per round much less. Progress goes to stderr.

    nice -n 10 .venv/bin/python benchmarks/transport.py --skip-stream --repeat 3   # round overhead only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import socket
import ssl
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedswarm.crypto import pki
from fedswarm.crypto.signing import SigningKey
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.client import PeerClient
from fedswarm.transport.envelope import EnvelopeVerifier, seal
from fedswarm.transport.service import PeerService
from fedswarm.transport.tls import PeerAuthenticator, TlsMaterial, Trust, server_credentials, server_options
from fedswarm.transport.wire import decode_update, encode_update, encoded_update_size, sha256_hex

FED = "0" * 32


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs``); ``False`` if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Sink:
    """A PeerHandler that accepts any update of the expected size and decodes it, as a coordinator does."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.received = 0

    def round_check(self, kind: str) -> None:
        return None

    def update_limit(self, message: Any, header: pb.UpdateHeader) -> int:
        return self.limit

    def on_update(
        self, message: Any, header: pb.UpdateHeader, data: bytes | bytearray | None, *, wait: float | None
    ) -> pb.Ack:
        update = decode_update(data or bytearray(), source="benchmark update")
        self.received = update.nbytes
        return pb.Ack(detail="ok")

    def on_refused(self, method: str, peer: str | None, refusal: Any) -> None:
        print(f"refused: {refusal}", file=sys.stderr)


def _grpc_receiver(material: TlsMaterial, parts: dict[str, Any], limit: int, port_q: Any, done_q: Any) -> None:
    from fedswarm.crypto.signing import VerifyKey

    trust = Trust(
        FED,
        pki.Certificate.from_pem(parts["ca"]),
        pki.RevocationList.from_pem(parts["crl"]),
        parts["fingerprints"],
        {"sender": VerifyKey.from_hex(parts["key"])},
        {},
        1,
    )
    sink = _Sink(limit)
    verifier = EnvelopeVerifier(FED, keys=lambda n: trust.keys.get(n))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=server_options(max_message_bytes=4 << 20, keepalive_seconds=20),
    )
    service = PeerService(sink, verifier=verifier, authenticator=PeerAuthenticator(trust))  # type: ignore[arg-type]
    pb_grpc.add_PeerServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", server_credentials(material))
    server.start()
    base = _status_mb("VmRSS")
    port_q.put(port)
    done_q.get()
    done_q.put({"received": sink.received, "peak_rss_mb": _status_mb("VmHWM"), "base_rss_mb": base})
    server.stop(None)


def _tls_receiver(cert: str, key: str, ca: str, size: int, port_q: Any, done_q: Any) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port_q.put(srv.getsockname()[1])
        conn, _ = srv.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            buf = bytearray(size)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = tls.recv_into(view[got:], min(1 << 20, size - got))
                if n == 0:
                    break
                got += n
            digest = hashlib.sha256(buf).hexdigest()
            tls.sendall(b"k")
    done_q.put({"received": got, "digest": digest})


def _materials(tmp: Path) -> tuple[TlsMaterial, TlsMaterial, Trust, SigningKey, dict[str, str]]:
    ca = pki.create_ca("bench CA", validity_days=2)
    out = []
    for name in ("receiver", "sender"):
        key = pki.TlsPrivateKey.generate()
        cert = pki.issue_certificate(
            ca, key.public_key(), name=name, dns_names=(name,), ip_addresses=("127.0.0.1",), validity_days=1
        )
        out.append((key, cert))
    signing = SigningKey.generate()
    crl = pki.create_crl(ca, number=1)
    trust = Trust(FED, ca.certificate, crl, {n: c.fingerprint for n, (_, c) in zip(("receiver", "sender"), out, strict=True)},
                  {"sender": signing.public_key()}, {}, 1)  # fmt: skip
    files = {"ca": str(tmp / "ca.pem"), "cert": str(tmp / "r.pem"), "key": str(tmp / "r-key.pem")}
    ca.certificate.save(Path(files["ca"]))
    out[0][1].save(Path(files["cert"]))
    Path(files["key"]).write_bytes(out[0][0].to_pem())
    mats = [TlsMaterial(ca.certificate.pem, c.pem, k.to_pem()) for k, c in out]
    return mats[0], mats[1], trust, signing, files


def stream_benchmark(mb: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        recv_mat, send_mat, trust, signing, files = _materials(Path(tmp))
        size = encoded_update_size(mb * (1 << 20) // 8)
        port_q, done_q = ctx.Queue(), ctx.Queue()
        parts = {
            "ca": trust.ca.pem,
            "crl": trust.crl.pem,
            "fingerprints": dict(trust.fingerprints),
            "key": trust.keys["sender"].hex,
        }
        # the receiver starts before this process builds the update: nothing large is inherited
        proc = ctx.Process(target=_grpc_receiver, args=(recv_mat, parts, size + 1, port_q, done_q))
        proc.start()
        port = port_q.get(timeout=60)
        data = encode_update(np.random.default_rng(0).standard_normal(mb * (1 << 20) // 8))
        assert len(data) == size
        print(f"streaming {size / 1e6:.0f} MB over gRPC mutual TLS ...", file=sys.stderr)
        client = PeerClient("receiver", f"127.0.0.1:{port}", send_mat, max_message_bytes=4 << 20, keepalive_seconds=20)
        header = pb.UpdateHeader(attempt=1, base_digest="0" * 64, update_digest=sha256_hex(data), update_size=size)
        client.healthy(timeout=5)
        envelope = seal(header, key=signing, sender="sender", federation_id=FED, round=1)
        sender_before = _status_mb("VmRSS")
        sender_reset = _reset_peak()
        t0 = time.perf_counter()
        client.submit_update(envelope, data, timeout=600)
        grpc_s = time.perf_counter() - t0
        sender_peak = _status_mb("VmHWM")
        client.close()
        done_q.put("done")
        time.sleep(0.2)
        grpc_stats = done_q.get(timeout=60)
        proc.join(30)
        print(f"streaming {size / 1e6:.0f} MB over a raw TLS socket ...", file=sys.stderr)
        port_q, done_q = ctx.Queue(), ctx.Queue()
        proc = ctx.Process(target=_tls_receiver, args=(files["cert"], files["key"], files["ca"], size, port_q, done_q))
        proc.start()
        port = port_q.get(timeout=60)
        cctx = ssl.create_default_context(cafile=files["ca"])
        cctx.check_hostname = False
        key_file = Path(tmp) / "s-key.pem"
        cert_file = Path(tmp) / "s.pem"
        key_file.write_bytes(send_mat.key_pem)
        cert_file.write_bytes(send_mat.cert_pem)
        cctx.load_cert_chain(str(cert_file), str(key_file))
        with socket.create_connection(("127.0.0.1", port)) as raw, cctx.wrap_socket(raw) as tls:
            t0 = time.perf_counter()
            view = memoryview(data)
            for start in range(0, size, 1 << 20):
                tls.sendall(view[start : start + (1 << 20)])
            tls.recv(1)
            tls_s = time.perf_counter() - t0
        tls_stats = done_q.get(timeout=60)
        proc.join(30)
    update_bytes = mb * (1 << 20)
    assert grpc_stats["received"] == update_bytes and tls_stats["received"] == size
    grpc_rate, tls_rate = size / 1e6 / grpc_s, size / 1e6 / tls_s
    update_mib = size / (1 << 20)
    return {
        "update_mb": round(size / 1e6, 1),
        "grpc_mb_s": round(grpc_rate, 1),
        "raw_tls_mb_s": round(tls_rate, 1),
        "throughput_ratio": round(grpc_rate / tls_rate, 3),
        "receiver_peak_rss_mb": round(grpc_stats["peak_rss_mb"], 1),
        "receiver_rss_growth_over_update": round(
            (grpc_stats["peak_rss_mb"] - grpc_stats["base_rss_mb"]) / update_mib, 3
        ),
        "receiver_peak_rss_over_update": round(grpc_stats["peak_rss_mb"] / update_mib, 3),
        "sender_rss_growth_while_streaming_mb": round(sender_peak - sender_before, 1) if sender_reset else None,
    }


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a running process, from Linux ``/proc`` (``None`` if unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class _CpuMeter:
    """CPU seconds of every node process, sampled when the leader is first seen at round ``start`` or later,
    and again each time it is first seen at a later round (the last of those samples ends the span)."""

    def __init__(self, leader: str, *, start: int) -> None:
        self.leader = leader
        self.start = start
        self.first: tuple[int, dict[str, float]] | None = None
        self.last: tuple[int, dict[str, float]] | None = None

    def __call__(self, fed: Any, done: Any) -> None:
        rnd = int(done.get(self.leader, 0))
        if rnd < self.start or (self.last is not None and rnd <= self.last[0]):
            return
        sample = {name: _cpu_seconds(proc.pid) for name, proc in fed.processes.items()}
        if any(v is None for v in sample.values()):
            return
        taken = (rnd, {n: float(v) for n, v in sample.items() if v is not None})
        if self.first is None:
            self.first = taken
        self.last = taken

    def per_round_ms(self) -> dict[str, float] | None:
        """Federation, leader and mean member CPU milliseconds per round over the span, or ``None``."""
        if self.first is None or self.last is None or self.last[0] <= self.first[0]:
            return None
        rounds = self.last[0] - self.first[0]
        used = {n: self.last[1][n] - self.first[1].get(n, 0.0) for n in self.last[1]}
        members = [v for n, v in used.items() if n != self.leader]
        return {
            "federation": 1000 * sum(used.values()) / rounds,
            "leader": 1000 * used.get(self.leader, 0.0) / rounds,
            "member": 1000 * sum(members) / max(1, len(members)) / rounds,
        }


def round_overhead(members: int, rounds: int, *, ledger: bool = False, repeat: int = 1) -> dict[str, Any]:
    """Run a ``members``-member star federation of a tiny model ``repeat`` times; time and CPU per round.

    The period is the median time from one round's start to the next's at the coordinator (from round 2:
    round 1 includes connection set-up); the overhead is that less the median compute of a simulated
    round. CPU: user + system seconds of all node processes over the same rounds, per round (less
    sensitive to other load on the machine than the period).
    """
    from fedswarm.node.up import run_local_federation
    from fedswarm.sim.engine import run_simulation
    from fedswarm.spec.schema import parse_spec

    raw = {
        "federation": {"name": "overhead", "members": members, "rounds": rounds, "seed": 1},
        "data": {"dataset": "breast_cancer", "partition": "iid", "min_samples": 5},
        "strategy": {"name": "fedavg", "min_members": 2},
        "baselines": {"local_only": False, "centralized": False},
        "ledger": {"enabled": ledger},
        "output": {"plots": False},
        "network": {"probe_interval": 0.5},
    }
    spec = parse_spec(raw)
    leader = spec.network.member_names(members)[spec.network.aggregator]
    periods, engines, cpus = [], [], []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        what = "with" if ledger else "without"
        for k in range(repeat):
            print(f"{members}-member federation over the network, {rounds} rounds, {what} ledger "
                  f"(run {k + 1} of {repeat}) ...", file=sys.stderr)  # fmt: skip
            meter = _CpuMeter(leader, start=2)
            fed = run_local_federation(spec, out_dir=Path(tmp) / f"up{k}", timeout=600, on_poll=meter)
            records = fed.history()
            starts = [int(r["started_ms"]) for r in records]
            periods.append(float(np.median(np.diff(starts[1:]))) / 1000.0)
            engines.append(float(np.median([float(r["seconds"]) for r in records[1:]])))
            cpu = meter.per_round_ms()
            if cpu is not None:
                cpus.append(cpu)
        sim = run_simulation(spec, out_dir=Path(tmp) / "sim", write_outputs=False).history
        compute = float(np.median([float(r["seconds"]) for r in sim[1:]]))
    period = float(np.median(periods))
    out: dict[str, Any] = {
        "members": members,
        "rounds": rounds,
        "runs": repeat,
        "round_seconds_network": round(period, 4),
        "round_seconds_network_runs": [round(p, 4) for p in periods],
        "round_seconds_engine": round(float(np.median(engines)), 4),
        "round_seconds_compute": round(compute, 4),
        "round_overhead_ms": round(1000 * (period - compute), 2),
        "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if cpus:
        for part in ("federation", "leader", "member"):
            out[f"round_cpu_ms_{part}"] = round(float(np.median([c[part] for c in cpus])), 2)
        out["round_cpu_over_compute"] = round(out["round_cpu_ms_federation"] / (1000 * compute), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="update size in MiB")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=1, help="federations run for the round overhead (median)")
    parser.add_argument("--skip-stream", action="store_true", help="only the round overhead")
    parser.add_argument(
        "--ledger", action="store_true", help="also measure the round overhead with every node keeping its ledger"
    )
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "transport"}
    if not args.skip_stream:
        result.update(stream_benchmark(args.mb))
    result.update(round_overhead(args.members, args.rounds, repeat=args.repeat))
    if args.ledger:
        on = round_overhead(args.members, args.rounds, ledger=True, repeat=args.repeat)
        result["round_seconds_network_ledger"] = on["round_seconds_network"]
        result["round_overhead_ledger_ms"] = on["round_overhead_ms"]
        result["round_period_ratio_ledger"] = round(on["round_seconds_network"] / result["round_seconds_network"], 3)
        if "round_cpu_ms_federation" in on and "round_cpu_ms_federation" in result:
            result["round_cpu_ms_federation_ledger"] = on["round_cpu_ms_federation"]
            result["round_cpu_ratio_ledger"] = round(
                on["round_cpu_ms_federation"] / result["round_cpu_ms_federation"], 3
            )
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
