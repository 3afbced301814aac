"""Time a routed batch (each row its own adapter) against the base model and PEFT.

``prefill`` runs one forward of ``--rows`` x ``--tokens``; ``generate`` runs greedy
generation of ``--new-tokens`` tokens after ``--tokens`` prompt tokens. Row ``i`` uses
adapter ``i % n``. Each (number of adapters, rank) pair is one interleaved set of
rounds: the base model alone, lorakit's ``adapter_names`` and PEFT's ``adapter_names``,
each on its own copy of the same model, with the same adapter folders.

Examples::

    python benchmarks/bench_routed.py prefill --adapters 16 --ranks 16 64
    python benchmarks/bench_routed.py generate --adapters 4 16 --ranks 16 --tokens 16
    python benchmarks/bench_routed.py prefill --adapters 1 4 16 64 --rows 64 --tokens 32
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=["prefill", "generate"], help="what to time")
    parser.add_argument("--adapters", type=int, nargs="+", default=[16], help="numbers of adapters (default 16)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[16], help="LoRA ranks (default 16)")
    parser.add_argument("--rows", type=int, default=16, help="rows in the batch (default 16)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per row (default 128 prefill, 16 generate)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per row (default 32)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory, one subprocess each")
    parser.add_argument("--memory-repeats", type=int, default=1, help="subprocesses per configuration for --memory (default 1)")
    parser.add_argument("--memory-only", action="store_true", help="measure peak memory only, with no timing")
    parser.add_argument("--only", choices=["base", "lorakit", "peft"], help=argparse.SUPPRESS)  # subprocess mode
    common.add_size_arguments(parser, rounds=5)
    args = parser.parse_args(argv)
    if args.tokens is None:
        args.tokens = 128 if args.figure == "prefill" else 16
    return args


def workload(args: argparse.Namespace, model, names: list[str] | None):
    """Return a function that runs the figure once on ``model`` (routed when ``names`` is given)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, args.vocab, (args.rows, args.tokens), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    routing = {} if names is None else {"adapter_names": names}
    if args.figure == "prefill":
        def run():
            with torch.no_grad():
                return model(input_ids=input_ids, attention_mask=attention_mask, **routing).logits
    else:
        settings = {
            "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False, "pad_token_id": 0,
        }

        def run():
            with torch.no_grad():
                return model.generate(input_ids=input_ids, attention_mask=attention_mask, **settings, **routing)
    return run


def row_names(folders: list[Path], rows: int) -> list[str]:
    return [folders[row % len(folders)].name for row in range(rows)]


def measure_set(args, size, base_model, count: int, r: int) -> dict:
    """Time base, lorakit and PEFT for ``count`` adapters of rank ``r``, and compare their outputs."""
    folders = common.adapter_folders(args.workdir, size, r, count)
    if args.memory_only:
        return {"adapters": count, "r": r, "peak_rss_mb": memory_set(args, count, r)}
    names = row_names(folders, args.rows)
    runtime = common.load_lorakit(common.copy_model(base_model), folders)
    peft_model = common.load_peft(common.copy_model(base_model), folders)
    configs = {
        "base": workload(args, base_model, None),
        "lorakit": workload(args, runtime, names),
        "peft": workload(args, peft_model, names),
    }
    ours, theirs, base = configs["lorakit"](), configs["peft"](), configs["base"]()
    if args.figure == "prefill":
        check = {"max_abs_diff_vs_peft": float((ours - theirs).abs().max()), "max_abs_change_vs_base": float((ours - base).abs().max())}
    else:
        check = {"same_tokens_as_peft": bool(torch.equal(ours, theirs)), "tokens_differ_from_base": bool(not torch.equal(ours, base))}
    common.log(f"{args.figure} {count} adapters r={r}: {check}")
    timings = common.interleaved(configs, args.rounds, label=f"{args.figure} n={count} r={r}")
    result = {"adapters": count, "r": r, "check": check, **timings.record(reference="base")}
    if args.memory:
        result["peak_rss_mb"] = memory_set(args, count, r)
    del runtime, peft_model
    return result


def memory_set(args: argparse.Namespace, count: int, r: int) -> dict:
    """Return the peak memory of base, lorakit and PEFT over ``--memory-repeats`` fresh processes each."""
    peaks: dict[str, list[float]] = {name: [] for name in ("base", "lorakit", "peft")}
    for _ in range(args.memory_repeats):
        for name in peaks:
            peaks[name].append(measure_memory(args, name, count, r))
    return {name: common.summary(values) for name, values in peaks.items()}


def measure_memory(args: argparse.Namespace, name: str, count: int, r: int) -> float:
    """Run one configuration alone in a fresh process and return its peak resident memory in MiB."""
    arguments = [
        args.figure, "--only", name, "--adapters", str(count), "--ranks", str(r), "--rows", str(args.rows),
        "--tokens", str(args.tokens), "--new-tokens", str(args.new_tokens), "--hidden", str(args.hidden),
        "--layers", str(args.layers), "--vocab", str(args.vocab), "--workdir", str(args.workdir),
    ]
    if args.intermediate:
        arguments += ["--intermediate", str(args.intermediate)]
    if args.threads:
        arguments += ["--threads", str(args.threads)]
    return common.peak_in_subprocess(Path(__file__), arguments)


def run_only(args: argparse.Namespace, size: common.ModelSize) -> None:
    """Subprocess mode: build, load and run one configuration once, then print the peak memory."""
    model = common.build_model(size)
    folders = common.adapter_folders(args.workdir, size, args.ranks[0], args.adapters[0])
    names = row_names(folders, args.rows)
    if args.only == "base":
        workload(args, model, None)()
    elif args.only == "lorakit":
        workload(args, common.load_lorakit(model, folders), names)()
    else:
        workload(args, common.load_peft(model, folders), names)()
    print(json.dumps({"peak_rss_mb": common.peak_rss_mb()}))


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    size = common.size_from(args)
    if args.only:
        run_only(args, size)
        return {}
    base_model = common.build_model(size)
    results = [measure_set(args, size, base_model, count, r) for r in args.ranks for count in args.adapters]
    record = {
        "figure": f"routed {args.figure}",
        "environment": common.environment(),
        "model": {**vars(size), "parameters": sum(p.numel() for p in base_model.parameters())},
        "workload": {"rows": args.rows, "tokens": args.tokens, "new_tokens": args.new_tokens if args.figure == "generate" else 0},
        "rounds": args.rounds,
        "results": results,
    }
    common.write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
