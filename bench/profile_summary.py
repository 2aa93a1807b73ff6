"""Summarise a py-spy `--format raw` profile (collapsed stacks) or a cProfile .pstats file.

    python -m bench.profile_summary PROFILE.txt [--top 25] [--match loader,duckdb,psycopg,dbt]
    python -m bench.profile_summary PROFILE.pstats [--top 25]

For collapsed stacks: inclusive share of samples per function (a function counts once per sample, however
deep it recurs), filtered to frames whose text contains one of --match (default: everything).
"""

from __future__ import annotations

import argparse
import pstats
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>[^ ]+) \((?P<file>[^:)]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/work/main/", "/tmp/snap/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['function']} ({file})"


def collapsed(path: Path, top: int, matches: list[str]) -> None:
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += samples
        leaf[frames[-1]] += samples
    print(f"{total:,} samples")
    print(f"{'inclusive %':>11}  {'self %':>6}  function")
    shown = 0
    for frame, samples in inclusive.most_common():
        if matches and not any(m in frame for m in matches):
            continue
        print(f"{100 * samples / total:10.1f}%  {100 * leaf[frame] / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="")
    args = parser.parse_args(argv)
    if args.profile.suffix == ".pstats":
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(args.top)
    else:
        collapsed(args.profile, args.top, [m for m in args.match.split(",") if m])
    return 0


if __name__ == "__main__":
    sys.exit(main())
