"""Imported logs: hand-made benchmark logs (the original `time` + nvidia-smi log) as result rows.

Reports set these numbers beside today's; they are stored under a run of their own
(source `imported_log`) and an environment key no measured row can have, so they never mix
into the history that verdicts are judged on.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

from trainbench.measure.memory import DESCRIPTIONS, IMPORTED_LOG
from trainbench.result import Result
from trainbench.store import results
from trainbench.store.results import ResultStore

SCRIPTS = {"cifar10_conv.py": "neon", "cifar10_mxnet.py": "mxnet"}
RUN_PREFIX = "imported:"
HASH_CHARS = 12

DEVICE = re.compile(r"\* Device (\d+): (.+?) \(idle memory \d+(?:\.\d+)?MiB at test\)")
HOST = re.compile(r"\* Tested on `([^`]+)`")
TIME = re.compile(r"(real|user|sys)\s+(?:(\d+)m)?(\d+(?:\.\d+)?)s")
TERM = r"\(\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*\)\s*MiB"
PEAK = re.compile(rf"peak memory\s+({TERM}(?:\s*\+\s*{TERM})*)")


class _Log:
    """The log's device list and host, which its run blocks refer to."""

    def __init__(self, source: str):
        self.source = source
        self.devices: dict[int, str] = {}
        self.host: str | None = None

    def error(self, lineno: int, message: str, line: str) -> ValueError:
        return ValueError(f"{self.source}:{lineno}: {message}: {line.strip()!r}")

    def from_title(self, title: str | None, lineno: int, line: str) -> list[int]:
        """Title names matched to the device list in order: "Titan X + Titan X" is 0,1."""
        if not title:
            raise self.error(
                lineno, "the command names no GPUs and the block has no '### ' title to take them from", line
            )
        chosen: list[int] = []
        for name in title.split(" + "):
            free = [i for i, n in sorted(self.devices.items()) if n == name.strip() and i not in chosen]
            if not free:
                raise self.error(
                    lineno,
                    f"title device {name.strip()!r} is not in the '## Devices' list (or appears there fewer times)",
                    title,
                )
            chosen.append(free[0])
        return chosen

    def device_indices(self, framework: str, opts: dict, title: str | None, lineno: int, line: str) -> list[int]:
        """The GPUs the command names (neon -i, mxnet --gpus; neon -b gpu defaults to 0), else the title's."""
        if framework == "neon" and "-i" in opts:
            text = opts["-i"]
        elif framework == "neon" and opts.get("-b") == "gpu":
            text = "0"
        elif framework == "mxnet" and "--gpus" in opts:
            text = opts["--gpus"]
        else:
            return self.from_title(title, lineno, line)
        try:
            indices = [int(t) for t in text.split(",")]
        except ValueError:
            raise self.error(lineno, f"GPU list {text!r} is not comma-separated indices", line) from None
        unknown = [i for i in indices if i not in self.devices]
        if unknown:
            raise self.error(lineno, f"GPU {unknown[0]} is not in the '## Devices' list", line)
        return indices

    def run(self, block: list[tuple[int, str]], title: str | None, heading: str | None) -> dict:
        lineno, line = block[0]
        command = re.sub(r"^(\$\s*)?(time\s+)?", "", line.strip())
        try:
            tokens = shlex.split(command)
        except ValueError as exc:
            raise self.error(lineno, str(exc), line) from None
        script = next((Path(t).name for t in tokens if t.endswith(".py")), None)
        if script not in SCRIPTS:
            raise self.error(lineno, f"expected a command running one of {sorted(SCRIPTS)}", line)
        framework = SCRIPTS[script]
        opts = {t: v for t, v in zip(tokens, tokens[1:]) if t.startswith("-")}
        indices = self.device_indices(framework, opts, title, lineno, line)
        names = [self.devices[i] for i in indices]
        if title and [n.strip() for n in title.split(" + ")] != names:
            raise self.error(lineno, f"the command's GPUs {indices} ({' + '.join(names)}) differ from the title", title)
        flags = ("-e", "-z") if framework == "neon" else ("--num-epoch", "--batch-size")
        workload = {k: opts.get(f) for k, f in zip(("epochs", "batch_size"), flags)}
        if not all(v is None or v.isdigit() for v in workload.values()):
            raise self.error(lineno, f"{' and '.join(flags)} must be whole numbers", line)
        # "historical" is frozen into the keys of logs imported before the rename; changing it would duplicate them
        environment = {
            "source": "historical",
            "hostname": self.host,
            "gpu_names": names,
            "framework": framework,
            "data_kind": "real",
            **{k: v and int(v) for k, v in workload.items()},
        }
        row: dict[str, Any] = {
            "framework": framework,
            "device_set": ",".join(map(str, indices)),
            "device_names": " + ".join(names),
            "command": command,
            "environment": environment,
            "env_key": hashlib.sha256(json.dumps(environment, sort_keys=True).encode()).hexdigest()[:16],
            "summary": {"source": self.source, "line": lineno, "heading": heading, "title": title},
            "wall_s": None,
            "user_s": None,
            "sys_s": None,
            "peak_mem_mib": None,
            "peak_mem_method": None,
            "devices": [],
            "error": None,
        }
        rest = block[1:]
        if rest and rest[0][1].strip() == "(crashed)":
            return {**row, "status": "crashed", "error": "\n".join(text for _, text in rest[1:]).strip() or None}
        return {**row, "status": "ok", **self.measurements(rest, indices, lineno)}

    def measurements(self, lines: list[tuple[int, str]], indices: list[int], start: int) -> dict:
        """`time`'s real/user/sys and the per-device "(peak - idle)MiB" terms of a run that finished."""
        found: dict = {}
        for lineno, line in lines:
            if m := TIME.fullmatch(line.strip()):
                found[f"{'wall' if m[1] == 'real' else m[1]}_s"] = seconds = int(m[2] or 0) * 60 + float(m[3])
                if m[1] == "real" and seconds <= 0:
                    raise self.error(lineno, "a run that trained took more than 0 s of real time", line)
            elif m := PEAK.fullmatch(line.strip()):
                terms = [(float(p), float(i)) for p, i in re.findall(TERM, m[1])]
                if len(terms) != len(indices):
                    raise self.error(lineno, f"{len(terms)} memory figures for {len(indices)} GPUs", line)
                if below := [f"({p:g} - {i:g})MiB" for p, i in terms if p < i]:
                    raise self.error(lineno, f"a peak below its idle memory: {', '.join(below)}", line)
                found["devices"] = [
                    {
                        "device": f"log:{d}",
                        "name": self.devices[d],
                        "idle_mib": idle,
                        "peak_mib": peak,
                        "used_mib": peak - idle,
                        "method": IMPORTED_LOG,
                    }
                    for d, (peak, idle) in zip(indices, terms)
                ]
            elif line.strip():
                raise self.error(
                    lineno, "expected 'real|user|sys <N>m<S>s' or 'peak memory (peak - idle)MiB + ...'", line
                )
        missing = [k for k in ("wall_s", "user_s", "sys_s", "devices") if k not in found]
        if missing:
            raise ValueError(
                f"{self.source}:{start}: the run's block lacks "
                + ", ".join({"wall_s": "real", "user_s": "user", "sys_s": "sys"}.get(k, "peak memory") for k in missing)
                + " (and does not say '(crashed)')"
            )
        return {
            **found,
            "peak_mem_mib": sum(d["used_mib"] for d in found["devices"]),
            "peak_mem_method": DESCRIPTIONS[IMPORTED_LOG],
        }


