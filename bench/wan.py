"""The "wan" group: the same servers and clients as the loopback groups, through the delay proxy
(``bench/delay_proxy.py``) at each round-trip time of ``--wan-rtts``, with the round trips each run spent.

For every run the proxy's counters (connections, in-stream waits, turns, bytes; per connection kind:
``ssh``, ``control``, ``data``) are recorded, and for vsftpd the FTP commands the server logged
(``log_ftp_protocol=YES``: every command of every client, so ours and lftp/curl are counted alike).
A vsftpd run whose data bytes did not all pass through the proxy is an error (a client that followed
the ``227`` reply's address would bypass the delay).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cases import HOST, OURS_SFTP, STOCK_SFTP, Cases, ours_case
from delay_proxy import FRONT_HOST, DelayRelay, kernel_tcp_rmem_max, netem_available
from harness import Case, Group, Runner, Target
from servers import Servers, ssh_host_block

OURS_WAN = {"sshd": "bench_ours_sftp_wan", "vsftpd": "bench_ours_vsftpd_wan"}
#: The same SFTP connection with its ``max_connections`` extra (the operator's cap) at 8.
OURS_SFTP_WAN8 = "bench_ours_sftp_wan8"
STOCK_SFTP_WAN = "bench_stock_sftp_wan"
SSH_ALIAS = "bench-sshd-wan"

_LINE = re.compile(r'\[pid (\d+)\][^"]*FTP command: Client "[^"]*", "([A-Za-z]+) ?([^"]*)"')


@dataclasses.dataclass
class Front:
    """The delay proxy in front of the servers: where clients connect instead."""

    relay: DelayRelay
    ssh: tuple[str, int] | None = None
    ftps: tuple[str, int] | None = None
    pasv: range = range(0)
    vsftpd_log: Path | None = None


def _vsftpd_pasv(conf: Path) -> range:
    text = conf.read_text()
    lo = re.search(r"^pasv_min_port=(\d+)$", text, re.M)
    hi = re.search(r"^pasv_max_port=(\d+)$", text, re.M)
    if not lo or not hi:
        raise RuntimeError(f"no fixed passive port range in {conf}")
    return range(int(lo.group(1)), int(hi.group(1)) + 1)


@contextlib.contextmanager
def front_servers(servers: Servers, rate_bps: float | None, window: int | None) -> Iterator[Front]:
    """Put a :class:`DelayRelay` (delay 0 until a group sets it) on ``127.0.0.2`` in front of sshd and vsftpd."""
    with DelayRelay(0.0, rate_bps=rate_bps, window=window) as relay:
        front = Front(relay)
        if servers.sshd is not None and servers.ssh_config is not None:
            front.ssh = (FRONT_HOST, relay.add_route("ssh", (HOST, servers.sshd.port), listen=(FRONT_HOST, 0)))
            known = servers.work / "known_hosts_wan"
            known.write_text(f"[{FRONT_HOST}]:{front.ssh[1]} {servers.sshd.host_key_line}\n")
            with open(servers.ssh_config, "a") as f:
                f.write(ssh_host_block(SSH_ALIAS, *front.ssh, servers.login, servers.client_key, known))
        if servers.vsftpd is not None:
            front.ftps = (FRONT_HOST, relay.add_route("control", (HOST, servers.vsftpd.port), listen=(FRONT_HOST, 0)))
            front.pasv = _vsftpd_pasv(servers.work / "vsftpd" / "vsftpd.conf")
            for port in front.pasv:  # same port numbers: the EPSV/PASV reply is inside TLS
                relay.add_route("data", (HOST, 0), listen=(FRONT_HOST, port))
            front.vsftpd_log = servers.work / "vsftpd" / "vsftpd.log"
        yield front


def wan_env(servers: Servers, front: Front) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` for ours and the stock hooks through the proxy."""
    env: dict[str, str] = {}
    if servers.sshd is not None and front.ssh:
        host, port = front.ssh
        ours = servers.sshd.conn_dict(fields={"password": None, "host": host, "port": port},
                                      key_file=str(servers.client_key))  # fmt: skip
        env["AIRFLOW_CONN_" + OURS_WAN["sshd"].upper()] = json.dumps(ours)
        ours8 = servers.sshd.conn_dict(fields={"password": None, "host": host, "port": port},
                                       key_file=str(servers.client_key), max_connections=8)  # fmt: skip
        env["AIRFLOW_CONN_" + OURS_SFTP_WAN8.upper()] = json.dumps(ours8)
        stock = json.loads(os.environ["AIRFLOW_CONN_" + STOCK_SFTP.upper()])  # cases.connection_env's
        stock.update(host=host, port=port)
        env["AIRFLOW_CONN_" + STOCK_SFTP_WAN.upper()] = json.dumps(stock)
    if servers.vsftpd is not None and front.ftps:
        host, port = front.ftps
        ours_ftps = servers.vsftpd.conn_json(fields={"host": host, "port": port})
        env["AIRFLOW_CONN_" + OURS_WAN["vsftpd"].upper()] = ours_ftps
    return env


