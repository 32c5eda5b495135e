#!/usr/bin/env python3
"""A TCP proxy that adds WAN latency and counts the HTTP requests passing through it.

Used by contrib/wan_benchmark.sh to put an S3 server on loopback "far away": the
kernels this project is tested on often have no netem (tc qdisc ... delay), so the
latency is added here instead.

    wan_proxy.py --target 127.0.0.1:3900 --delay-ms 10 \
                 [--listen-port 0] [--port-file FILE] [--stats FILE]

Latency model (per connection, each direction on its own):
  * every chunk of data is timestamped when it arrives and released to the other side
    at arrival + delay, in order; chunks are not serialised behind one another, so the
    bandwidth is not reduced, only latency added (a pipe of length --delay-ms);
  * a half close (FIN) and a close travel the same way, after the data before them;
  * opening a connection costs one round trip (SYN, SYN-ACK) as on a real network:
    nothing the client sends leaves the proxy before accept + --connect-delay-ms
    (default: twice --delay-ms), and then it still takes --delay-ms to arrive.
Buffering is bounded: once more than --max-buffer-mib of one direction's data waits
(for its release time or for the receiver to take it), the proxy stops reading from the
sender until it drains, so a slow reader slows the writer down as TCP would.

SERVER-SIDE ACKS: on its connections to the server the proxy ACKs every segment at once
(TCP_QUICKACK re-armed after each read and write). Some servers (Garage among them) write
a response's head and body in two writes without TCP_NODELAY; Nagle's algorithm then
holds the body until the head is ACKed, and a receiver using delayed ACKs answers only
after 40 ms: most small GETs would take 40 ms more, on loopback as well as through the
proxy, which is a quirk of that server, not a property of the network being emulated.
--no-server-quickack turns this off. The client side is left alone: how the system under
test writes its requests is part of what is measured.

Counting: the client-to-server stream is parsed as HTTP/1.1 (request line and headers,
then the body skipped by Content-Length or by chunked transfer coding), and each request
is counted under its method (GET, PUT, POST, DELETE, HEAD; anything else under OTHER).
The responses are parsed too and counted by status class (2xx, 3xx, 4xx, 5xx), with
the non-2xx statuses also counted one by one. A connection whose stream cannot be
parsed is still proxied, only no longer counted (it adds to parse_errors).

Stats: with --stats FILE the counters are written there as JSON (atomically: written
beside it and renamed), at most every 0.5 s while they change, at once on SIGUSR1, and
at exit. The JSON's "signals" field counts the SIGUSR1 handled so far, so a script can
send SIGUSR1 and wait until "signals" has grown to know the file is current:

    {"requests": {"GET": 0, "PUT": 0, ...}, "responses": {"2xx": 0, ...},
     "status": {"404": 3}, "connections": 12, "open_connections": 4,
     "bytes_up": 123, "bytes_down": 456, "parse_errors": 0, "signals": 1, ...}

SIGTERM and SIGINT stop the proxy (after writing the stats). Every number given is
bounded (delays 0 to 10000 ms, buffer 1/16 to 4096 MiB, ports); a bad argument stops it
with one line and exit status 2.
"""

import argparse
import asyncio
import collections
import json
import math
import os
import signal
import socket
import sys
import time

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_HEAD = 1 << 20  # longest request/response head or chunk-size line we accept


class Stats:
    def __init__(self):
        self.requests = {m: 0 for m in METHODS}
        self.requests["OTHER"] = 0
        self.responses = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
        self.status = collections.Counter()
        self.connections = 0
        self.open_connections = 0
        self.failed_connects = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.parse_errors = 0
        self.signals = 0
        self.version = 0  # bumped on every change, to know when to rewrite the file

    def as_dict(self, args):
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "status": {k: v for k, v in sorted(self.status.items())},
            "connections": self.connections,
            "open_connections": self.open_connections,
            "failed_connects": self.failed_connects,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "parse_errors": self.parse_errors,
            "signals": self.signals,
            "delay_ms": args.delay_ms,
            "target": args.target,
            "time": time.time(),
        }


STATS = Stats()


class ParseError(Exception):
    pass


