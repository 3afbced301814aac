"""Time one active adapter, unmerged and merged, against the base model and PEFT.

One forward of ``--rows`` x ``--tokens`` per configuration, interleaved per round:
the base model alone; per rank, lorakit with ``activate(name)`` and PEFT with its
active adapter (both unmerged); and, for the first rank, lorakit after ``merge(name)``
and PEFT after ``merge_adapter()``. Each configuration has its own copy of the model.

Example::

    python benchmarks/bench_single.py --ranks 16 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64], help="LoRA ranks (default 16 64)")
    parser.add_argument("--rows", type=int, default=16, help="rows in the batch (default 16)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per row (default 128)")
    parser.add_argument("--no-merged", dest="merged", action="store_false", help="skip the merged configurations")
    common.add_size_arguments(parser, rounds=5)
    return parser.parse_args(argv)


def forward(model, input_ids: torch.Tensor):
    def run():
        with torch.no_grad():
            return model(input_ids=input_ids).logits
    return run


def build_configs(args, size, base_model, input_ids) -> tuple[dict, dict]:
    """Return the configurations to time and the largest output difference of each from PEFT's."""
    configs = {"base": forward(base_model, input_ids)}
    pairs = {}
    for index, r in enumerate(args.ranks):
        folder = common.adapter_folders(args.workdir, size, r, 1)[0]
        runtime = common.load_lorakit(common.copy_model(base_model), [folder])
        runtime.activate(folder.name)
        peft_model = common.load_peft(common.copy_model(base_model), [folder])
        configs[f"lorakit_r{r}"] = forward(runtime, input_ids)
        configs[f"peft_r{r}"] = forward(peft_model, input_ids)
        pairs[f"r{r}"] = (f"lorakit_r{r}", f"peft_r{r}")
        if args.merged and index == 0:
            merged_runtime = common.load_lorakit(common.copy_model(base_model), [folder])
            merged_runtime.merge(folder.name)
            merged_peft = common.load_peft(common.copy_model(base_model), [folder])
            merged_peft.merge_adapter()
            configs["lorakit_merged"] = forward(merged_runtime, input_ids)
            configs["peft_merged"] = forward(merged_peft, input_ids)
            pairs["merged"] = ("lorakit_merged", "peft_merged")
    checks = {}
    for label, (ours, theirs) in pairs.items():
        checks[label] = float((configs[ours]() - configs[theirs]()).abs().max())
    return configs, checks


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    size = common.size_from(args)
    base_model = common.build_model(size)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, args.vocab, (args.rows, args.tokens), generator=generator)
    configs, checks = build_configs(args, size, base_model, input_ids)
    common.log(f"single adapter: largest difference from PEFT {checks}")
    timings = common.interleaved(configs, args.rounds, label="single adapter")
    record = {
        "figure": "single adapter",
        "environment": common.environment(),
        "model": {**vars(size), "parameters": sum(p.numel() for p in base_model.parameters())},
        "workload": {"rows": args.rows, "tokens": args.tokens, "ranks": args.ranks},
        "rounds": args.rounds,
        "max_abs_diff_vs_peft": checks,
        **timings.record(reference="base"),
    }
    common.write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
