"""A user-space WAN emulator for the benchmarks: the test suite's :class:`~tests.security.tools.Relay`,
with each direction of each TCP connection held for a one-way delay (order kept), an optional rate
cap, and a count of the round trips each connection spends.

Why user space: ``tc netem`` is the usual tool, but it needs the ``sch_netem`` kernel module (absent
on the machines this project is developed on: :func:`netem_available` says so in the results) and it
would delay *every* loopback packet of the machine, the other test runs included. This relay delays
only the connections made to it.

How it is wired (:func:`front_servers` in ``bench/wan.py``): the servers stay where they are
(``127.0.0.1``); the relay listens on ``127.0.0.2`` and forwards to ``127.0.0.1``. SSH gets one
route. FTPS gets the control port plus *every* port of the server's fixed passive range on the same
port numbers (``Relay.add_route`` with target port 0), because the passive port is announced inside
TLS where no proxy can rewrite it: a client that opens its data connection to the control
connection's peer address and the announced port (ours, curl with EPSV, ftplib, lftp with
``ftp:ignore-pasv-address``) reaches the relay. The bench checks that the data bytes did pass
through it. The bench's certificate names ``127.0.0.2`` too, so verification stays on.

The model, per direction of each connection (``d`` = the one-way delay):

* a chunk read at time *t* is written to the other side at ``t + d`` (after the rate cap's
  serialisation, when one is set), never before an earlier chunk of the same direction: order kept;
  an EOF travels the same way (a half-close arrives ``d`` late);
* the TCP handshake's round trip, which a local ``connect()`` does not pay, is added: nothing the
  client sends is delivered before ``open + 3d`` (a real client's first byte leaves after the SYN-ACK,
  at ``2d``, and arrives at ``3d``), and the relay connects to the server only at ``open + 3d``, when a
  real server's ``accept()`` returns (the client's ACK arrives), so what the server sends on accept
  arrives at ``open + 4d`` or later;
* rate cap (bits/s): one link per direction shared by all connections (FIFO serialisation), as a
  bottleneck link is;
* window (bytes): at most this many bytes of one direction of one connection are "in flight"
  (read and not yet acknowledged: the acknowledgement is back ``2d`` after the read), like a TCP
  receive window. Default: the kernel's ``tcp_rmem`` maximum, the most a Linux receiver autotunes
  to. TCP slow start and loss are *not* emulated.

Round trips, counted per connection at the relay (where both directions are seen in order):

* ``turns``: a client->server burst followed by a server->client burst (a direction switch; a bulk
  transfer with acknowledgements switches often, so this over-counts pipelined traffic);
* ``waits``: client->server bursts that start after the client stayed silent for at least 3/4 of a
  round trip while the server sent something: a round trip the client spent waiting for an answer.
  The first burst counts from ``open + 2d`` (when a real ``connect()`` returns), so the TCP handshake
  is not counted twice: each connection is one more round trip (``conns``).

Everything is bounded: every wait has a timeout and every loop ends when the relay closes or the
connection dies; only loopback addresses are used.
"""

from __future__ import annotations

import collections
import contextlib
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.security.tools import Relay, RelayConn  # noqa: E402

#: Where the relay listens (the servers listen on 127.0.0.1).
FRONT_HOST = "127.0.0.2"
#: A client that stayed silent this share of a round trip, while the server sent something, waited.
WAIT_SHARE = 0.75
#: Longest single sleep of any loop (s): how late a close is noticed.
POLL = 0.05


def kernel_tcp_rmem_max() -> int:
    """The most a Linux TCP receiver autotunes its buffer to (``net.ipv4.tcp_rmem``), default 6 MiB."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 6 << 20


def netem_available() -> tuple[bool, str]:
    """Whether ``tc netem`` could be used here, and why not (the module must exist; nothing is changed)."""
    if shutil.which("tc") is None:
        return False, "no tc binary"
    if Path("/sys/module/sch_netem").exists():
        return True, "sch_netem loaded"
    release = Path("/proc/sys/kernel/osrelease")
    with contextlib.suppress(OSError):
        rel = release.read_text().strip()
        for base in (Path("/lib/modules") / rel, Path("/usr/lib/modules") / rel):
            if any(base.rglob("sch_netem.ko*")) if base.is_dir() else False:
                return True, f"sch_netem module in {base}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        p = subprocess.run(["tc", "qdisc", "add", "netem", "help"], capture_output=True, text=True, timeout=5)
        if "Usage" in p.stderr and "delay" in p.stderr:
            return False, "tc knows netem but the kernel has no sch_netem module"
    return False, "the kernel has no sch_netem module"


@dataclass
class ConnStats:
    """What one relayed connection spent."""

    kind: str
    opened: float
    bytes: dict[str, int] = field(default_factory=lambda: {"c2s": 0, "s2c": 0})
    turns: int = 0
    waits: int = 0
    last_dir: str | None = None
    last_c2s: float | None = None
    s2c_since_c2s: bool = False


#: queued after the data when the sender reset its connection: the receiver is reset after the data, in order
_RESET = bytes(bytearray(b"reset"))  # compared by identity: no chunk read is this object


class _Lane:
    """One direction of one connection: chunks waiting for their delivery time, and the window."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        #: (due, chunk); None: EOF (a half-close), _RESET: a reset
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        #: the receiver is gone: read nothing more in this direction
        self.dead = False
        self.last_due = 0.0
        self.inflight: collections.deque[tuple[float, int]] = collections.deque()  # (release time, bytes)
        self.inflight_bytes = 0