def _ftp_commands(log: Path | None, offset: int) -> tuple[dict[str, int], list[str]]:
    """The FTP commands vsftpd logged after *offset*: counts per verb, and the sequence (arguments shortened,
    passwords dropped) with the session's pid (``[pid N] VERB arg``)."""
    if log is None or not log.exists():
        return {}, []
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    seq: list[str] = []
    for line in text.splitlines():
        m = _LINE.search(line)
        if m:
            verb, arg = m.group(2).upper(), m.group(3) or ""
            arg = "" if verb == "PASS" else arg.rsplit("/", 1)[-1][:40]
            seq.append(f"[{m.group(1)}] {verb} {arg}".rstrip())
    return dict(collections.Counter(x.split()[1] for x in seq)), seq


def _size(src: Path) -> int:
    return src.stat().st_size if src.is_file() else sum(p.stat().st_size for p in src.iterdir())


def _recorded(case: Case, front: Front) -> Case:
    """*case* with the proxy's counters (and vsftpd's command log) recorded for each run."""
    fn = case.fn

    def wrapped(t: Target, src: Path) -> dict[str, Any]:
        before = front.relay.snapshot()
        offset = front.vsftpd_log.stat().st_size if front.vsftpd_log and front.vsftpd_log.exists() else 0
        info = fn(t, src) or {}
        rt = DelayRelay.delta(front.relay.snapshot(), before)
        info["rt"] = rt
        if case.server == "vsftpd":
            through = rt.get("data", {}).get("s2c" if case.download_to is not None else "c2s", 0)
            size = _size(src)
            if through < size:
                raise RuntimeError(f"only {through} of {size} data bytes passed through the delay proxy")
            info["ftp_commands"], info["ftp_sequence"] = _ftp_commands(front.vsftpd_log, offset)
        return info

    return dataclasses.replace(case, fn=wrapped)


@dataclasses.dataclass
class WanDownloads:
    """What the download parts of the "wan" group need: the case factories, the staged copies of
    ``wan_big``/``wan_small`` (``{server: {"big"|"small"|"warm": path on its disk}}``), and where runs write."""

    dc: Any  # downloads.DownloadCases
    staged: dict[str, dict[str, Path]]
    download_to: Path


