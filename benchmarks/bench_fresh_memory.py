"""Time the first write to fresh memory, right after other memory was freed and after a pause.

Loading adapters writes their factors into new memory, so its time includes the page
faults of that memory. On a virtual machine whose balloon device reports free pages
to the host, memory that stays free for a few seconds goes back to the host, and the
next first write to it faults on the host too. This script measures that effect on
the machine it runs on. It maps ``--megabytes`` of anonymous memory, writes it once,
unmaps it, waits ``--idle`` seconds and repeats. It does so with huge pages
(``MADV_HUGEPAGE``, as lorakit's factor banks use) and with small pages.

Example::

    python benchmarks/bench_fresh_memory.py --megabytes 2560 --idle 0 0 5 0 10 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import mmap
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=2560, help="memory written per step, in MiB (default 2560)")
    parser.add_argument(
        "--idle", type=float, nargs="+", default=[0, 0, 5, 0, 10],
        help="seconds to wait before each step (default 0 0 5 0 10)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the writes (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: print only)")
    return parser.parse_args(argv)


def write_fresh(size: int, huge_pages: bool) -> common.CallCost:
    """Map ``size`` bytes, write every byte once, unmap, and return what the write cost."""
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    values = torch.frombuffer(memory, dtype=torch.uint8)
    cost = common.measure_call(functools.partial(values.fill_, 1))
    del values  # the last reference to the map's memory, so that close() can unmap it
    memory.close()
    return cost


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    size = args.megabytes << 20
    results = []
    for huge_pages in (True, False):
        for idle in args.idle:
            time.sleep(idle)
            cost = write_fresh(size, huge_pages)
            common.log(f"huge pages {huge_pages}, after {idle:g} s idle: {cost.wall:.3f} s (system {cost.system:.3f} s)")
            results.append(
                {"huge_pages": huge_pages, "idle_s": idle, "wall_s": cost.wall, "system_s": cost.system,
                 "minor_faults": cost.minor_faults}
            )
    record = {
        "figure": "fresh_memory",
        "environment": common.environment(),
        "megabytes": args.megabytes,
        "results": results,
    }
    common.write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
