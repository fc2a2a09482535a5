"""An independent triggerfish/1 client: docs/quic-protocol.md, implemented on aioquic.

It shares no code with the router (aioquic is a Python QUIC and TLS 1.3 stack), so it checks
the server against the written protocol rather than against our own codec. It sends valid
frames, every kind of malformed frame the document lists, random garbage on many streams at
once, and (with --flood) a stream of connections that send garbage and vanish, and checks
each answer: the ack's status and counts, or the reset code.

    python quic_client.py --addr 127.0.0.1:8443 --ca data/quic/dev-cert.pem [--flood 3]

Prints one line per check on stderr and a JSON summary on stdout:
{"checks": N, "failed": [names], "accepted": events acked as queued, "random": {...}}.
Exits 1 when a check failed. Used by tests/tests/e2e/quic_interop.rs.
"""

import argparse
import asyncio
import json
import random
import struct
import sys
import time

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

ALPN = "triggerfish/1"
# Stream reset codes (docs/quic-protocol.md, "Errors that reset a stream").
MALFORMED, FRAME_TOO_LARGE, TRUNCATED, TRAILING_DATA, UNSUPPORTED_FLAGS = 0x1, 0x2, 0x3, 0x4, 0x6


def publish(target, body=b"", *, ftype=0x01, flags=0x00, body_len=None, credential=None):
    """A publish frame: type, flags, u16 target length, u32 body length, target, [credential], body."""
    if credential is not None:
        flags |= 0x01
    length = len(body) if body_len is None else body_len
    frame = struct.pack(">BBHI", ftype, flags, len(target), length) + target
    if credential is not None:
        frame += struct.pack(">H", len(credential)) + credential
    return frame + body


def decode_ack(data):
    """An ack frame: type 0x02, flags, status, accepted, retry after, rejected entries, message."""
    kind, _flags, status, accepted, retry_ms, rejected, mlen = struct.unpack(">BBHIIIH", data[:18])
    if kind != 0x02:
        raise ValueError(f"ack frame type {kind:#x}")
    message = data[18:18 + mlen].decode()
    at, entries = 18 + mlen, []
    for _ in range(rejected):
        index, estatus, elen = struct.unpack(">IHH", data[at:at + 8])
        entries.append((index, estatus, data[at + 8:at + 8 + elen].decode()))
        at += 8 + elen
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes after the ack")
    return {"status": status, "accepted": accepted, "retry_ms": retry_ms, "rejected": entries, "message": message}


def event(i, **extra):
    return dict({"specversion": "1.0", "id": f"interop-{i}", "source": "/interop", "type": "com.example.interop"}, **extra)


def array(events):
    return json.dumps(events).encode()


