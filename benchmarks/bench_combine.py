"""Time combining adapters (``svd`` truncated to a rank, and exact ``linear``) against PEFT.

For each module size ``n`` the script writes ``--adapters`` PEFT folders of rank
``--rank`` on a one-layer model with an ``n x n`` linear layer (random non-zero factors,
a different ``lora_alpha`` each), then times, interleaved per round:

- lorakit ``combine_adapters(adapters, weights, method="svd", rank=k)`` against PEFT's
  ``add_weighted_adapter(..., combination_type="svd", svd_rank=k)``, which builds the
  dense ``n x n`` delta and runs a full SVD;
- lorakit ``method="linear"`` (exact, concatenated factors) against PEFT's ``linear``
  (weighted sums of ``A`` and of ``B``, which adds cross terms) and PEFT's ``cat``.

Each result's relative error ``||delta - target||_F / ||target||_F`` is measured in
float64 against the exact weighted sum ``target = sum_i w_i * scaling_i * B_i @ A_i``.

Example::

    python benchmarks/bench_combine.py --sizes 1024 4096 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

WEIGHTS = [0.4, 0.3, 0.2, 0.1]


class OneLinear(nn.Module):
    """A model with one ``n x n`` linear layer named ``proj``, for PEFT to wrap."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(size, size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="module sizes n (default 1024 4096)")
    parser.add_argument("--adapters", type=int, default=4, help="adapters to combine (default 4)")
    parser.add_argument("--rank", type=int, default=16, help="rank of each adapter and of the svd result (default 16)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per figure (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--workdir", type=Path, default=common.default_workdir(), help="folder for the generated adapter folders"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: print only)")
    return parser.parse_args(argv)


def write_folders(workdir: Path, size: int, count: int, r: int) -> list[Path]:
    """Write ``count`` PEFT folders of rank ``r`` for :class:`OneLinear` of ``size``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    folders = []
    for index in range(count):
        folder = workdir / f"combine-n{size}-r{r}" / f"adapter{index}"
        folders.append(folder)
        if (folder / "adapter_model.safetensors").is_file():
            continue
        generator = torch.Generator().manual_seed(100 + index)
        tensors = {
            "base_model.model.proj.lora_A.weight": torch.randn(r, size, generator=generator) / size**0.5,
            "base_model.model.proj.lora_B.weight": torch.randn(size, r, generator=generator) / r**0.5,
        }
        folder.mkdir(parents=True, exist_ok=True)
        LoraConfig(r=r, lora_alpha=r * (index + 1), target_modules=["proj"]).save_pretrained(folder)
        save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    return folders


def exact_target(adapters, weights: list[float]) -> torch.Tensor:
    """Return ``sum_i w_i * delta_i`` in float64."""
    return sum(w * a.modules["proj"].delta(torch.float64) for a, w in zip(adapters, weights))


def relative_error(delta: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.norm(delta.double() - target) / torch.linalg.norm(target))


def measure_size(args: argparse.Namespace, size: int) -> dict:
    """Time and check both methods for lorakit and PEFT on one module size."""
    from peft import PeftModel

    from lorakit.adapters import read_adapter
    from lorakit.combine import combine_adapters

    folders = write_folders(args.workdir, size, args.adapters, args.rank)
    weights = WEIGHTS[: args.adapters] if args.adapters <= len(WEIGHTS) else [1 / args.adapters] * args.adapters
    adapters = [read_adapter(folder) for folder in folders]
    names = [folder.name for folder in folders]
    peft_model = PeftModel.from_pretrained(OneLinear(size), folders[0], adapter_name=names[0])
    for folder in folders[1:]:
        peft_model.load_adapter(folder, adapter_name=folder.name)
    layer = peft_model.base_model.model.proj
    target = exact_target(adapters, weights)

    def ours(method: str, **options):
        return lambda: combine_adapters(adapters, weights, method, **options)

    def theirs(combination: str, **options):
        def run():
            peft_model.add_weighted_adapter(names, weights, "combined", combination_type=combination, **options)
            delta = layer.get_delta_weight("combined")
            peft_model.delete_adapter("combined")
            return delta
        return run

    configs = {
        "lorakit_svd": ours("svd", rank=args.rank),
        "peft_svd": theirs("svd", svd_rank=args.rank),
        "lorakit_linear": ours("linear"),
        "peft_linear": theirs("linear"),
        "peft_cat": theirs("cat"),
    }
    errors = {
        "lorakit_svd": relative_error(configs["lorakit_svd"]()[0].modules["proj"].delta(torch.float64), target),
        "lorakit_linear": relative_error(configs["lorakit_linear"]()[0].modules["proj"].delta(torch.float64), target),
        "peft_svd": relative_error(configs["peft_svd"](), target),
        "peft_linear": relative_error(configs["peft_linear"](), target),
        "peft_cat": relative_error(configs["peft_cat"](), target),
    }
    common.log(f"n={size}: relative errors {errors}")
    timings = common.interleaved(configs, args.rounds, warmup=0, label=f"combine n={size}")
    record = {"size": size, "relative_error": errors, **timings.record()}
    record["speedup_wall"] = {
        "svd": common.summary([p / o for p, o in zip(timings.wall["peft_svd"], timings.wall["lorakit_svd"])]),
        "linear": common.summary([p / o for p, o in zip(timings.wall["peft_linear"], timings.wall["lorakit_linear"])]),
    }
    return record


def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [measure_size(args, size) for size in args.sizes]
    record = {
        "figure": "combine",
        "environment": common.environment(),
        "workload": {"adapters": args.adapters, "rank": args.rank, "weights": WEIGHTS[: args.adapters]},
        "rounds": args.rounds,
        "results": results,
    }
    common.write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
