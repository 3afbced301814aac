"""Draw the growth plots of docs/benchmarks.md from the JSON records in benchmarks/results.

Example::

    python benchmarks/plot.py --results benchmarks/results --out docs/benchmarks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"lorakit": "tab:blue", "lorakit_each": "tab:cyan", "peft": "tab:orange", "base": "tab:gray"}
LABELS = {"lorakit": "lorakit, one load_adapters call", "lorakit_each": "lorakit, one load_adapter per folder"}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results", help="folder of JSON records")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "docs" / "benchmarks", help="folder for the PNG files")
    return parser.parse_args(argv)


def read(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def error_bars(summaries: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Return medians and the (below, above) distances to min and max for ``plt.errorbar``."""
    medians = [s["median"] for s in summaries]
    return medians, [[m - s["min"] for m, s in zip(medians, summaries)], [s["max"] - m for m, s in zip(medians, summaries)]]


def plot_load(record: dict, out: Path) -> Path:
    counts = [r["adapters"] for r in record["results"]]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for tool in ("lorakit", "lorakit_each", "peft"):
        if tool not in record["results"][0]["wall_s"]:
            continue  # a record from before lorakit_each was timed
        medians, spread = error_bars([r["wall_s"][tool] for r in record["results"]])
        label = LABELS.get(tool, tool)
        axes.errorbar(counts, medians, yerr=spread, marker="o", capsize=3, label=label, color=COLORS[tool])
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("adapters loaded (rank 64, every linear layer)")
    axes.set_ylabel("load time, s (median, min-max)")
    axes.set_title("Loading adapters onto a 168M LLaMA")
    axes.legend()
    return save(figure, out / "load.png")


def plot_routed_ratio(record: dict, key: str, label: str, title: str, out: Path) -> Path:
    results = sorted(record["results"], key=lambda r: r[key])
    values = [r[key] for r in results]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for tool in ("lorakit", "peft"):
        medians, spread = error_bars([r["ratio_wall"][tool] for r in results])
        axes.errorbar(values, medians, yerr=spread, marker="o", capsize=3, label=tool, color=COLORS[tool])
    axes.axhline(1.0, color=COLORS["base"], linestyle="--", label="base model")
    axes.set_xscale("log", base=2)
    axes.set_xlabel(label)
    axes.set_ylabel("time / base model time (per round)")
    axes.set_title(title)
    axes.legend()
    return save(figure, out / f"routed_by_{key}.png")


def plot_combine(record: dict, out: Path) -> Path:
    sizes = [r["size"] for r in record["results"]]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for name, color in (("lorakit_svd", COLORS["lorakit"]), ("peft_svd", COLORS["peft"])):
        medians, spread = error_bars([r["wall_s"][name] for r in record["results"]])
        axes.errorbar(sizes, medians, yerr=spread, marker="o", capsize=3, label=name.replace("_", " "), color=color)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("module size n (n x n), 4 adapters of rank 16")
    axes.set_ylabel("svd combine time, s")
    axes.set_title("SVD combine against module size")
    axes.legend()
    return save(figure, out / "combine_svd.png")


def save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_arguments(argv)
    written = []
    if (record := read(args.results, "load")) is not None:
        written.append(plot_load(record, args.out))
    if (record := read(args.results, "routed_prefill_by_adapters")) is not None:
        title = f"Routed prefill, {record['workload']['rows']} rows x {record['workload']['tokens']} tokens, rank 16"
        written.append(plot_routed_ratio(record, "adapters", "adapters (row i uses adapter i mod n)", title, args.out))
    if (record := read(args.results, "routed_prefill")) is not None:
        title = f"Routed prefill, 16 adapters, {record['workload']['rows']} x {record['workload']['tokens']} tokens"
        written.append(plot_routed_ratio(record, "r", "rank of every adapter", title, args.out))
    if (record := read(args.results, "combine")) is not None:
        written.append(plot_combine(record, args.out))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
