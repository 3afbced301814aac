"""``lorakit predict``: run rows through the adapters they name, batched together."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

logger = logging.getLogger(__name__)


def parse_named_paths(values: list[str], flag: str) -> dict[str, str]:
    """Parse repeated ``NAME=PATH`` options into a dict, as typed by the user."""
    parsed: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"{value!r} is not NAME=PATH (for example movies=./adapters/movies).", param_hint=flag)
        if name in parsed:
            raise typer.BadParameter(f"the name {name!r} is given twice.", param_hint=flag)
        parsed[name] = path
    return parsed


def predict(
    model: Annotated[str, typer.Option("--model", help="Base model: a folder, a hub name, or the packaged 'minilm' / 'smollm2'.")],
    adapter: Annotated[list[str], typer.Option("--adapter", help="NAME=PATH of an adapter to load (repeatable).")],
    input_path: Annotated[Path, typer.Option("--input", help='JSON Lines file of {"text": ..., "adapter": NAME | null | {NAME: weight}}.', exists=True, dir_okay=False)],
    output: Annotated[Path | None, typer.Option("--output", help="Write results here instead of stdout: JSON Lines, one object per input row with text, adapter, label and logits.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="seq-cls or causal-lm; default: from the adapters' task_type.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Tokens to generate per row (causal-lm).")] = 32,
    num_beams: Annotated[int, typer.Option("--num-beams", min=1, help="Beam search width (causal-lm); 1 is greedy.")] = 1,
    do_sample: Annotated[bool, typer.Option("--do-sample", help="Sample instead of greedy decoding (causal-lm).")] = False,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature, with --do-sample.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for sampling.")] = 0,
    chat: Annotated[bool, typer.Option("--chat", help="Wrap each text as a user message with the tokenizer's chat template.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Rows per forward pass, whatever adapters they name.")] = 16,
    max_length: Annotated[int, typer.Option("--max-length", min=1, help="Truncate inputs to this many tokens.")] = 512,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow adapter_model.bin pickle files.")] = False,
) -> None:
    """Predict every input row with its own adapter, stack, or the base model."""
    import torch

    from lorakit.predict import TASKS, load_predictor, predict as run_predict, read_rows, write_rows

    if task is not None and task not in TASKS:
        raise typer.BadParameter(f"{task!r} is not one of {', '.join(TASKS)}.", param_hint="--task")
    adapters = parse_named_paths(adapter, "--adapter")
    rows = read_rows(input_path)
    predictor = load_predictor(model, adapters, task=task, trust_pickle=trust_pickle)
    generation = {"max_new_tokens": max_new_tokens, "num_beams": num_beams}
    if do_sample:
        torch.manual_seed(seed)
        generation.update(do_sample=True, temperature=temperature)
    results = run_predict(predictor, rows, batch_size=batch_size, max_length=max_length, chat=chat, **generation)
    count = write_rows(results, output)
    logger.info("Predicted %d rows with task %s%s", count, predictor.task, f"; wrote {output}" if output else "")
