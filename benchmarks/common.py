"""Shared pieces of the benchmark scripts: models, adapter folders, timing and reports.

Every script builds a LLaMA model from a config with random weights (no download),
writes PEFT adapter folders with random non-zero factors, times lorakit and PEFT
interleaved (one run of each configuration per round) and writes a JSON record
with the machine and package versions beside the numbers.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEFT_PREFIX = "base_model.model."


# Models and adapters -------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSize:
    """The LLaMA shape to benchmark; the defaults give about 168M parameters."""

    hidden: int = 1024
    layers: int = 8
    intermediate: int | None = None  # 2.75 * hidden by default (2816 for hidden 1024)
    vocab: int = 32000
    heads: int | None = None  # hidden / 64 by default

    @property
    def intermediate_size(self) -> int:
        return self.intermediate or int(2.75 * self.hidden)

    @property
    def num_heads(self) -> int:
        return self.heads or max(1, self.hidden // 64)

    def tag(self) -> str:
        return f"h{self.hidden}-l{self.layers}-i{self.intermediate_size}-v{self.vocab}"


def build_model(size: ModelSize, seed: int = 0) -> torch.nn.Module:
    """Build a ``LlamaForCausalLM`` with random weights from a config, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=size.hidden,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_heads,
        vocab_size=size.vocab,
        max_position_embeddings=2048,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return an independent copy, so that lorakit, PEFT and the base each get their own."""
    return copy.deepcopy(model).eval()


def linear_shapes(size: ModelSize) -> dict[str, tuple[int, int]]:
    """Map each targeted linear layer's path to its ``(in_features, out_features)``."""
    hidden, inter = size.hidden, size.intermediate_size
    per_layer = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    return {f"model.layers.{i}.{name}": shape for i in range(size.layers) for name, shape in per_layer.items()}


def write_adapter_folder(folder: Path, size: ModelSize, r: int, seed: int, lora_alpha: int | None = None) -> Path:
    """Write a PEFT LoRA folder with random non-zero factors on every linear layer.

    The config is written by PEFT's ``LoraConfig.save_pretrained`` and the tensors
    under PEFT's key names, so ``PeftModel.from_pretrained`` loads it with no missing
    or unexpected keys (``check_peft_loads`` verifies that on a small model).
    """
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    # Imported only here, so that a process that times lorakit alone never imports peft.
    from peft import LoraConfig
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, (in_features, out_features) in linear_shapes(size).items():
        lora_A = torch.randn(r, in_features, generator=generator) / in_features**0.5
        lora_B = torch.randn(out_features, r, generator=generator) * (0.5 / r**0.5)
        tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = lora_A
        tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = lora_B
    staging = folder.with_name(folder.name + ".tmp")
    staging.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(
        r=r, lora_alpha=lora_alpha or r, target_modules=TARGET_MODULES, task_type="CAUSAL_LM", lora_dropout=0.0
    )
    config.save_pretrained(staging)
    save_file(tensors, staging / "adapter_model.safetensors", metadata={"format": "pt"})
    staging.rename(folder)
    return folder


def adapter_folders(workdir: Path, size: ModelSize, r: int, count: int) -> list[Path]:
    """Return ``count`` adapter folders of rank ``r`` for ``size``, writing the missing ones."""
    root = workdir / f"adapters-{size.tag()}-r{r}"
    return [write_adapter_folder(root / f"adapter{i:02d}", size, r, seed=1000 * r + i) for i in range(count)]


def load_lorakit(model: torch.nn.Module, folders: Sequence[Path], *, one_call: bool = True):
    """Wrap ``model`` in a ``MultiAdapterModel`` and load every folder (named by its folder).

    With ``one_call`` they are loaded with one ``load_adapters`` call. Otherwise each
    folder gets its own ``load_adapter`` call.
    """
    from lorakit import MultiAdapterModel

    runtime = MultiAdapterModel(model)
    if one_call:
        runtime.load_adapters(list(folders))
    else:
        for folder in folders:
            runtime.load_adapter(folder, folder.name)
    return runtime