class Client(QuicConnectionProtocol):
    """Tracks each stream's answer: ("ack", bytes), ("reset", code) or ("closed", code)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.streams = {}
        self.closed = None

    def _stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = {"data": b"", "answer": asyncio.get_running_loop().create_future()}
        return self.streams[sid]

    def quic_event_received(self, ev):
        if isinstance(ev, StreamDataReceived):
            s = self._stream(ev.stream_id)
            s["data"] += ev.data
            if ev.end_stream and not s["answer"].done():
                s["answer"].set_result(("ack", s["data"]))
        elif isinstance(ev, StreamReset):
            s = self._stream(ev.stream_id)
            if not s["answer"].done():
                s["answer"].set_result(("reset", ev.error_code))
        elif isinstance(ev, ConnectionTerminated):
            self.closed = ev.error_code
            for s in self.streams.values():
                if not s["answer"].done():
                    s["answer"].set_result(("closed", ev.error_code))

    def send_frame(self, data, fin=True):
        sid = self._quic.get_next_available_stream_id()
        s = self._stream(sid)
        self._quic.send_stream_data(sid, data, end_stream=fin)
        self.transmit()
        return s["answer"]

    async def frame(self, data, fin=True, timeout=20.0):
        try:
            return await asyncio.wait_for(self.send_frame(data, fin), timeout)
        except asyncio.TimeoutError:
            return ("no answer", None)


class Checks:
    def __init__(self):
        self.names, self.failed, self.accepted = 0, [], 0

    def check(self, name, answer, expect):
        """expect: ("reset", code), or a function of the decoded ack returning True when right."""
        kind, value = answer
        ack = None
        if kind == "ack":
            try:
                ack = decode_ack(value)
                self.accepted += ack["accepted"]
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                kind, value = "bad ack", str(e)
        if isinstance(expect, tuple):
            ok = (kind, value) == expect
        else:
            ok = ack is not None and expect(ack)
        self.names += 1
        if not ok:
            self.failed.append(name)
        shown = ack if ack is not None else f"{kind} {value}"
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {str(shown)[:200]}", file=sys.stderr)


async def frames(conf, host, port, target, checks):
    async with connect(host, port, configuration=conf, create_protocol=Client) as c:
        ten = array([event(i) for i in range(10)])
        checks.check("a frame of 10 events", await c.frame(publish(target, ten)),
                     lambda a: (a["status"], a["accepted"], a["rejected"]) == (202, 10, []))
        mixed = array([event(100), {"specversion": "1.0", "id": "x", "source": "/s"}, event(102)])
        checks.check("a frame with one invalid event", await c.frame(publish(target, mixed)),
                     lambda a: a["status"] == 202 and a["accepted"] == 2
                     and a["rejected"] == [(1, 400, 'missing required attribute "type"')])
        checks.check("a credential the broker does not require",
                     await c.frame(publish(target, ten, credential=b"Bearer anything")),
                     lambda a: (a["status"], a["accepted"]) == (202, 10))
        big = array([event(1000 + i, data="x" * 2000) for i in range(1000)])
        checks.check(f"1,000 events in {len(big):,} bytes", await c.frame(publish(target, big)),
                     lambda a: (a["status"], a["accepted"]) == (202, 1000))
        huge = array([event(5000, data="y" * 2_000_000)])
        checks.check("an event over maxEventBytes", await c.frame(publish(target, huge)),
                     lambda a: a["status"] == 202 and a["accepted"] == 0
                     and len(a["rejected"]) == 1 and a["rejected"][0][1] == 413)
        checks.check("an unknown broker", await c.frame(publish(b"default/nope", b"[]")),
                     lambda a: (a["status"], a["message"]) == (404, "unknown broker default/nope"))
        checks.check("a body that is not JSON", await c.frame(publish(target, b"hello")),
                     lambda a: (a["status"], a["message"]) == (400, "body is not valid JSON (at byte 0): expected value"))
        checks.check("a JSON object, not an array", await c.frame(publish(target, b"{}")),
                     lambda a: a["status"] == 400 and "array" in a["message"])
        checks.check("an unknown frame type", await c.frame(publish(target, b"[]", ftype=0x09)), ("reset", MALFORMED))
        checks.check("flags 0x80", await c.frame(publish(target, b"[]", flags=0x80)), ("reset", UNSUPPORTED_FLAGS))
        checks.check("a body length of 4 GiB", await c.frame(publish(target, body_len=0xFFFF_FFFF)),
                     ("reset", FRAME_TOO_LARGE))
        checks.check("FIN inside the body", await c.frame(publish(target, b"[1,2", body_len=100)), ("reset", TRUNCATED))
        checks.check("FIN inside the header", await c.frame(b"\x01\x00\x00"), ("reset", TRUNCATED))
        checks.check("an empty stream", await c.frame(b""), ("reset", TRUNCATED))
        checks.check("bytes after the body", await c.frame(publish(target, b"[]", body_len=2) + b"xx"),
                     ("reset", TRAILING_DATA))
        checks.check("a target of length 0", await c.frame(publish(b"", b"[]")), ("reset", MALFORMED))
        checks.check("a target that is not UTF-8", await c.frame(publish(b"\xff\xfe/x", b"[]")), ("reset", MALFORMED))
        checks.check("a target without '/'", await c.frame(publish(b"defaultdefault", b"[]")), ("reset", MALFORMED))
        checks.check("a credential of length 0", await c.frame(publish(target, b"[]", credential=b"")),
                     ("reset", MALFORMED))

        # Random bytes, half of them behind a valid header, 300 streams at once (more than
        # quic.maxStreamsPerConnection: QUIC's stream limit makes the rest wait their turn).
        rnd = random.Random(7)
        pending = []
        for _ in range(300):
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
            if rnd.random() < 0.5:
                junk = publish(target, junk, body_len=rnd.randrange(50))
            pending.append(c.frame(junk))
        answers = await asyncio.gather(*pending)
        random_answers = {}
        for kind, value in answers:
            key = f"{kind} {decode_ack(value)['status'] if kind == 'ack' else value}"
            random_answers[key] = random_answers.get(key, 0) + 1
        checks.names += 1
        if not all(kind in ("ack", "reset") for kind, _ in answers):
            checks.failed.append("300 random frames")
        print(f"{'ok  ' if '300 random frames' not in checks.failed else 'FAIL'} 300 random frames: "
              f"{random_answers}", file=sys.stderr)
        checks.check("a valid frame on the same connection afterwards",
                     await c.frame(publish(target, array([event(6000 + i) for i in range(10)]))),
                     lambda a: (a["status"], a["accepted"]) == (202, 10))
        checks.random = random_answers

    # A connection closed in the middle of a frame, then a fresh one.
    async with connect(host, port, configuration=conf, create_protocol=Client) as c:
        c.send_frame(publish(target, b"[", body_len=1000), fin=False)
        await asyncio.sleep(0.05)
        c._quic.close(error_code=0x42, reason_phrase="gone")
        c.transmit()
    async with connect(host, port, configuration=conf, create_protocol=Client) as c:
        checks.check("a new connection after one closed mid-frame",
                     await c.frame(publish(target, array([event(7000 + i) for i in range(10)]))),
                     lambda a: (a["status"], a["accepted"]) == (202, 10))


async def handshake_fails(conf, host, port):
    try:
        async with connect(host, port, configuration=conf, create_protocol=Client):
            return False
    except ConnectionError:
        return True


async def flood(conf, host, port, target, seconds):
    """Connections that open 20 streams of garbage behind valid headers and close, for `seconds`."""
    rnd, end, n = random.Random(1), time.monotonic() + seconds, 0
    while time.monotonic() < end:
        async with connect(host, port, configuration=conf, create_protocol=Client) as c:
            for _ in range(20):
                junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(3000)))
                c.send_frame(publish(target, junk, body_len=rnd.randrange(1 << 20)), fin=rnd.random() < 0.5)
            await asyncio.sleep(0.01)
            c._quic.close(error_code=rnd.randrange(1000))
            n += 1
    print(f"     flood: {n} connections sent garbage and closed", file=sys.stderr)
    return n


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True, help="host:port of the QUIC ingress")
    p.add_argument("--ca", required=True, help="the server certificate's CA file (PEM)")
    p.add_argument("--target", default="default/default")
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--flood", type=float, default=0.0, help="seconds of garbage connections alongside")
    args = p.parse_args()
    host, port = args.addr.rsplit(":", 1)
    port, target = int(port), args.target.encode()

    def config(alpn, ca=True):
        c = QuicConfiguration(is_client=True, alpn_protocols=[alpn], server_name=args.server_name)
        if ca:
            c.load_verify_locations(args.ca)
        return c

    checks = Checks()
    checks.random = {}
    for name, conf in [("a wrong ALPN", config("h3")), ("an untrusted certificate", config(ALPN, ca=False))]:
        refused = await handshake_fails(conf, host, port)
        checks.names += 1
        if not refused:
            checks.failed.append(name)
        print(f"{'ok  ' if refused else 'FAIL'} {name}: handshake {'refused' if refused else 'accepted'}",
              file=sys.stderr)
    jobs = [frames(config(ALPN), host, port, target, checks)]
    if args.flood > 0:
        jobs.append(flood(config(ALPN), host, port, target, args.flood))
    results = await asyncio.gather(*jobs)
    summary = {"checks": checks.names, "failed": checks.failed, "accepted": checks.accepted,
               "random": checks.random, "flood_connections": results[1] if len(results) > 1 else 0}
    print(json.dumps(summary))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
