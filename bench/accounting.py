"""Where the CPU of a benchmark run went: per process, per Postgres backend, and on the whole machine.

Throughput on a shared VM means little without it: the figures say which process paid for a
judgment, and how much of the machine something else was using meanwhile. Read from /proc (Linux;
elsewhere every figure reads 0) and from Postgres's own statistics for this run's database.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _proc_entries() -> list[Path]:
    """/proc's entries; none where there is no /proc (macOS): CPU figures then read 0."""
    try:
        return list(Path("/proc").iterdir())
    except OSError:
        return []


def _clock_ticks(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """Direct child pids (prefork pool processes), from /proc."""
    out = []
    for entry in _proc_entries():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def with_children(pids: Sequence[int]) -> list[int]:
    """`pids` followed by their direct children (a prefork worker and its pool processes)."""
    return [*pids, *(c for pid in pids for c in children_of(pid))]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return _clock_ticks(int(fields[11]) + int(fields[12]))


def _pids_by_cmdline(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Processes whose command line (argv, split) satisfies `match`, from /proc."""
    out = []
    for entry in _proc_entries():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0] and match(cmd):
                out.append(int(entry.name))
    return out


def _port(url: str) -> bytes:
    return url.rsplit(":", 1)[1].split("/")[0].encode()


def redis_pids(url: str) -> list[int]:
    """The redis-server process serving `url` (found by its port on the command line)."""
    port = _port(url)
    return _pids_by_cmdline(lambda cmd: b"redis-server" in cmd[0] and port in b" ".join(cmd))


def s3_server_pids(url: str) -> list[int]:
    """The SeaweedFS process (`weed server ... -s3.port=P`) serving the S3 endpoint `url`, and its
    children: found by the gateway port on its command line (`ops.stack.seaweed_s3` yields only the URL)."""
    flag = b"-s3.port=" + _port(url)
    found = _pids_by_cmdline(lambda cmd: Path(cmd[0].decode(errors="replace")).name == "weed" and flag in cmd)
    return with_children(found)


def cpu_calibration() -> float:
    """Seconds of a fixed pure-Python + sha256 workload: how fast this machine's CPU is right now.

    Shared VMs vary (the same run has been seen 40% slower); compare figures only at similar values.
    """
    started = time.process_time()
    total = 0
    for i in range(2_000_000):
        total += i * i
    hashlib.sha256(b"x" * 30_000_000).digest()
    return time.process_time() - started


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy so far (/proc/stat: everything but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:  # no /proc: the other-load figure reads 0
        return 0.0
    return _clock_ticks(sum(fields[:8]) - fields[3] - fields[4])


def postmaster_reaped_seconds() -> float:
    """CPU of exited Postgres backends, as the postmaster's reaped-children time (cutime + cstime).

    Backends that connected and left during a run (pool overflow connections) are counted here;
    exited backends of other users of the server too.
    """
    for entry in _proc_entries():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parent = Path(f"/proc/{fields[1]}/comm").read_text().strip()
        except OSError:
            continue
        if parent != "postgres":
            return _clock_ticks(int(fields[13]) + int(fields[14]))
    return 0.0


def postgres_sessions() -> int:
    """Connections ever opened to this run's database (pg_stat_database.sessions, Postgres >= 14)."""
    import sqlalchemy as sa

    from tasks.runtime import get_db

    query = sa.text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
    try:
        with get_db().connect() as conn:
            return int(conn.execute(query).scalar() or 0)
    except sa.exc.ProgrammingError:  # Postgres before 14 has no sessions column
        return 0


def postgres_backends() -> dict[int, float]:
    """CPU seconds so far of the Postgres backends connected to this run's database, by pid.

    The server is shared with whatever else runs on the machine; only our database's backends count.
    """
    import sqlalchemy as sa

    from tasks.runtime import get_db

    with get_db().connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return {int(pid): cpu_seconds(int(pid)) for pid in pids}


def postgres_cpu_since(before: Mapping[int, float]) -> float:
    """CPU seconds our connected Postgres backends used since `before` (a `postgres_backends()`)."""
    return sum(v - before.get(pid, 0.0) for pid, v in postgres_backends().items())


@dataclass(frozen=True)
class Usage:
    """CPU used so far by named groups of processes, our Postgres backends (connected and exited),
    connections opened to our database, and the whole machine; two readings give a run's share."""

    groups: dict[str, float]
    backends: dict[int, float]
    reaped_s: float
    sessions: int
    machine_busy_s: float

    @classmethod
    def read(cls, groups: Mapping[str, Sequence[int]]) -> Usage:
        return cls(
            groups={k: sum(cpu_seconds(p) for p in v) for k, v in groups.items()},
            backends=postgres_backends(),
            reaped_s=postmaster_reaped_seconds(),
            sessions=postgres_sessions(),
            machine_busy_s=machine_busy_seconds(),
        )

    def cpu_since(self, before: Usage) -> dict[str, float]:
        """CPU seconds per group since `before`, plus "postgres" (our backends, live and reaped)."""
        cpu = {k: v - before.groups[k] for k, v in self.groups.items()}
        cpu["postgres"] = sum(v - before.backends.get(pid, 0.0) for pid, v in self.backends.items())
        cpu["postgres"] += self.reaped_s - before.reaped_s
        return cpu
