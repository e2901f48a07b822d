"""One lock file per stage key (``<out>/stages/<key>.lock``): two runs or sweep workers sharing a results
folder never train the same stage at the same time; the second one waits and then reuses the artifact.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+), holding
pid, host, a process-namespace id, the run name, the time and a nonce. While it is held, a heartbeat
thread refreshes its mtime. A lock is stale, and is broken, when

- its holder ran on this host (same boot and pid namespace) and that pid is gone (killed, crashed), or
- its mtime is older than ``$LTBENCH_LOCK_STALE_S`` seconds (default 600): no heartbeat, e.g. a dead
  process on another host sharing the folder.

Breaking goes through a short-lived ``<key>.lock.break`` file (also O_EXCL), and only removes the lock
if it still holds the bytes that were judged stale, so two waiters can never remove a fresh lock.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from functools import lru_cache
from pathlib import Path

STALE_ENV = "LTBENCH_LOCK_STALE_S"
DEFAULT_STALE_S = 600.0
BREAKER_STALE_S = 30.0  # a breaker is held for milliseconds; one older than this was left by a dead process


def stale_after() -> float:
    try:
        return max(float(os.environ.get(STALE_ENV, DEFAULT_STALE_S)), 1.0)
    except ValueError:
        return DEFAULT_STALE_S


@lru_cache(None)
def process_namespace() -> str:
    """Boot id + pid namespace: a pid means the same process only when both match."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return ":".join(parts)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


class StageLock:
    """An exclusive lock file; ``try_acquire`` never blocks, ``release`` is idempotent."""

    def __init__(self, path: Path, owner: str = "", stale_s: float | None = None):
        self.path = Path(path)
        self.owner = owner
        self.stale_s = stale_after() if stale_s is None else stale_s
        self._content: bytes | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def try_acquire(self) -> bool:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "namespace": process_namespace(),
                "run": self.owner, "time": time.time(), "nonce": uuid.uuid4().hex}
        content = json.dumps(info).encode()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._content = content
        self._stop.clear()
        interval = min(max(self.stale_s / 10, 0.5), 60.0)
        self._heartbeat = threading.Thread(target=self._beat, args=(interval,), daemon=True,
                                           name=f"ltbench-lock-{self.path.name}")
        self._heartbeat.start()
        return True

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if self.path.read_bytes() == self._content:  # never refresh a lock that is not ours
                    os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._content is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except OSError:
            pass
        self._content = None

    # the other side: who holds it, and is it stale? ------------------------------------------------
    def read(self) -> tuple[bytes, dict, float] | None:
        """(raw bytes, parsed info, age in seconds) of the current lock file, or None when there is none."""
        try:
            raw = self.path.read_bytes()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError:
            return b"", {}, 0.0
        try:
            info = json.loads(raw.decode())
        except ValueError:  # being written right now, or left empty by a process killed while creating it
            info = {}
        return raw, info, age

    def stale_reason(self, info: dict, age: float) -> str | None:
        pid = info.get("pid")
        same_machine = (info.get("host") == socket.gethostname()
                        and info.get("namespace", "") == process_namespace())
        if isinstance(pid, int) and same_machine and pid != os.getpid() and not pid_alive(pid):
            return f"its process {pid} on this host is gone"
        if age > self.stale_s:
            return f"no heartbeat for {age:.0f} s (> {self.stale_s:g} s, ${STALE_ENV})"
        return None

    def break_stale(self, judged: bytes) -> bool:
        """Remove the lock if it still is the one judged stale (``judged`` = its bytes)."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > BREAKER_STALE_S:
                    breaker.unlink(missing_ok=True)
            except OSError:
                pass
            return False
        try:
            try:
                current = self.path.read_bytes()
            except FileNotFoundError:
                return True
            if current == judged:
                self.path.unlink(missing_ok=True)
                return True
            return False
        finally:
            os.close(fd)
            breaker.unlink(missing_ok=True)


def describe_holder(info: dict) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(info["time"])) if isinstance(info.get("time"), float) else "?"
    return f"run '{info.get('run', '?')}' (pid {info.get('pid', '?')} on {info.get('host', '?')}, since {when})"


class HoldsLock:
    """Something that may hold a lock (``self.lock``) until it leaves a ``with`` block: a claimed stage, a
    run folder. Releasing twice is harmless."""

    lock: StageLock | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