class HttpParser:
    """Incremental HTTP/1.1 message framing, for one direction of one connection.

    Request mode counts methods and remembers them (FIFO) for the response parser,
    which needs to know which responses have no body (HEAD, 1xx, 204, 304)."""

    def __init__(self, requests, methods):
        self.requests = requests  # True: parse requests; False: responses
        self.methods = methods  # deque of methods of requests not answered yet
        self.state = "head"
        self.buf = bytearray()
        self.left = 0  # bytes of body or chunk data still to skip
        self.dead = False

    def feed(self, data):
        if self.dead:
            return
        try:
            self._feed(data)
        except ParseError:
            self.dead = True
            STATS.parse_errors += 1
            STATS.version += 1

    def _until(self, data, pos, sep, limit):
        """Accumulate data up to and including SEP (at most LIMIT bytes in all).

        Returns (the bytes up to and including SEP, or None if not complete yet, new pos).
        Only the bytes that belong to the head or line are copied, never a body."""
        if not self.buf:
            i = data.find(sep, pos, pos + limit)
            if i >= 0:
                return data[pos:i + len(sep)], i + len(sep)
            self.buf += data[pos:pos + limit + 1]
        else:
            old = len(self.buf)
            self.buf += data[pos:pos + limit + 1 - old]
            i = self.buf.find(sep, max(0, old - len(sep) + 1))
            if i >= 0:
                out = bytes(self.buf[:i + len(sep)])
                self.buf.clear()
                return out, pos + i + len(sep) - old
        if len(self.buf) > limit:
            raise ParseError("head or line too long")
        return None, len(data)

    def _feed(self, data):
        pos, n = 0, len(data)
        while pos < n:
            st = self.state
            if st == "head":
                if not self.buf:
                    # Stray CRLFs between messages are allowed (RFC 9112, 2.2).
                    while pos < n and data[pos] in (10, 13):
                        pos += 1
                    if pos == n:
                        return
                head, pos = self._until(data, pos, b"\r\n\r\n", MAX_HEAD)
                if head is None:
                    return
                self._head(head)
            elif st == "body" or st == "chunk_data":
                k = min(self.left, n - pos)
                self.left -= k
                pos += k
                if self.left == 0:
                    self.state = "head" if st == "body" else "chunk_crlf"
            elif st == "until_close":
                return
            elif st == "chunk_size":
                line, pos = self._until(data, pos, b"\n", 4096)
                if line is None:
                    return
                size = line.split(b";", 1)[0].strip()
                try:
                    self.left = int(size, 16)
                except ValueError:
                    raise ParseError("bad chunk size")
                if self.left < 0:
                    raise ParseError("bad chunk size")
                self.state = "chunk_data" if self.left else "trailers"
            elif st == "chunk_crlf":
                line, pos = self._until(data, pos, b"\n", 2)
                if line is None:
                    return
                if line.strip():
                    raise ParseError("missing CRLF after chunk")
                self.state = "chunk_size"
            elif st == "trailers":
                line, pos = self._until(data, pos, b"\n", MAX_HEAD)
                if line is None:
                    return
                if not line.strip():
                    self.state = "head"
            else:
                raise ParseError("bad state")

    def _head(self, head):
        lines = head.split(b"\r\n")
        first = lines[0].decode("latin-1")
        length = None
        chunked = False
        for h in lines[1:]:
            if not h:
                continue
            name, sep, value = h.partition(b":")
            if not sep:
                raise ParseError("bad header line")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise ParseError("bad Content-Length")
            elif name == b"transfer-encoding":
                codings = [c.strip().lower() for c in value.split(b",")]
                chunked = bool(codings) and codings[-1] == b"chunked"
        if self.requests:
            parts = first.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                raise ParseError("bad request line")
            method = parts[0]
            STATS.requests[method if method in STATS.requests and method != "OTHER" else "OTHER"] += 1
            STATS.version += 1
            self.methods.append(method)
            no_body = False
        else:
            parts = first.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                raise ParseError("bad status line")
            try:
                status = int(parts[1])
            except ValueError:
                raise ParseError("bad status")
            cls = f"{status // 100}xx"
            if cls in STATS.responses:
                STATS.responses[cls] += 1
            if not 200 <= status < 300:
                STATS.status[str(status)] += 1
            STATS.version += 1
            if status == 101:
                raise ParseError("protocol switch")  # not HTTP any more: stop parsing
            if 100 <= status < 200:
                return  # interim response: the final one follows, same request
            method = self.methods.popleft() if self.methods else None
            no_body = method == "HEAD" or status in (204, 304)
        if no_body:
            self.state = "head"
        elif chunked:
            self.state = "chunk_size"
        elif length is not None:
            self.left = length
            self.state = "body" if length else "head"
        elif self.requests:
            self.state = "head"  # a request without length has no body
        else:
            self.state = "until_close"


EOF = object()
CLOSE = object()
QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quickack(transport):
    """Have the kernel ACK what arrives on this socket at once, not after up to 40 ms.

    Linux clears the flag again by itself, so it is set after every read and write."""
    sock = transport.get_extra_info("socket")
    if sock is not None and QUICKACK is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        except OSError:
            pass


