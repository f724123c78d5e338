"""Run one trainer as a child process and measure it the way `time` does.

Wall time is `perf_counter` around launch and reap; user and sys come from `os.wait4`,
which includes every descendant the child waited for (torchrun's workers count, as under
`time`).  The child runs in its own process group, so a timeout or Airflow's `on_kill`
can stop the whole tree, and the harness is a child subreaper, so orphans are reaped by
it and their CPU time added.  Monitors (memory samplers) run beside the child.

Every child gets a private, empty temporary folder (`TMPDIR`, `TMP`, `TEMP`), removed when it is
reaped: compile caches that live there (torch.compile's Inductor and Triton caches) start cold in
every run, so repeats measure the same work and no run inherits another's state.  A folder whose
harness was killed before it could reap (SIGKILL) is removed by the next run once it is a day old.

Each captured line is capped (`LINE_HEAD` + `LINE_TAIL` characters, the middle replaced by a
note of its size), so a trainer printing a 10 MB line cannot flood the database or the logs.
The cgroup's `memory.events` `oom_kill` counter is read before and after the run: the kernel's
own word on whether its OOM killer struck (`ProcessResult.oom_kills`; None where unreadable).
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
TAIL_LINES = 400
MAX_EVENT_LINES = 10_000  # a trainer prints a few per epoch; more is a protocol error, never a bigger row
LINE_HEAD = LINE_TAIL = 4096  # characters kept of each captured line's start and end
CGROUP_ROOT = Path("/sys/fs/cgroup")
SCRATCH_PREFIX = "trainbench-run-"
STALE_SCRATCH_S = 86_400.0


def clip(text: str, head: int, tail: int) -> str:
    """`text` if it is short, else its first `head` and last `tail` characters with the size of the cut between."""
    if len(text) <= head + tail:
        return text
    return f"{text[:head]}[... {len(text) - head - tail} characters omitted ...]{text[len(text) - tail :]}"


def memory_events_path() -> Path | None:
    """The file holding this process's cgroup `oom_kill` counter (the trainer starts in the same cgroup), or None.

    cgroup v2: `memory.events`; v1 (hybrid hosts): the memory controller's `memory.oom_control`.
    """
    candidates = []
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                rel = path.lstrip("/")
                if controllers == "":
                    candidates += [CGROUP_ROOT / rel / "memory.events", CGROUP_ROOT / "unified" / rel / "memory.events"]
                elif "memory" in controllers.split(","):
                    candidates.append(CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    except (OSError, ValueError):
        return None
    return next((c for c in candidates if c.is_file()), None)


def oom_kill_count() -> int | None:
    """The cgroup's `oom_kill` counter: how many processes the kernel OOM killer took in it; None if unreadable."""
    path = memory_events_path()
    if path is None:
        return None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def scratch_folder() -> str:
    """A new private folder for one child, named after this harness process; first, remove the folders of
    harnesses that are gone, once a day old (younger ones may belong to a live harness in another PID
    namespace sharing this temporary folder)."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        pid = name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and not psutil.pid_exists(int(pid)):
            path = os.path.join(root, name)
            try:
                stale = time.time() - os.stat(path).st_mtime > STALE_SCRATCH_S
            except OSError:
                continue
            if stale:
                shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


class Monitor(Protocol):
    """Samples something about the child while it runs (device memory, host RSS, ...)."""

    def prepare(self) -> None: ...
    def abandon(self) -> None: ...  # undo `prepare` when the child could not be started
    def start(self, pid: int) -> None: ...
    def stop(self) -> dict: ...


@dataclass
class ProcessResult:
    argv: list[str]
    returncode: int | None
    wall_s: float
    user_s: float
    sys_s: float
    timed_out: bool = False
    killed_by: str | None = None
    orphans_reaped: int = 0
    oom_kills: int | None = None  # the cgroup's oom_kill counter's rise during the run; None if unreadable
    kernel_log_oom: bool | None = None  # the kernel log names the child as OOM-killed; None if not looked/readable
    stdout_lines: list[str] = field(default_factory=list)  # its event lines (up to MAX_EVENT_LINES), then a tail
    stdout_dropped: int = 0  # event lines beyond MAX_EVENT_LINES: counted, never kept
    stderr_tail: list[str] = field(default_factory=list)
    monitors: dict = field(default_factory=dict)
    launched_at: float | None = None  # time.time() just before the child was forked, for the phase timeline
    exited_at: float | None = None  # time.time() when the child was reaped

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _die_with_parent() -> None:
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Launch:
    """One child process tree: start it, wait for it, or kill it from another thread.

    `start()` must run on a thread that outlives the child: PR_SET_PDEATHSIG fires when
    the forking thread exits.  The tree is every descendant psutil can see plus every
    process reparented to us while the child ran, whatever its session or group (torchrun
    starts its workers in sessions of their own).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        timeout_s: float | None = None,
        on_line: Callable[[str, str], None] | None = None,
        monitors: Sequence[Monitor] = (),
        kill_grace_s: float = 5.0,
        orphan_grace_s: float = 10.0,
    ):
        self.argv = [str(a) for a in argv]
        self.env, self.cwd, self.timeout_s = env, cwd, timeout_s
        self.on_line = on_line or (lambda stream, line: None)
        self.monitors = list(monitors)
        self.kill_grace_s, self.orphan_grace_s = kill_grace_s, orphan_grace_s
        self.proc: subprocess.Popen | None = None
        self._exited = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._killed_by: str | None = None
        self._stdout = _Stdout()
        self._stderr: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.line_errors: list[str] = []

    def start(self) -> None:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self._me = psutil.Process()
        self._before = {p.pid for p in self._me.children()}
        prepared: list[Monitor] = []
        scratch = None
        try:
            for m in self.monitors:
                m.prepare()
                prepared.append(m)
            self._oom_before = oom_kill_count()
            self.scratch = scratch = scratch_folder()
            env = dict(os.environ if self.env is None else self.env)
            env.update(dict.fromkeys(("TMPDIR", "TMP", "TEMP"), scratch))
            self._launched_at = time.time()
            self._t0 = time.perf_counter()
            self.proc = self._popen(env)
        except BaseException:
            for m in prepared:
                m.abandon()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            raise
        self.pgid = self.proc.pid
        for m in self.monitors:
            m.start(self.proc.pid)
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, "stdout", self._stdout.keep), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, "stderr", self._stderr.append), daemon=True),
        ]
        for t in self._readers:
            t.start()
        if self.timeout_s:
            threading.Thread(target=self._watchdog, daemon=True).start()

    def _popen(self, env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv,
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            errors="replace",
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _read(self, pipe, stream: str, keep: Callable[[str], bool | None]) -> None:
        """Drain the pipe to the end whatever `on_line` does, so the child never blocks on a full pipe; a line
        `keep` refuses (an event line beyond the cap) is only counted."""
        for line in _capped_lines(pipe):
            if keep(line) is False:
                continue
            try:
                self.on_line(stream, line)
            except Exception as exc:  # a logging hiccup must not stall the trainer
                self.line_errors.append(f"{type(exc).__name__}: {exc}")

    def _watchdog(self) -> None:
        if not self._done.wait(self.timeout_s):
            self.kill(f"timeout after {self.timeout_s:g} s")

    def _orphans(self) -> list[psutil.Process]:
        """Processes reparented to us since launch: what the child left behind."""
        return [p for p in self._me.children() if p.pid not in self._before and p.pid != self.pgid]

    def _tree(self) -> list[psutil.Process]:
        try:
            tree = [psutil.Process(self.pgid), *psutil.Process(self.pgid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for orphan in self._orphans():
            try:
                tree += [orphan, *orphan.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return tree

    def _signal_tree(self, sig: int) -> bool:
        """Send `sig` to the group and every process of the tree; False when none was left."""
        found = False
        try:
            os.killpg(self.pgid, sig)
            found = True
        except ProcessLookupError:
            pass
        for p in self._tree():
            try:
                p.send_signal(sig)
                found = True
            except psutil.NoSuchProcess:
                pass
        return found

    def kill(self, reason: str) -> None:
        """SIGTERM the whole tree, SIGKILL it after a grace period; the reason sticks only if the child still ran."""
        if self.proc is None or self._done.is_set():
            return
        with self._lock:
            if not self._exited.is_set():
                self._killed_by = self._killed_by or reason
        for sig, wait in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, 0)):
            if not self._signal_tree(sig) or self._done.wait(wait):
                return

    def wait(self) -> ProcessResult:
        assert self.proc is not None, "start() first"
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self._t0
        exited_at = time.time()
        with self._lock:
            self._exited.set()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        user, sys_ = usage.ru_utime, usage.ru_stime
        orphans = self._reap_orphans()
        shutil.rmtree(self.scratch, ignore_errors=True)
        for pid_usage in orphans:
            user += pid_usage.ru_utime
            sys_ += pid_usage.ru_stime
        self._done.set()
        monitors = {}
        for m in self.monitors:
            monitors.update(m.stop())
        for t in self._readers:
            t.join(timeout=5)
        killed = self._killed_by
        oom_after = oom_kill_count()
        return ProcessResult(
            argv=self.argv,
            returncode=self.proc.returncode,
            wall_s=wall,
            user_s=user,
            sys_s=sys_,
            timed_out=bool(killed and killed.startswith("timeout")),
            killed_by=killed,
            orphans_reaped=len(orphans),
            oom_kills=None if self._oom_before is None or oom_after is None else oom_after - self._oom_before,
            kernel_log_oom=kernel_log_oom_kill(self.proc.pid) if self.proc.returncode == -signal.SIGKILL else None,
            launched_at=self._launched_at,
            exited_at=exited_at,
            stdout_lines=self._stdout.kept(),
            stdout_dropped=self._stdout.dropped,
            stderr_tail=list(self._stderr),
            monitors=monitors,
        )

    def _reap_orphans(self) -> list:
        """Wait for what the child left behind (reparented to us), killing it after a grace period."""
        deadline = time.monotonic() + self.orphan_grace_s
        usages = []
        while left := self._orphans():
            for p in left:
                try:
                    pid, _, usage = os.wait4(p.pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if pid:
                    usages.append(usage)
            if time.monotonic() > deadline:
                self._signal_tree(signal.SIGKILL)
            time.sleep(0.005)
        return usages


KERNEL_OOM_KILL = re.compile(r"(?:Killed process|oom-kill:.*?,pid=)\s*(\d+)")


def kernel_log_oom_kill(pid: int, max_records: int = 100_000) -> bool | None:
    """Whether the kernel log says its OOM killer took `pid`; None when the log is not readable (the usual case)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        for _ in range(max_records):
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while reading; go on
                continue
            if (m := KERNEL_OOM_KILL.search(record)) and int(m[1]) == pid:
                return True
        return False
    finally:
        os.close(fd)


class _Stdout:
    """What is kept of a trainer's stdout: its event lines (JSON objects) up to MAX_EVENT_LINES and a tail of
    TAIL_LINES of the rest, in the order printed, so memory stays bounded however much a trainer prints."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []
        self.tail: collections.deque[tuple[int, str]] = collections.deque(maxlen=TAIL_LINES)
        self.dropped = self.count = 0

    def keep(self, line: str) -> bool:
        self.count += 1
        if not line.lstrip().startswith("{"):
            self.tail.append((self.count, line))
        elif len(self.events) < MAX_EVENT_LINES:
            self.events.append((self.count, line))
        else:
            self.dropped += 1
            return False
        return True

    def kept(self) -> list[str]:
        return [line for _, line in sorted([*self.events, *self.tail])]


def _capped_lines(pipe, head: int = LINE_HEAD, tail: int = LINE_TAIL):
    """The pipe's lines without their newline, each clipped to `head` + `tail` characters while it is read."""
    buf, dropped = "", 0
    while chunk := pipe.readline(head + tail):
        buf += chunk
        if buf.endswith("\n"):
            yield _clipped(buf[:-1], dropped, head, tail)
            buf, dropped = "", 0
        elif len(buf) > head + 2 * tail:
            dropped += len(buf) - head - tail
            buf = buf[:head] + buf[len(buf) - tail :]
    if buf:
        yield _clipped(buf, dropped, head, tail)


def _clipped(line: str, dropped: int, head: int, tail: int) -> str:
    if not dropped:
        return clip(line, head, tail)
    omitted = dropped + len(line) - head - tail
    return f"{line[:head]}[... {omitted} characters omitted ...]{line[len(line) - tail :]}"


def run(argv: Sequence[str], **kwargs) -> ProcessResult:
    launch = Launch(argv, **kwargs)
    launch.start()
    return launch.wait()
