"""Time loading 1 to 64 adapter folders onto a base model, lorakit against PEFT.

Each configuration starts from its own copy of the base model (the copy is not
timed) and ends with every adapter loaded, ready to activate or route:

- ``lorakit``: ``MultiAdapterModel(model)``, then one ``load_adapters(folders)`` call;
- ``lorakit_each``: ``MultiAdapterModel(model)``, then ``load_adapter(folder)`` per folder;
- ``peft``: ``PeftModel.from_pretrained(model, first)``, then ``load_adapter(folder)`` per
  other folder, as PEFT's documentation shows.

The folders are written first, so every tool reads them from the page cache. Both
tools copy the factors into their own memory while loading. ``touch_s`` times a pass
that reads every loaded factor once, which shows any cost a tool defers to first use.

Example::

    python benchmarks/bench_load.py --adapters 1 4 16 64 --rank 64 --memory
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

TOOLS = ("lorakit", "lorakit_each", "peft")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 4, 16, 64], help="numbers of adapters (default 1 4 16 64)")
    parser.add_argument("--rank", type=int, default=64, help="LoRA rank on every linear layer (default 64)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory, one subprocess each")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones (default 1)")
    parser.add_argument("--memory-repeats", type=int, default=1, help="subprocesses per configuration for --memory (default 1)")
    parser.add_argument("--only", choices=list(TOOLS), help=argparse.SUPPRESS)  # subprocess mode
    common.add_size_arguments(parser, rounds=3)
    return parser.parse_args(argv)


def load_with(tool: str, model: torch.nn.Module, folders: list[Path]):
    """Load ``folders`` onto ``model`` the way ``tool`` names."""
    if tool == "peft":
        return common.load_peft(model, folders)
    return common.load_lorakit(model, folders, one_call=tool == "lorakit")


def loaders(base_model, folders: list[Path]) -> dict:
    """Return the untimed ``prepare`` step (a fresh model copy), the timed ``load`` step and the loaded models."""
    loaded: dict[str, object] = {}
    copies: dict[str, torch.nn.Module] = {}

    def prepare(tool: str) -> None:
        loaded.pop(tool, None)  # free the previous round's model first
        copies[tool] = common.copy_model(base_model)

    def load(tool: str):
        def run():
            model = copies.pop(tool)
            loaded[tool] = load_with(tool, model, folders)
        return run

    return {"prepare": prepare, "load": load, "loaded": loaded}


def read_every_factor(loaded) -> float:
    """Read every adapter factor once (summing it) and return the total, so nothing is skipped."""
    model = loaded.model if hasattr(loaded, "state") else loaded
    total = 0.0
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                total += float(parameter.sum())
    return total


def measure_count(args: argparse.Namespace, size: common.ModelSize, base_model, count: int) -> dict:
    """Time lorakit and PEFT loading ``count`` adapters, interleaved per round."""
    folders = common.adapter_folders(args.workdir, size, args.rank, count)
    state = loaders(base_model, folders)
    wall: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    cpu: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    system: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    faults: dict[str, list[int]] = {tool: [] for tool in TOOLS}
    touch: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    for round_index in range(-args.warmup, args.rounds):
        shift = round_index % len(TOOLS)
        for tool in TOOLS[shift:] + TOOLS[:shift]:
            state["prepare"](tool)
            cost = common.measure_call(state["load"](tool))
            if round_index < 0:
                continue  # untimed, because on a virtual machine the first use of this much memory costs more
            wall[tool].append(cost.wall)
            cpu[tool].append(cost.cpu)
            system[tool].append(cost.system)
            faults[tool].append(cost.minor_faults)
            touch[tool].append(common.time_call(lambda: read_every_factor(state["loaded"][tool]))[0])
        if round_index < 0:
            continue
        done = ", ".join(f"{t} {wall[t][-1]:.3f}s (system {system[t][-1]:.3f}s)" for t in wall)
        common.log(f"load n={count} round {round_index + 1}/{args.rounds}: {done}")
    state["loaded"].clear()
    timings = common.Timings(wall, cpu)
    record = {"adapters": count, **timings.record(reference="lorakit")}
    # The system share of the CPU time is mostly page faults. On a virtual machine whose
    # host reclaims free memory, a round that writes reclaimed memory pays more of it.
    record["system_rounds_s"] = system
    record["minor_faults_rounds"] = faults
    record["touch_s"] = {tool: common.summary(values) for tool, values in touch.items()}
    record["peft_over_lorakit_wall"] = common.summary([p / o for p, o in zip(wall["peft"], wall["lorakit"])])
    if args.memory:
        runs: dict[str, list[dict]] = {tool: [] for tool in TOOLS}
        for _ in range(args.memory_repeats):
            for tool in runs:
                runs[tool].append(load_in_new_process(args, tool, count))
        record["peak_rss_mb"] = {tool: common.summary([r["peak_rss_mb"] for r in values]) for tool, values in runs.items()}
        # A server loads its adapters once, into memory its process has not used before.
        record["new_process_load"] = {
            tool: {key: [r[key] for r in values] for key in ("load_s", "load_system_s", "load_minor_faults")}
            for tool, values in runs.items()
        }
    return record


def load_in_new_process(args: argparse.Namespace, tool: str, count: int) -> dict:
    """Load ``count`` adapters with ``tool`` in a new Python process and return its peak memory and load cost."""
    arguments = [
        "--only", tool, "--adapters", str(count), "--rank", str(args.rank), "--hidden", str(args.hidden),
        "--layers", str(args.layers), "--vocab", str(args.vocab), "--workdir", str(args.workdir),
    ]
    if args.intermediate:
        arguments += ["--intermediate", str(args.intermediate)]
    return common.run_in_subprocess(Path(__file__), arguments)


def run_only(args: argparse.Namespace, size: common.ModelSize) -> None:
    """Subprocess mode: build the model, load the adapters with one tool, read them once, print the peak memory.

    It also prints what the load cost: wall and system seconds, and minor page faults.
    """
    model = common.build_model(size)
    folders = common.adapter_folders(args.workdir, size, args.rank, args.adapters[0])
    loaded = []

    def load() -> None:
        loaded.append(load_with(args.only, model, folders))

    cost = common.measure_call(load)
    before_touch = common.peak_rss_mb()
    read_every_factor(loaded[0])
    print(json.dumps({
        "peak_rss_mb": common.peak_rss_mb(),
        "peak_rss_mb_before_reading": before_touch,
        "load_s": cost.wall,
        "load_system_s": cost.system,
        "load_minor_faults": cost.minor_faults,
    }))


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    size = common.size_from(args)
    if args.only:
        run_only(args, size)
        return {}
    base_model = common.build_model(size)
    for count in args.adapters:  # write every folder before the first timing
        common.adapter_folders(args.workdir, size, args.rank, count)
    results = [measure_count(args, size, base_model, count) for count in args.adapters]
    record = {
        "figure": "load",
        "environment": common.environment(),
        "model": {**vars(size), "parameters": sum(p.numel() for p in base_model.parameters())},
        "workload": {"rank": args.rank, "target_modules": common.TARGET_MODULES},
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "results": results,
    }
    common.write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