class Direction:
    """One direction of a proxied connection: a delay line from src to dst."""

    def __init__(self, conn, name, parser):
        self.conn = conn
        self.name = name
        self.parser = parser
        self.loop = conn.loop
        self.q = collections.deque()  # (release time, bytes | EOF | CLOSE)
        self.qbytes = 0
        self.timer = None
        self.src = None  # transport we read from
        self.dst = None  # transport we write to
        self.not_before = 0.0  # earliest release time (connection setup)
        self.paused_queue = False
        self.paused_dst = False
        self.src_paused = False
        self.done = False  # EOF or close delivered to dst

    def _update_reading(self):
        want = self.paused_queue or self.paused_dst
        if self.src is None or want == self.src_paused:
            return
        self.src_paused = want
        try:
            if want:
                self.src.pause_reading()
            else:
                self.src.resume_reading()
        except (RuntimeError, AttributeError):
            pass

    def _push(self, item, size):
        now = self.loop.time()
        self.q.append((max(now, self.not_before) + self.conn.delay, item))
        self.qbytes += size
        if self.qbytes > self.conn.max_buffer and not self.paused_queue:
            self.paused_queue = True
            self._update_reading()
        self._schedule()

    def data(self, data):
        if self.parser is not None:
            self.parser.feed(data)
        if self.name == "up":
            STATS.bytes_up += len(data)
        else:
            STATS.bytes_down += len(data)
        self._push(data, len(data))

    def eof(self):
        self._push(EOF, 0)

    def close(self):
        self._push(CLOSE, 0)

    def _schedule(self):
        if self.timer is None and self.q and self.dst is not None:
            self.timer = self.loop.call_at(self.q[0][0], self._flush)

    def _flush(self):
        self.timer = None
        now = self.loop.time()
        dst = self.dst
        while self.q and self.q[0][0] <= now:
            _, item = self.q.popleft()
            if item is EOF:
                self.done = True
                if not dst.is_closing():
                    if dst.can_write_eof():
                        dst.write_eof()
                    else:
                        dst.close()
                self.conn.direction_done()
            elif item is CLOSE:
                self.done = True
                if not dst.is_closing():
                    dst.close()  # sends what is still buffered first
                self.conn.direction_done()
            else:
                self.qbytes -= len(item)
                if not dst.is_closing():
                    dst.write(item)
                    if self.name == "up" and self.conn.server_quickack:
                        quickack(dst)
        if self.paused_queue and self.qbytes <= self.conn.max_buffer // 2:
            self.paused_queue = False
            self._update_reading()
        self._schedule()

    def dst_pause(self):
        self.paused_dst = True
        self._update_reading()

    def dst_resume(self):
        self.paused_dst = False
        self._update_reading()

    def abandon(self):
        """The receiver is gone: drop what waits for it, and stop holding the sender."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.q.clear()
        self.qbytes = 0
        self.paused_queue = self.paused_dst = False
        self._update_reading()


class Side(asyncio.Protocol):
    """Protocol of one of the two sockets of a connection."""

    def __init__(self, conn, is_client):
        self.conn = conn
        self.is_client = is_client

    def _out(self):  # the direction this socket's data goes into
        return self.conn.up if self.is_client else self.conn.down

    def _in(self):  # the direction that writes into this socket
        return self.conn.down if self.is_client else self.conn.up

    def connection_made(self, transport):
        transport.set_write_buffer_limits(high=1 << 20, low=256 << 10)
        self._out().src = transport
        self._in().dst = transport
        if self.is_client:
            self.conn.client_connected(transport)
        else:
            self.conn.server = transport
            if self.conn.server_quickack:
                quickack(transport)
        self._in()._schedule()

    def data_received(self, data):
        if not self.is_client and self.conn.server_quickack:
            quickack(self.conn.server)
        self._out().data(data)

    def eof_received(self):
        self._out().eof()
        return True  # keep the socket open: the other direction may still carry data

    def connection_lost(self, exc):
        self.conn.lost(self.is_client)
        if not self._out().done:
            self._out().close()

    def pause_writing(self):
        self._in().dst_pause()

    def resume_writing(self):
        self._in().dst_resume()


class Connection:
    def __init__(self, loop, args):
        self.loop = loop
        self.args = args
        self.delay = args.delay_ms / 1000.0
        self.max_buffer = int(args.max_buffer_mib * (1 << 20))
        self.server_quickack = args.server_quickack
        methods = collections.deque()
        self.up = Direction(self, "up", HttpParser(True, methods) if args.count else None)
        self.down = Direction(self, "down", HttpParser(False, methods) if args.count else None)
        self.client = None
        self.server = None
        self.client_gone = False
        self.server_gone = False
        self.connect_failed = False
        self.closed = False

    def client_connected(self, transport):
        self.client = transport
        STATS.connections += 1
        STATS.open_connections += 1
        STATS.version += 1
        connect_delay = (self.args.connect_delay_ms if self.args.connect_delay_ms is not None
                         else 2 * self.args.delay_ms) / 1000.0
        self.up.not_before = self.loop.time() + connect_delay
        self.loop.create_task(self._connect())

    async def _connect(self):
        host, port = self.args.target_host, self.args.target_port
        try:
            # Side.connection_made of the server socket plugs it into both directions.
            await self.loop.create_connection(lambda: Side(self, False), host, port)
        except OSError as e:
            self.connect_failed = True
            STATS.failed_connects += 1
            STATS.version += 1
            print(f"wan_proxy: cannot connect to {host}:{port}: {e}", file=sys.stderr)
            # The client sees the refusal after the connection's round trip.
            when = max(self.loop.time(), self.up.not_before)
            self.loop.call_at(when, self._abort)

    def _abort(self):
        self.up.abandon()
        self.down.abandon()
        if self.client is not None and not self.client.is_closing():
            self.client.abort()

    def direction_done(self):
        # Both directions ended (EOF or close delivered): close both sockets.
        if self.up.done and self.down.done:
            for t in (self.client, self.server):
                if t is not None and not t.is_closing():
                    t.close()

    def lost(self, is_client):
        if is_client:
            self.client_gone = True
        else:
            self.server_gone = True
        # A socket that is gone cannot receive any more: drop what was queued for it.
        # (What it sent before still travels, followed by a close.)
        (self.down if is_client else self.up).abandon()
        if self.client_gone and (self.server_gone or self.connect_failed) and not self.closed:
            self.closed = True
            STATS.open_connections -= 1
            STATS.version += 1


def write_stats(path, args):
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(STATS.as_dict(args), f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


async def main(args):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Side(Connection(loop, args), True),
        args.listen_host, args.listen_port, backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"wan_proxy: listening on {args.listen_host}:{port}, forwarding to {args.target} "
          f"with {args.delay_ms} ms each way", flush=True)

    stop = asyncio.Event()
    written = [-1]

    def dump():
        try:
            write_stats(args.stats, args)
        except OSError as e:
            print(f"wan_proxy: cannot write {args.stats}: {e}", file=sys.stderr)
        written[0] = STATS.version

    def on_usr1():
        STATS.signals += 1
        STATS.version += 1
        dump()

    loop.add_signal_handler(signal.SIGUSR1, on_usr1)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    dump()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        if STATS.version != written[0]:
            dump()
    server.close()
    dump()


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="TCP proxy adding a fixed one-way delay and counting HTTP requests.")
    p.add_argument("--target", required=True, help="HOST:PORT to forward to")
    p.add_argument("--delay-ms", type=float, default=10.0,
                   help="one-way delay added in each direction (default 10)")
    p.add_argument("--connect-delay-ms", type=float, default=None,
                   help="cost of opening a connection before the client's data can leave "
                        "(default: 2 x --delay-ms, one round trip)")
    p.add_argument("--listen-host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--listen-port", type=int, default=0,
                   help="port to listen on (default 0: a free one, printed and written "
                        "to --port-file)")
    p.add_argument("--port-file", help="write the port listened on to this file")
    p.add_argument("--stats", help="write the counters as JSON to this file")
    p.add_argument("--max-buffer-mib", type=float, default=16.0,
                   help="per connection and direction, stop reading from the sender once "
                        "this much data waits (default 16)")
    p.add_argument("--no-server-quickack", dest="server_quickack", action="store_false",
                   help="leave the kernel's delayed ACKs on the connections to the server "
                        "(see SERVER-SIDE ACKS above)")
    p.add_argument("--no-count", dest="count", action="store_false",
                   help="do not parse HTTP, only proxy")
    args = p.parse_args(argv)
    host, sep, port = args.target.rpartition(":")
    if not sep or not host or not port.isdigit():
        p.error("--target must be HOST:PORT")
    args.target_host, args.target_port = host.strip("[]"), int(port)
    if not 0 < args.target_port < 65536:
        p.error("--target's port must be from 1 to 65535")
    if not 0 <= args.listen_port < 65536:
        p.error("--listen-port must be from 0 to 65535")
    # Every number is bounded: a NaN or negative delay breaks the event loop's timers, and
    # a buffer limit of 0 or less stops reading from a sender for good (a hang).
    for name, value, low, high in (
        ("--delay-ms", args.delay_ms, 0, 10000),
        ("--connect-delay-ms", args.connect_delay_ms, 0, 10000),
        ("--max-buffer-mib", args.max_buffer_mib, 1 / 16, 4096),
    ):
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            p.error(f"{name} must be a number from {low:g} to {high:g}, not {value:g}")
    return args


if __name__ == "__main__":
    a = parse_args(sys.argv[1:])
    try:
        asyncio.run(main(a))
    except KeyboardInterrupt:
        pass