def _download_cases(a: argparse.Namespace, tag: str, dl: WanDownloads, front: Front,
                    protocols: set[str]) -> tuple[list[Case], list[Case], list[Case]]:  # fmt: skip
    """The download cases at one round-trip time: (one big file, many small files, the stock SFTPOperator)."""
    dc, staged = dl.dc, dl.staged

    def case(name: str, fn: Callable[..., dict[str, Any]], server: str, key: str, ref: str, tool: str,
             inproc: bool = False) -> Case:  # fmt: skip
        source = staged[server][key]
        files = [source] if source.is_file() else sorted(source.iterdir())
        inproc = inproc or tool == "stock"  # the stock hooks run in this process, as ours does
        return Case(name, fn, server, source, sum(f.stat().st_size for f in files), len(files), ref=ref,
                    inproc=inproc, warm_source=staged[server]["warm"] if inproc else None, tags={"tool": tool},
                    download_to=dl.download_to)  # fmt: skip

    Peer = tuple[str, Callable[..., dict[str, Any]], str]  # (name, case function, tool)
    peers: dict[str, tuple[list[Peer], list[Peer]]] = {}  # server: (peers for the big file, for the small files)
    if front.ssh and "sftp" in protocols and "sshd" in staged:
        sftp_b = dc.sftp_b_get(host=SSH_ALIAS)
        peers["sshd"] = ([("OpenSSH sftp -b get", sftp_b, "openssh"),
                          ("stock SFTPHook.retrieve_file", dc.stock_sftp_retrieve_file(STOCK_SFTP_WAN), "stock")],
                         [("OpenSSH sftp -b, get per file, one session", sftp_b, "openssh")])  # fmt: skip
    if front.ftps and "ftps" in protocols and "vsftpd" in staged:
        via = front.ftps
        peers["vsftpd"] = ([("lftp get", dc.lftp_get("vsftpd", via=via), "lftp"),
                            ("curl --ssl-reqd", dc.curl_get("vsftpd", via=via), "curl")],
                           [("lftp mirror --parallel=4", dc.lftp_mirror("vsftpd", 4, via=via), "lftp")])  # fmt: skip
    large: list[Case] = []
    smalls: list[Case] = []
    for server, (big_peers, small_peers) in peers.items():
        label = f"{'SFTP' if server == 'sshd' else 'FTPS'} {tag} download"
        ours = dc.ours(server, conn_id=OURS_WAN[server])
        for key, chosen, out, ours_name in (("big", big_peers, large, "ours"),
                                            ("small", small_peers, smalls, "ours (default connections)")):  # fmt: skip
            ref = f"{label}: {chosen[0][0]}"
            out.append(case(f"{label}: {ours_name}", ours, server, key, ref, "ours", inproc=True))
            out += [case(f"{label}: {name}", fn, server, key, ref, tool) for name, fn, tool in chosen]
    stock_op: list[Case] = []
    if "sshd" in peers:
        stock_op.append(case(f"SFTP {tag} download: stock SFTPOperator(operation=\"get\"), list of files",
                             dc.stock_sftp_operator_get(STOCK_SFTP_WAN), "sshd", "op",
                             f"SFTP {tag} download: OpenSSH sftp -b, get per file, one session", "stock"))  # fmt: skip
    return large, smalls, stock_op


