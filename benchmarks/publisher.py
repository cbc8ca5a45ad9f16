"""The open-loop publisher: its own process, one TCP connection, a fixed rate.

Slot ``i`` is due at ``t0 + i / rate`` (``time.monotonic``, one clock for the
whole machine). Each publication's ``data`` is a 100-byte payload stamped with
the run id, its sequence number and that *intended* time, so a receiver's
latency includes any delay in sending it. A late send never shifts the slots
after it (open loop). Being a process of its own, the publisher is not held
up by the receivers' event loop; it shares their core.

Protocol with the parent, one line each: the child prints ``ready`` once
connected, reads ``t0`` from stdin, publishes, prints one JSON object of
results (``sent``, ``max_late_ms``, ``late_1ms``, ``errors``), and exits when
stdin gives it a line or ends (so the parent can read its CPU time first).

    python -m benchmarks.publisher HOST PORT CHANNEL RATE COUNT RUN
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from typing import Any

from hubbub.protocol.codec import decode_msgpack, encode_msgpack
from hubbub.protocol.frames import FrameDecoder, encode_frame

#: magic, run id, sequence number, intended send time (monotonic seconds).
STAMP = struct.Struct("<4sBxxxQd")
MAGIC = b"HBUB"
PAYLOAD_SIZE = 100
_PAD = bytes(PAYLOAD_SIZE - STAMP.size)


def payload(run: int, seq: int, intended: float) -> bytes:
    """A 100-byte publication body carrying its stamp."""
    return STAMP.pack(MAGIC, run, seq, intended) + _PAD


def _read_reply(sock: socket.socket, decoder: FrameDecoder, timeout: float) -> dict[str, Any]:
    sock.settimeout(timeout)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the publisher's connection")
        frames = decoder.feed(data)
        if frames:
            return decode_msgpack(frames[0])


def _drain_errors(sock: socket.socket, decoder: FrameDecoder) -> int:
    """Count ``error`` pushes the server sent back (fire-and-forget failures)."""
    errors = 0
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            for frame in decoder.feed(data):
                if decode_msgpack(frame).get("push") == "error":
                    errors += 1
    except BlockingIOError:
        pass
    return errors


def run(host: str, port: int, channel: str, rate: float, count: int, run_id: int) -> None:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    decoder = FrameDecoder(1 << 24)
    sock.sendall(encode_frame(encode_msgpack({"op": "connect", "id": 1})))
    reply = _read_reply(sock, decoder, 10)
    if "ok" not in reply:
        raise ConnectionError(f"connect refused: {reply}")
    print("ready", flush=True)
    t0 = float(sys.stdin.readline())
    period = 1.0 / rate
    frames = [
        encode_frame(
            encode_msgpack(
                {"op": "publish", "channel": channel, "data": payload(run_id, i, t0 + i * period)}
            )
        )
        for i in range(count)
    ]
    monotonic, sleep, send = time.monotonic, time.sleep, sock.sendall
    max_late = 0.0
    late_1ms = 0
    for i, frame in enumerate(frames):
        due = t0 + i * period
        wait = due - monotonic()
        if wait > 0:
            sleep(wait)
        send(frame)
        late = monotonic() - due
        if late > max_late:
            max_late = late
        if late > 0.001:
            late_1ms += 1
    time.sleep(0.2)  # let error pushes, if any, arrive
    errors = _drain_errors(sock, decoder)
    result = {"sent": count, "max_late_ms": max_late * 1000, "late_1ms": late_1ms, "errors": errors}
    print(json.dumps(result), flush=True)
    sys.stdin.readline()  # stay until the parent has read our CPU time
    sock.close()


def main(argv: list[str]) -> int:
    host, port, channel, rate, count, run_id = argv
    run(host, int(port), channel, float(rate), int(count), int(run_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