def load_peft(model: torch.nn.Module, folders: Sequence[Path]):
    """Load the folders into one ``PeftModel`` as PEFT's documentation shows (from_pretrained, then load_adapter)."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, folders[0], adapter_name=folders[0].name)
    for folder in folders[1:]:
        peft_model.load_adapter(folder, adapter_name=folder.name)
    return peft_model.eval()


# Timing --------------------------------------------------------------------------------


@dataclass
class CallCost:
    """The cost of one call to this process: wall and CPU seconds, the system (kernel)
    part of the CPU seconds, and the minor page faults."""

    wall: float
    cpu: float
    system: float
    minor_faults: int


def measure_call(function: Callable[[], Any]) -> CallCost:
    """Run ``function`` once (after a garbage collection) and return what it cost."""
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    return CallCost(wall, cpu, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt)


def time_call(function: Callable[[], Any]) -> tuple[float, float]:
    """Return the wall time and the CPU time of this process for one call, in seconds.

    The CPU time leaves out the time other processes hold the cores, so on a shared
    machine it varies less than the wall time.
    """
    cost = measure_call(function)
    return cost.wall, cost.cpu


@dataclass
class Timings:
    """Wall and CPU seconds per round for each configuration."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def record(self, reference: str | None = None) -> dict[str, Any]:
        """Summarise the times (and the per-round ratios to ``reference``) for a JSON record."""
        record: dict[str, Any] = {
            "wall_s": {name: summary(values) for name, values in self.wall.items()},
            "cpu_s": {name: summary(values) for name, values in self.cpu.items()},
            "wall_rounds_s": self.wall,
        }
        if reference is not None:
            record["ratio_wall"] = ratios(self.wall, reference)
            record["ratio_cpu"] = ratios(self.cpu, reference)
        return record


def interleaved(
    configs: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1, label: str = ""
) -> Timings:
    """Time every configuration once per round, rotating the order, after ``warmup`` untimed rounds."""
    names = list(configs)
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = time_call(configs[name])
            if round_index >= warmup:
                timings.wall[name].append(wall)
                timings.cpu[name].append(cpu)
        if round_index >= warmup:
            done = ", ".join(f"{name} {timings.wall[name][-1]:.3f}s" for name in names)
            log(f"{label} round {round_index - warmup + 1}/{rounds}: {done}")
    return timings


def summary(values: Sequence[float]) -> dict[str, float]:
    """Return the median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(times: dict[str, list[float]], reference: str) -> dict[str, dict[str, float]]:
    """Return, per configuration, the summary of its time divided by ``reference``'s time in the same round."""
    base = times[reference]
    return {name: summary([t / b for t, b in zip(values, base)]) for name, values in times.items() if name != reference}


# Memory --------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MiB.

    Linux's ``VmHWM`` is used where it exists: ``ru_maxrss`` of a process started by
    a large parent also counts the parent's peak, because the kernel folds the old
    address space's peak into it at ``exec``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # the line is "VmHWM: <n> kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_in_subprocess(script: Path, arguments: Sequence[str]) -> dict[str, Any]:
    """Run ``script`` with ``arguments`` in a fresh Python and return the JSON object it prints last."""
    completed = subprocess.run(
        [sys.executable, str(script), *arguments], check=True, capture_output=True, text=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def peak_in_subprocess(script: Path, arguments: Sequence[str]) -> float:
    """Run ``script`` with ``arguments`` in a fresh Python and return its peak resident memory in MiB.

    The script prints one JSON line with a ``peak_rss_mb`` field last.
    """
    return float(run_in_subprocess(script, arguments)["peak_rss_mb"])


# Arguments and records -----------------------------------------------------------------


def add_size_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """Add the model size, rounds and output flags every script shares."""
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size of the LLaMA model (default 1024)")
    parser.add_argument("--layers", type=int, default=8, help="number of decoder layers (default 8)")
    parser.add_argument("--intermediate", type=int, default=None, help="MLP size (default 2.75 x hidden)")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size (default 32000)")
    parser.add_argument("--rounds", type=int, default=rounds, help=f"timed rounds per figure (default {rounds})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--workdir", type=Path, default=default_workdir(),
        help="folder for the generated adapter folders, reused between runs",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results (default: print only)")


def default_workdir() -> Path:
    """Return the folder where generated adapter folders are kept between runs."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / "lorakit-bench"


def size_from(args: argparse.Namespace) -> ModelSize:
    if args.threads:
        torch.set_num_threads(args.threads)
    return ModelSize(hidden=args.hidden, layers=args.layers, intermediate=args.intermediate, vocab=args.vocab)


def environment() -> dict[str, Any]:
    """Describe the machine and the package versions."""
    import peft
    import transformers

    import lorakit

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "lorakit": lorakit.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "free_page_reporting": free_page_reporting(),
    }


def free_page_reporting() -> bool | None:
    """Tell whether this is a virtual machine whose balloon device reports free memory to the host.

    The host then reclaims memory that stays free for a few seconds, and the next
    first write to such a page faults on the host as well, which shows up as system
    CPU time. Returns ``None`` where the device's files cannot be read.
    """
    devices = Path("/sys/bus/virtio/devices")
    if not devices.is_dir():
        return False
    try:
        for device in devices.iterdir():
            if (device / "device").read_text().strip() == "0x0005":  # virtio balloon
                features = (device / "features").read_text().strip()
                return len(features) > 5 and features[5] == "1"  # VIRTIO_BALLOON_F_REPORTING is bit 5
        return False
    except OSError:
        return None


def write_record(path: Path | None, record: dict[str, Any]) -> None:
    """Print ``record`` as JSON, and write it to ``path`` when given."""
    text = json.dumps(record, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