def build_wan_groups(a: argparse.Namespace, cases: Cases, src: dict[str, Path], front: Front,
                     dl: WanDownloads | None = None) -> list[Group]:  # fmt: skip
    big, small, op_src = src["wan_big"], src["wan_small"], src["wan_op"]
    nb, ns = big.stat().st_size, a.wan_small_count
    sb = ns * a.small_kib * 1024
    op_count = a.wan_stock_operator_count
    groups: list[Group] = []
    protocols = {x.strip() for x in str(a.wan_protocols).split(",")}
    parts = {x.strip() for x in str(getattr(a, "wan_parts", "large,small,operator")).split(",")}
    tools = {x.strip() for x in str(getattr(a, "wan_tools", "ours,openssh,stock,lftp,curl")).split(",")}
    rate = f", rate cap {a.wan_rate_mbit:g} Mbit/s" if a.wan_rate_mbit else ""
    for rtt_ms in [float(x) for x in str(a.wan_rtts).split(",")]:
        tag = f"{rtt_ms:g} ms RTT"
        key = f"wan{rtt_ms:g}"

        def setup(rtt_ms: float = rtt_ms) -> None:
            front.relay.set_link(rtt_ms / 2000, a.wan_rate_mbit * 1e6 if a.wan_rate_mbit else None)

        large: list[Case] = []
        smalls: list[Case] = []
        if front.ssh and "sftp" in protocols:
            ref = f"SFTP {tag}: OpenSSH sftp -b"
            large += [
                ours_case(cases, f"SFTP {tag}: ours", "sshd", big, nb, 1, ref, src["warm_file"],
                          conn_id=OURS_WAN["sshd"], tool="ours"),
                # Segments (issue #15 item 4): "ours" splits over its default 4 connections; 8 connections,
                # and one (no split: the single stream the split is measured against).
                *(Case(f"SFTP {tag}: ours, max_connections={n}", cases.ours_file("sshd", conn, max_connections=n),
                       "sshd", big, nb, ref=ref, inproc=True, warm_source=src["warm_file"], tags={"tool": "ours"})
                  for n, conn in ((8, OURS_SFTP_WAN8), (1, OURS_WAN["sshd"]))),
                Case(ref, cases.sftp_b(host=SSH_ALIAS), "sshd", big, nb, ref=ref, tags={"tool": "openssh"}),
                Case(f"SFTP {tag}: scp", cases.scp(host=SSH_ALIAS), "sshd", big, nb, ref=ref,
                     tags={"tool": "openssh"}),
                Case(f"SFTP {tag}: stock SFTPHook.store_file", cases.stock_sftp_store_file(STOCK_SFTP_WAN), "sshd",
                     big, nb, ref=ref, inproc=True, warm_source=src["warm_file"], tags={"tool": "stock"}),
            ]  # fmt: skip
            sref = f"SFTP {tag}: OpenSSH sftp -b, one session"
            smalls += [
                ours_case(cases, f"SFTP {tag}: ours (default connections)", "sshd", small, sb, ns, sref,
                          src["warm_dir"], conn_id=OURS_WAN["sshd"], tool="ours"),
                Case(sref, cases.sftp_b(host=SSH_ALIAS), "sshd", small, sb, ns, ref=sref, tags={"tool": "openssh"}),
            ]  # fmt: skip
        if front.ftps and "ftps" in protocols:
            ref = f"FTPS {tag}: lftp put"
            large += [
                ours_case(cases, f"FTPS {tag}: ours", "vsftpd", big, nb, 1, ref, src["warm_file"],
                          conn_id=OURS_WAN["vsftpd"], tool="ours"),
                Case(ref, cases.lftp_put("vsftpd", via=front.ftps), "vsftpd", big, nb, ref=ref, tags={"tool": "lftp"}),
                Case(f"FTPS {tag}: curl --ssl-reqd -T", cases.curl("vsftpd", via=front.ftps), "vsftpd", big, nb,
                     ref=ref, tags={"tool": "curl"}),
            ]  # fmt: skip
            sref = f"FTPS {tag}: lftp mirror -R --parallel=4"
            smalls += [
                ours_case(cases, f"FTPS {tag}: ours (default connections)", "vsftpd", small, sb, ns, sref,
                          src["warm_dir"], conn_id=OURS_WAN["vsftpd"], tool="ours"),
                Case(sref, cases.lftp_mirror("vsftpd", 4, via=front.ftps), "vsftpd", small, sb, ns, ref=sref,
                     tags={"tool": "lftp"}),
            ]  # fmt: skip
        dl_large: list[Case] = []
        dl_small: list[Case] = []
        dl_op: list[Case] = []
        if dl is not None and parts & {"dl_large", "dl_small"}:
            dl_large, dl_small, dl_op = _download_cases(a, tag, dl, front, protocols)
        # --wan-parts / --wan-tools: a subset (e.g. only the large file, only ours and OpenSSH's tools).
        for part, chosen, what, unit in (
            ("large", large, f"one {a.wan_size_mib} MiB file", "MB/s"),
            ("small", smalls, f"{ns} files of {a.small_kib} KiB", "files/s"),
            ("dl_large", dl_large, f"one {a.wan_size_mib} MiB file downloaded", "MB/s"),
            ("dl_small", dl_small, f"{ns} files of {a.small_kib} KiB downloaded", "files/s"),
            ("dl_stock_operator", dl_op, f"stock SFTPOperator(operation=\"get\") with a list of {op_count} files "
             "(one SSH connection per file: files/s does not depend on the count)", "files/s"),
        ):
            chosen = [c for c in chosen if c.tags.get("tool") in tools]
            if part.replace("_stock_operator", "_small") in parts and chosen:
                groups.append(Group(f"{key}_{part}", f"{tag}{rate}: {what}", [_recorded(c, front) for c in chosen],
                                    a.wan_reps, unit, setup=setup))  # fmt: skip
        if front.ssh and "sftp" in protocols and "operator" in parts and "stock" in tools:
            op = Case(f"SFTP {tag}: stock SFTPOperator, list of files", cases.stock_sftp_operator(STOCK_SFTP_WAN),
                      "sshd", op_src, op_count * a.small_kib * 1024, op_count,
                      ref=f"SFTP {tag}: OpenSSH sftp -b, one session", inproc=True, warm_source=src["warm_dir"],
                      tags={"tool": "stock"})  # fmt: skip
            groups.append(Group(f"{key}_stock_operator",
                                f"{tag}{rate}: stock SFTPOperator with a list of {op_count} files "
                                "(one SSH connection per file: files/s does not depend on the count)",
                                [_recorded(op, front)], a.wan_reps, "files/s", setup=setup))  # fmt: skip
    return groups


