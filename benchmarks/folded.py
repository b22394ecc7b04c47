"""Summarise a py-spy `--format raw` (collapsed stacks) profile: where the samples go.

    py-spy record -p PID -d 10 -r 200 -f raw -o prof.txt
    python -m benchmarks.folded prof.txt [--top 25] [--thread-filter MainThread] [--match SUBSTRING]

Prints, per function (`name (file:line)` trimmed to the file's base name), the share of samples in which
it is on the stack (inclusive) and at the top (self). Idle threads (waiting in `select`, `wait`,
`sleep`, `accept`) are left out unless `--idle`.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_IDLE = re.compile(r"(^|\.)(select|poll|epoll_wait|wait|_wait_for_tstate_lock|sleep|accept|get|readinto)$")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file").rsplit("/", 2)
    where = "/".join(file[-2:])
    return f"{match.group('name')} ({where})"


def summarise(path: Path, *, top: int, idle: bool, thread: str | None, match: str | None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if thread and not frames[0].startswith(thread) and thread not in frames[0]:
            continue
        leaf = frames[-1].split(" (")[0]
        if not idle and _IDLE.search(leaf) and len(frames) > 1:
            continue
        if match and not any(match in f for f in frames):
            continue
        count = int(count_text)
        total += count
        seen: set[str] = set()
        for frame in frames[1:] if frames[0].startswith(("thread", "process")) else frames:
            name = _short(frame)
            if name not in seen:
                inclusive[name] += count
                seen.add(name)
        own[_short(frames[-1])] += count
    lines = [f"{total} samples (busy)"]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)] if total else []
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)] if total else []
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.folded", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--idle", action="store_true", help="keep samples of idle threads")
    parser.add_argument("--thread-filter", default=None, help="only stacks whose thread label contains this")
    parser.add_argument("--match", default=None, help="only stacks with a frame containing this text")
    args = parser.parse_args(argv)
    print(summarise(args.path, top=args.top, idle=args.idle, thread=args.thread_filter, match=args.match))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