def parse_log(text: str, source: str) -> list[Result]:
    """One result row per run block in the log, in the order they appear."""
    log = _Log(source)
    heading = title = None
    block: list[tuple[int, str]] | None = None
    found: list[dict] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if block is not None:
            if line.strip() == "```":
                if not block:
                    raise log.error(lineno, "empty block", line)
                found.append(log.run(block, title, heading))
                block = None
            else:
                block.append((lineno, line))
        elif line.strip() == "```":
            block, opened = [], lineno
        elif m := DEVICE.fullmatch(line.strip()):
            log.devices[int(m[1])] = m[2].strip()
        elif m := HOST.fullmatch(line.strip()):
            log.host = m[1]
        elif line.startswith("### "):
            title = line[4:].strip()
        elif line.startswith("## "):
            heading, title = line[3:].strip(), None
    if block is not None:
        raise ValueError(f"{source}:{opened}: the ``` block opened here is never closed")
    if not found:
        raise ValueError(
            f"{source}: no run blocks found: expected ``` blocks holding a `time python ...` command and its "
            "real/user/sys and peak memory lines (see include/reference/)"
        )
    run_id = run_id_of(source, text)
    seen: dict[tuple[str, str], int] = {}
    for row in found:
        ident = (row["framework"], row["device_set"])
        seen[ident] = row["repeat"] = seen.get(ident, 0) + 1
        case_key = f"{row['framework']}__{row['device_set'].replace(',', '-')}__r{row['repeat']}"
        row.update(run_id=run_id, case_key=case_key)
    return [Result.from_dict(row) for row in found]


def run_id_of(name: str, text: str) -> str:
    """ "imported:<file name>:<sha256 prefix of its content>": the same content is the same import, whatever its name's
    history; a different log saved under the same name is a different import."""
    return f"{RUN_PREFIX}{name[:160]}:{hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]}"


def import_log(store: ResultStore, path: str | Path) -> str:
    """Store a log's runs under run "imported:<file name>:<content hash>"; importing it again replaces, never
    duplicates.  An empty or unparsable log raises ValueError naming the file (and line)."""
    text = Path(path).read_text()
    rows = parse_log(text, Path(path).name)
    run_id = run_id_of(Path(path).name, text)
    store.save_run(run_id, {"source_file": str(path)}, source=results.IMPORTED_LOG)
    store.replace_rows(run_id, rows)
    return run_id