def round_trips(rows: list[dict[str, Any]], case: str, group: str) -> dict[str, Any]:
    """Medians over a case's good runs: per connection kind, and the totals per session and per file."""
    good = [r for r in rows if r["group"] == group and r["case"] == case and r["ok"] and "rt" in r]
    if not good:
        return {}
    kinds = sorted({k for r in good for k in r["rt"]})
    out: dict[str, Any] = {"kinds": {}}
    for k in kinds:
        out["kinds"][k] = {
            c: statistics.median(r["rt"].get(k, {}).get(c, 0) for r in good)
            for c in ("conns", "waits", "turns", "c2s", "s2c")
        }

    def total(r: dict[str, Any], c: str) -> int:
        return sum(v.get(c, 0) for v in r["rt"].values())

    files = good[0]["files"]
    out["conns"] = statistics.median(total(r, "conns") for r in good)
    out["waits"] = statistics.median(total(r, "waits") for r in good)
    out["turns"] = statistics.median(total(r, "turns") for r in good)
    out["round_trips"] = statistics.median(total(r, "conns") + total(r, "waits") for r in good)
    out["per_file"] = out["round_trips"] / files
    out["waits_per_file"] = out["waits"] / files
    cmds = [r["ftp_commands"] for r in good if r.get("ftp_commands")]
    if cmds:
        out["ftp_commands"] = cmds[-1]
        out["ftp_commands_per_file"] = {k: v / files for k, v in sorted(cmds[-1].items(), key=lambda kv: -kv[1])}
        out["ftp_sequence"] = next(r["ftp_sequence"] for r in reversed(good) if r.get("ftp_commands"))
    return out


def run_wan(a: argparse.Namespace, servers: Servers, cases: Cases, src: dict[str, Path], runner: Runner,
            results: dict[str, Any], log: Callable[[str], None],
            after_group: Callable[[list[dict[str, Any]], str], None]) -> None:  # fmt: skip
    """Run every wan group through one proxy; put the summaries (with round trips) into *results*."""
    ok, why = netem_available()
    window = a.wan_window_kib * 1024 if a.wan_window_kib else None
    rate = a.wan_rate_mbit * 1e6 if a.wan_rate_mbit else None
    results["wan"] = {
        "netem": f"{'available' if ok else 'not available'}: {why}; the user-space delay proxy was used "
        "(netem would delay every loopback packet of the machine)",
        "window_bytes": window or kernel_tcp_rmem_max(),
        "rate_mbit": a.wan_rate_mbit or None,
        "rtts_ms": a.wan_rtts,
    }
    dl: WanDownloads | None = None
    if {"dl_large", "dl_small"} & {x.strip() for x in str(a.wan_parts).split(",")}:
        from downloads import DownloadCases, stage_files

        files = {"big": src["wan_big"], "small": src["wan_small"], "op": src["wan_op"], "warm": src["warm_file"]}
        staged = stage_files(servers, files, ("sshd", "vsftpd"), "wan-dl-src")
        if staged:
            dl = WanDownloads(DownloadCases(cases, {k: v[0] for k, v in staged.items()}),
                              {k: v[1] for k, v in staged.items()}, cases.scratch / "wan-downloads")  # fmt: skip
    with front_servers(servers, rate, window) as front:
        os.environ.update(wan_env(servers, front))
        for group in build_wan_groups(a, cases, src, front, dl):
            g0 = time.perf_counter()
            runner.run_group(group)
            summary = runner.summary(group)
            for row in summary:
                row["rt"] = round_trips(runner.rows, row["case"], group.key)
            after_group(summary, group.unit)
            results["groups"][group.key] = {
                "title": group.title,
                "unit": group.unit,
                "reps": group.reps,
                "seconds": time.perf_counter() - g0,
                "summary": summary,
                "wan": True,
            }
            for row in summary:
                rt = row.get("rt") or {}
                if rt:
                    log(f"  {row['case']:<60} round trips {rt['round_trips']:.0f} ({rt['per_file']:.2f}/file): "
                        f"conns {rt['conns']:.0f}, waits {rt['waits']:.0f}, turns {rt['turns']:.0f}"
                        + (f"; FTP {rt['ftp_commands']}" if rt.get("ftp_commands") else ""))  # fmt: skip
            log(f"  ({group.key}: {time.perf_counter() - g0:.0f}s)")
    if servers.sshd is not None and "sftp" in str(a.wan_protocols):
        results["wan"]["sftp_requests"] = details = [
            sftp_requests(servers, cases, src[k], OURS_SFTP) for k in ("wan_op", "wan_big")
        ]
        for detail in details:
            for label in ("ours", "OpenSSH sftp -b"):
                what = f"{detail['files']} file(s) / {detail['bytes']} B"
                log(f"  SFTP requests, {label}, {what}: {detail[label]['counts']}")