class DelayRelay(Relay):
    """A :class:`~tests.security.tools.Relay` that delays each direction by *delay_s* (see the module docstring).

    :param delay_s: one-way delay in seconds (the round-trip time is twice this).
    :param rate_bps: optional rate cap per direction in bits/s, shared by all connections.
    :param window: bytes in flight per direction of a connection (default: the kernel's ``tcp_rmem`` maximum).
    :param record: keep every byte (tests only; the benchmark counts).
    """

    bufsize = 65536

    def __init__(
        self, delay_s: float, *, rate_bps: float | None = None, window: int | None = None, record: bool = False
    ) -> None:
        super().__init__(record=record)
        self.delay_s = 0.0
        self.rate_bps: float | None = None
        self.set_link(delay_s, rate_bps)
        self.window = window or kernel_tcp_rmem_max()
        self._link_free = {"c2s": 0.0, "s2c": 0.0}
        self._stats: dict[int, ConnStats] = {}
        #: when each client connection was accepted here (the client's SYN), by client socket
        self._opened: dict[socket.socket, float] = {}
        #: when a client's first bytes arrived, if before the relay connected to the server
        self._first_ready: dict[socket.socket, float] = {}

    def set_link(self, delay_s: float, rate_bps: float | None = None) -> None:
        """Change the delay and the rate cap (applies to what is read from now on)."""
        if delay_s < 0 or (rate_bps is not None and rate_bps <= 0):
            raise ValueError("delay must be >= 0 and the rate > 0")
        with self.lock:
            self.delay_s = delay_s
            self.rate_bps = rate_bps

    # ----------------------------------------------------------------- counters

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Totals per connection kind since the start: conns, turns, waits, c2s and s2c bytes."""
        out: dict[str, dict[str, int]] = {}
        with self.lock:
            for st in self._stats.values():
                k = out.setdefault(st.kind, {"conns": 0, "turns": 0, "waits": 0, "c2s": 0, "s2c": 0})
                k["conns"] += 1
                k["turns"] += st.turns
                k["waits"] += st.waits
                k["c2s"] += st.bytes["c2s"]
                k["s2c"] += st.bytes["s2c"]
        return out

    @staticmethod
    def delta(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        """``after - before`` per kind and counter (kinds with no new connection and no bytes left out)."""
        out: dict[str, dict[str, int]] = {}
        for kind, a in after.items():
            b = before.get(kind, {})
            d = {key: val - b.get(key, 0) for key, val in a.items()}
            if any(d.values()):
                out[kind] = d
        return out

    def _connect_pair(self, client: socket.socket, kind: str, target: tuple[str, int]) -> None:
        """Connect to the server only when a real server would accept: ``3d`` after the client's SYN.

        A server learns of a connection when the client's ACK arrives (SYN at ``d``, SYN-ACK back at
        ``2d``, ACK at ``3d``); what it sends on accept (a greeting, an FTP ``150`` after accepting a
        passive data connection) therefore reaches the client ``4d`` after it began to connect.
        Connecting upstream at once would let the server act ``3d`` early.
        """
        opened = time.monotonic()
        with self.lock:
            self._opened[client] = opened
            delay = self.delay_s
        t = threading.Thread(
            target=self._connect_late, args=(client, kind, target, opened + 3 * delay), name="delay-accept", daemon=True
        )
        self._threads.append(t)
        t.start()

    def _connect_late(self, client: socket.socket, kind: str, target: tuple[str, int], when: float) -> None:
        # Note when the client's first bytes arrive meanwhile (a ClientHello or an SSH banner sent at once):
        # they are due d after that (and not before open + 3d), not d after the pump starts reading.
        ready_at: float | None = None
        while (left := when - time.monotonic()) > 0:
            if self._stopping.is_set():
                client.close()
                return
            if ready_at is None:
                with contextlib.suppress(OSError, ValueError):
                    if select.select([client], [], [], min(left, 0.05))[0]:
                        ready_at = time.monotonic()
            elif self._stopping.wait(left):
                client.close()
                return
        if ready_at is not None:
            with self.lock:
                self._first_ready[client] = ready_at
        super()._connect_pair(client, kind, target)

    def _conn_stats(self, conn: RelayConn) -> ConnStats:
        with self.lock:
            opened = self._opened.get(conn.client, time.monotonic())
            return self._stats.setdefault(conn.index, ConnStats(kind=conn.kind, opened=opened))

    def _count(self, st: ConnStats, d: str, n: int, now: float) -> None:
        with self.lock:
            st.bytes[d] += n
            if d == "c2s":
                rtt = 2 * self.delay_s
                since = st.last_c2s if st.last_c2s is not None else st.opened + rtt
                if st.s2c_since_c2s and rtt > 0 and now - since >= WAIT_SHARE * rtt:
                    st.waits += 1
                st.last_c2s = now
                st.s2c_since_c2s = False
            else:
                if st.last_dir == "c2s":
                    st.turns += 1
                st.s2c_since_c2s = True
            st.last_dir = d

    # ----------------------------------------------------------------- the delayed pump

    def _pump(self, conn: RelayConn, src: socket.socket, dst: socket.socket, d: str) -> None:
        """Read *src* (this thread) and hand the chunks to a writer thread that delivers them to *dst* late."""
        lane = _Lane()
        st = self._conn_stats(conn)
        writer = threading.Thread(target=self._deliver, args=(conn, dst, d, lane), name=f"delay-{d}", daemon=True)
        self._threads.append(writer)
        writer.start()
        buf = bytearray(self.bufsize)
        view = memoryview(buf)
        # the handshake's round trip a local connect() does not pay (see the module docstring)
        not_before = st.opened + (3 if d == "c2s" else 2) * self.delay_s
        while not conn.closed and not self._stopping.is_set() and not lane.dead:
            room = self._wait_window(conn, lane)
            if room <= 0:
                break
            try:
                n = src.recv_into(view[: min(room, self.bufsize)])
            except OSError:
                # a reset: it travels behind what the sender sent before it, as on a network
                with lane.cond:
                    lane.queue.append((max(time.monotonic() + self.delay_s, lane.last_due), _RESET))
                    lane.cond.notify_all()
                break
            now = time.monotonic()
            with self.lock:
                if d == "c2s" and conn.client in self._first_ready:
                    # read late (the relay connected to the server only now), sent by the client earlier
                    now = self._first_ready.pop(conn.client)
                delay, rate = self.delay_s, self.rate_bps
                sent = now
                if rate and n:
                    start = max(now, self._link_free[d])
                    sent = self._link_free[d] = start + n * 8 / rate
            due = max(sent + delay, not_before, lane.last_due)
            lane.last_due = due
            if n:
                self._count(st, d, n, now)
                with self.lock:
                    conn.received[d] += n
                    if conn.data is not None:
                        conn.data[d] += view[:n]
            with lane.cond:
                lane.queue.append((due, bytes(view[:n]) if n else None))
                if n:
                    lane.inflight.append((due + delay, n))
                    lane.inflight_bytes += n
                lane.cond.notify_all()
            if not n:
                break  # EOF queued: the writer passes it on

    def _wait_window(self, conn: RelayConn, lane: _Lane) -> int:
        """Bytes that may be read now (> 0), after waiting (bounded) for acknowledgements; 0 when closing."""
        while not conn.closed and not self._stopping.is_set():
            now = time.monotonic()
            with lane.cond:
                while lane.inflight and lane.inflight[0][0] <= now:
                    lane.inflight_bytes -= lane.inflight.popleft()[1]
                room = self.window - lane.inflight_bytes
                if room > 0:
                    return room
                wait = lane.inflight[0][0] - now
            conn.killed.wait(min(max(wait, 0.0), POLL))
        return 0

    def _deliver(self, conn: RelayConn, dst: socket.socket, d: str, lane: _Lane) -> None:
        try:
            while not conn.closed and not self._stopping.is_set():
                with lane.cond:
                    if not lane.queue:
                        lane.cond.wait(POLL)
                        continue
                    due, chunk = lane.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    conn.killed.wait(min(wait, POLL))
                    continue
                with lane.cond:
                    lane.queue.popleft()
                if chunk is None:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if chunk is _RESET:
                    with contextlib.suppress(OSError):
                        dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.kill()
                    return
                try:
                    dst.sendall(chunk)
                except OSError:
                    # the receiver is gone (it closed or reset): this direction ends; the other one still
                    # delivers what it holds (a client that closes early must not lose its last bytes)
                    lane.dead = True
                    return
        finally:
            with self.lock:
                conn.pumps_left -= 1
                done = conn.pumps_left == 0
            if done:
                conn.kill()

    def arm(self, fault: Any) -> None:
        if fault is not None:
            raise NotImplementedError("DelayRelay injects no faults (use Relay)")
