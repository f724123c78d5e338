"""The runner on real child processes: what `time` would report, and clean process control."""

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil

from trainbench.measure import outcome, runner
from trainbench.measure.protocol import parse

from conftest import eventually

TORCH = ("torch",)  # the framework modules whose absence makes a row `unavailable`

PY = sys.executable


def child(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def test_success_measures_wall_user_sys_and_streams_lines():
    seen = []
    r = runner.run(
        child("""
        import json, time
        t = time.process_time()
        while time.process_time() - t < 0.3: pass
        print(json.dumps({"event": "summary", "parameters": 1}), flush=True)
    """),
        on_line=lambda stream, line: seen.append((stream, line)),
    )
    assert r.returncode == 0 and r.signal is None
    assert r.user_s + r.sys_s >= 0.25 and r.wall_s >= (r.user_s + r.sys_s) * 0.9
    assert seen == [("stdout", '{"event": "summary", "parameters": 1}')]
    assert outcome.classify(r, parse(r.stdout_lines), TORCH) == ("ok", None)


def test_crash_becomes_crashed_with_the_traceback():
    r = runner.run(
        child("""
        def train():
            raise RuntimeError("boom in layer 3")
        train()
    """)
    )
    status, error = outcome.classify(r, parse(r.stdout_lines), TORCH)
    assert (r.returncode, status) == (1, "crashed")
    assert error.startswith("exit status 1\nTraceback") and "RuntimeError: boom in layer 3" in error


def test_nonzero_exit_and_missing_summary():
    r = runner.run(child("import sys; print('bye'); sys.exit(7)"))
    assert r.returncode == 7 and outcome.classify(r, parse(r.stdout_lines), TORCH)[0] == "crashed"
    r = runner.run(child("print('no summary')"))
    status, error = outcome.classify(r, parse(r.stdout_lines), TORCH)
    assert status == "crashed" and "without a summary" in error


def test_timeout_kills_the_whole_process_group():
    r = runner.run(
        child("""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(p.pid, flush=True)
        time.sleep(60)
    """),
        timeout_s=1.0,
        kill_grace_s=1.0,
    )
    grandchild = int(r.stdout_lines[0])
    assert r.timed_out and r.wall_s < 10
    assert outcome.classify(r, parse(r.stdout_lines), TORCH)[0] == "timeout"
    eventually("the grandchild gone", lambda: gone(grandchild))


def test_orphaned_grandchild_is_reaped_and_its_cpu_time_counted():
    r = runner.run(
        child("""
        import os, time
        if os.fork() == 0:
            t = time.process_time()
            while time.process_time() - t < 0.5: pass
            os._exit(0)
        print("parent leaves at once", flush=True)
    """)
    )
    assert r.returncode == 0 and r.orphans_reaped == 1
    assert r.user_s + r.sys_s >= 0.45


def test_kill_from_another_thread_stops_the_tree_like_on_kill():
    launch = runner.Launch(child("import time; time.sleep(60)"), kill_grace_s=1.0)
    launch.start()
    threading.Timer(0.5, launch.kill, args=("killed by Airflow",)).start()
    r = launch.wait()
    assert r.killed_by == "killed by Airflow" and r.signal == 15 and r.wall_s < 5
    assert outcome.classify(r, parse([]), TORCH)[0] == "killed"


def test_child_runs_in_its_own_process_group():
    r = runner.run(child("import os; print(os.getpgid(0), os.getpid())"))
    pgid, pid = map(int, r.stdout_lines[0].split())
    assert pgid == pid != os.getpgid(0)


def test_error_texts_map_to_statuses():
    cases = {
        "RuntimeError: CUDA error: no kernel image is available for execution on the device": "unsupported",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB": "oom",
        "ModuleNotFoundError: No module named 'mxnet'": "unavailable",
        "SystemExit: batch size 128 must split evenly over 3 devices": "unsupported",
        "  exitcode  : -9 (pid: 4242)": "killed",  # a worker's SIGKILL, and no sign of the OOM killer
    }
    for text, status in cases.items():
        r = runner.run(child(f"import sys; sys.stderr.write({text!r} + '\\n'); sys.exit(1)"))
        got, error = outcome.classify(r, parse(r.stdout_lines), ("mxnet",))
        assert got == status and text in error


def test_sigkill_without_a_timeout_or_oom_evidence_is_killed():
    r = runner.run(child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    status, error = outcome.classify(r, parse([]), TORCH)
    assert status == "killed" and "SIGKILL" in error


def test_kill_reaches_workers_in_sessions_of_their_own_like_torchrun_starts_them():
    r = runner.run(
        child("""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print(p.pid, flush=True)
        time.sleep(60)
    """),
        timeout_s=1.0,
        kill_grace_s=1.0,
        orphan_grace_s=1.0,
    )
    worker = int(r.stdout_lines[0])
    assert r.timed_out
    eventually("the worker gone", lambda: gone(worker))


def test_every_run_gets_a_private_empty_temporary_folder_removed_after_it():
    code = """
        import os, tempfile
        d = tempfile.gettempdir()
        print(d, os.environ["TMP"] == os.environ["TEMP"] == d, sorted(os.listdir(d)), flush=True)
        open(os.path.join(d, "torchinductor_cache"), "w").write("compiled")
    """
    folders = []
    for _ in range(2):
        r = runner.run(child(code), env={"PATH": os.environ["PATH"], "TMPDIR": "/tmp"})
        folder, same, listing = r.stdout_lines[0].split(" ", 2)
        assert r.returncode == 0 and same == "True" and listing == "[]"
        assert os.path.basename(folder).startswith("trainbench-run-") and not os.path.exists(folder)
        folders.append(folder)
    assert folders[0] != folders[1]


def test_scratch_folders_of_dead_harnesses_are_swept_once_a_day_old(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    old = time.time() - runner.STALE_SCRATCH_S - 60
    folders = {}
    for name, pid, mtime in (("dead_old", gone, old), ("dead_young", gone, None), ("alive_old", os.getpid(), old)):
        path = tmp_path / f"{runner.SCRATCH_PREFIX}{pid}-{name}"
        (path / "torchinductor_root").mkdir(parents=True)
        if mtime:
            os.utime(path, (mtime, mtime))
        folders[name] = path
    (tmp_path / "unrelated").mkdir()
    os.utime(tmp_path / "unrelated", (old, old))
    r = runner.run(child("import tempfile; print(tempfile.gettempdir())"))
    assert r.stdout_lines[0].startswith(str(tmp_path / f"{runner.SCRATCH_PREFIX}{os.getpid()}-"))
    assert not folders["dead_old"].exists()
    assert folders["dead_young"].exists() and folders["alive_old"].exists() and (tmp_path / "unrelated").exists()


def test_a_failing_line_callback_never_stalls_the_child():
    def explode(stream, line):
        raise RuntimeError("log sink down")

    launch = runner.Launch(
        child("print('x' * 1000 + '\\n') ; import sys; [print(i) for i in range(20000)]"), on_line=explode, timeout_s=30
    )
    launch.start()
    r = launch.wait()
    assert r.returncode == 0 and not r.timed_out and len(launch.line_errors) > 20000 and r.stdout_lines[-1] == "19999"
    assert launch.line_errors[0] == "RuntimeError: log sink down"


def test_a_flood_of_event_lines_keeps_the_harness_small():
    """200,000 epoch lines of 4 KB (800 MB): the first MAX_EVENT_LINES are kept, the rest only counted, so what
    the harness holds is bounded (it held every line before: 800 MB of text)."""
    flood = textwrap.dedent(
        """
        import json, sys
        line = json.dumps({"event": "epoch", "epoch": 1, "seconds": 1.0, "images_per_s": 5.0, "loss": 1.0,
                           "pad": "x" * 4000})
        for _ in range(200_000):
            sys.stdout.write(line + "\\n")
        """
    )
    harness = textwrap.dedent(
        f"""
        import sys
        from trainbench.measure import runner
        r = runner.run([sys.executable, "-c", {flood!r}], timeout_s=300)
        print(len(r.stdout_lines), r.stdout_dropped, sum(len(line) for line in r.stdout_lines) // 2**20)
        """
    )
    out = subprocess.run([PY, "-c", harness], capture_output=True, text=True, check=True, timeout=300).stdout
    kept, dropped, held_mib = map(int, out.split())
    assert (kept, dropped) == (runner.MAX_EVENT_LINES, 200_000 - runner.MAX_EVENT_LINES)
    assert held_mib <= 45, held_mib


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