# --------------------------------------------------------------------------- SFTP requests

#: SFTP packet types (draft-ietf-secsh-filexfer-02, what OpenSSH speaks)
_FXP = {3: "OPEN", 4: "CLOSE", 5: "READ", 6: "WRITE", 7: "LSTAT", 8: "FSTAT", 9: "SETSTAT", 10: "FSETSTAT",
        11: "OPENDIR", 12: "READDIR", 13: "REMOVE", 14: "MKDIR", 15: "RMDIR", 16: "REALPATH", 17: "STAT",
        18: "RENAME", 19: "READLINK", 20: "SYMLINK", 200: "EXTENDED"}  # fmt: skip
_SFTP_SENT = re.compile(r"debug3: Sent (?:\w+ )?message (?:fd \d+ T:(\d+)|SSH2_FXP_(\w+)|([\w@.-]+))")


def _ours_sftp_requests(cases: Cases, conn_id: str, target: Target, src: Path) -> list[str]:
    """The SFTP requests our client sends for one upload of *src* (asyncssh's request method, wrapped)."""
    from asyncssh import sftp as asftp

    sent: list[str] = []
    original = asftp.SFTPClientHandler._send_request
    upload = cases.ours_file("sshd", conn_id) if src.is_file() else cases.ours_dir("sshd", conn_id=conn_id)

    def spy(self: Any, pkttype: int | bytes, args: Any, waiter: Any) -> None:
        name = pkttype.decode() if isinstance(pkttype, bytes) else _FXP.get(pkttype, str(pkttype))
        sent.append(f"[{id(self) % 10000:04d}] {name}")
        original(self, pkttype, args, waiter)

    asftp.SFTPClientHandler._send_request = spy  # type: ignore[method-assign]
    try:
        upload(target, src)
    finally:
        asftp.SFTPClientHandler._send_request = original  # type: ignore[method-assign]
    return sent


def _openssh_sftp_requests(cases: Cases, target: Target, src: Path) -> list[str]:
    """The SFTP requests ``sftp -b`` sends for the same upload (its ``-vvv`` debug lines)."""
    assert cases.s.ssh_config is not None
    if src.is_file():
        batch = cases._batch([f'put "{src}" "{target.remote_file}"'])
    else:
        batch = cases._batch([f'put "{src / n}" "{target.remote_dir}/{n}"' for n in sorted(os.listdir(src))])
    try:
        p = subprocess.run(["sftp", "-vvv", "-F", str(cases.s.ssh_config), "-b", str(batch), "bench-sshd"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
    finally:
        batch.unlink()
    if p.returncode:
        raise RuntimeError(f"sftp -b exited {p.returncode}: {p.stderr[-300:]}")
    out = []
    for m in _SFTP_SENT.finditer(p.stderr):
        out.append(_FXP.get(int(m.group(1)), m.group(1)) if m.group(1) else (m.group(2) or m.group(3)))
    return out


def sftp_requests(servers: Servers, cases: Cases, src: Path, conn_id: str) -> dict[str, Any]:
    """SFTP requests per upload of *src* (a file, or a directory: ours with its default connections) by
    ours and by ``sftp -b``."""
    out: dict[str, Any] = {"files": len(list(src.iterdir())) if src.is_dir() else 1, "bytes": _size(src)}
    for label, fn in (("ours", lambda t: _ours_sftp_requests(cases, conn_id, t, src)),
                      ("OpenSSH sftp -b", lambda t: _openssh_sftp_requests(cases, t, src))):  # fmt: skip
        view = servers.get("sshd").for_test(f"rq-{label.split()[0]}")
        try:
            seq = fn(Target(view.writable_dir, view.local_root))
        finally:
            shutil.rmtree(view.local_root, ignore_errors=True)
        names = [x.split()[-1] for x in seq]
        out[label] = {"sequence": seq, "counts": dict(collections.Counter(names)), "total": len(seq)}
    return out


# --------------------------------------------------------------------------- report


def render(results: dict[str, Any]) -> list[str]:
    """Markdown tables of the wan groups (speed, then round trips)."""
    from report import _esc, _table

    g = {k: v for k, v in results["groups"].items() if v.get("wan")}
    if not g:
        return []
    w = results.get("wan", {})
    L = ["### Over real distances (delay proxy)\n"]
    L.append(
        f"User-space delay proxy on {FRONT_HOST} (bench/delay_proxy.py); netem: {w.get('netem', '?')}. "
        f"Window per direction {w.get('window_bytes', 0) // 1024} KiB; rate cap "
        f"{str(w.get('rate_mbit')) + ' Mbit/s' if w.get('rate_mbit') else 'none'}; no slow start, no loss. "
        "Round trips = TCP connections (one handshake each) + in-stream waits (client silent >= 3/4 RTT while the "
        "server answered); turns = client->server bursts followed by server->client bursts.\n"
    )
    for grp in g.values():
        L.append(f"#### {grp['title']}\n")
        L.append(f"{grp['reps']} repetitions, {grp['seconds']:.0f} s.\n")
        L += _table(grp)
        L.append("")
        L.append("| case | connections | waits | round trips | per file | turns | FTP commands (vsftpd log) |")
        L.append("|---|--:|--:|--:|--:|--:|---|")
        for r in grp["summary"]:
            rt = r.get("rt") or {}
            if not rt:
                L.append(f"| {r['case']} | - | - | - | - | - | |")
                continue
            cmds = ", ".join(f"{k} {v}" for k, v in sorted(rt.get("ftp_commands", {}).items(), key=lambda kv: -kv[1]))
            kinds = "; ".join(f"{k}: {v['conns']:.0f} conns, {v['waits']:.0f} waits" for k, v in rt["kinds"].items())
            L.append(
                f"| {r['case']} | {rt['conns']:.0f} | {rt['waits']:.0f} | {rt['round_trips']:.0f} "
                f"| {rt['per_file']:.2f} | {rt['turns']:.0f} | {_esc(cmds)} ({_esc(kinds)}) |"
            )
        L.append("")
    if w.get("sftp_requests"):
        L.append("SFTP requests sent (no delay; ours: asyncssh's request method wrapped, `sftp -b`: its `-vvv` "
                 "lines):\n")  # fmt: skip
        L.append("| upload | client | requests | per file | by type |\n|---|---|--:|--:|---|")
        for rq in w["sftp_requests"]:
            what = f"{rq['files']} files" if rq["files"] > 1 else f"one {rq['bytes'] / 2**20:g} MiB file"
            for label in ("ours", "OpenSSH sftp -b"):
                c = rq[label]
                by = ", ".join(f"{k} {v}" for k, v in sorted(c["counts"].items(), key=lambda kv: -kv[1]))
                L.append(f"| {what} | {label} | {c['total']} | {c['total'] / rq['files']:.1f} | {by} |")
        L.append("")
    return L
