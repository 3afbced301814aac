"""Tiny models with word-level tokenizers, data files, random adapters and packaged-data samples."""

from __future__ import annotations

import bz2
import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

POSITIVE = ["good", "great", "fun", "lovely", "superb", "brilliant"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "weak"]
NEUTRAL = ["the", "movie", "film", "was", "plot", "actor", "story", "a", "it", "and", "very", "quite", "scene", "music"]
CHAT_WORDS = ["hello", "hi", "how", "are", "you", "fine", "thanks", "what", "is", "up", "nothing", "much", "ok", "bye"]
# ChatML, as SmolLM2 and many other chat models use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _word_vocab(specials: list[str]) -> dict[str, int]:
    words = specials + ["user", "assistant", "system"] + POSITIVE + NEGATIVE + NEUTRAL + CHAT_WORDS
    return {word: index for index, word in enumerate(dict.fromkeys(words))}


def bert_tokenizer() -> PreTrainedTokenizerFast:
    vocab = _word_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def llama_tokenizer() -> PreTrainedTokenizerFast:
    vocab = _word_vocab(["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"])
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a BERT sequence classifier (hidden 32, 2 layers, 4 heads, vocabulary 128) with its tokenizer."""
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=128,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    bert_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """Save a LLaMA causal LM (hidden 32, 2 layers, 4 heads, vocabulary 128) with a ChatML tokenizer."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=128, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    llama_tokenizer().save_pretrained(folder)
    return folder


def save_random_adapter(model_dir: Path, path: Path, seed: int, *, num_labels: int | None = None, **lora_kwargs) -> Path:
    """Save a PEFT adapter for the model in ``model_dir`` with random non-zero ``lora_A`` and ``lora_B``."""
    if num_labels is None:
        base = AutoModelForCausalLM.from_pretrained(model_dir)
    else:
        base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    lora_kwargs.setdefault("r", 4)
    lora_kwargs.setdefault("lora_alpha", 8)
    peft_model = get_peft_model(base, LoraConfig(**lora_kwargs))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(path)
    return path


def review_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Rows of made-up reviews whose label follows the sentiment words in them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(NEUTRAL, 4) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def chat_rows(count: int, seed: int = 0) -> list[dict]:
    """Conversations of one to three user/assistant exchanges made of chat words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns.append({"role": "user", "content": " ".join(rng.sample(CHAT_WORDS, 3))})
            turns.append({"role": "assistant", "content": " ".join(rng.sample(CHAT_WORDS, 4))})
        rows.append({"messages": turns})
    return rows


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rotten_tomatoes_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """A balanced random sample of packaged fresh and rotten review snippets (plot summaries left out)."""
    from lorakit.assets import asset_path

    with bz2.open(asset_path("rotten-tomatoes"), "rt", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["category"] in ("fresh", "rotten")]
    rng = random.Random(seed)
    fresh = rng.sample([row for row in rows if row["category"] == "fresh"], count // 2)
    rotten = rng.sample([row for row in rows if row["category"] == "rotten"], count - count // 2)
    sample = [{"text": row["text"], "label": row["category"]} for row in fresh + rotten]
    rng.shuffle(sample)
    return sample


def chitchat_conversations(count: int, seed: int = 0, turns: int = 2, system: str | None = None) -> list[dict]:
    """Packaged chitchat conversations cut to their first ``turns`` turns, as user/assistant messages.

    Only conversations with at least ``turns`` turns are drawn, so each has an assistant
    message. The first speaker is the user; a ``system`` message is put first when given.
    """
    from lorakit.assets import asset_path

    conversations = json.loads(asset_path("chitchat").read_text(encoding="utf-8"))
    long_enough = sorted(key for key, value in conversations.items() if len(value["messages"]) >= turns)
    rng = random.Random(seed)
    rows = []
    for key in rng.sample(long_enough, count):
        kept = conversations[key]["messages"][:turns]
        first_sender = kept[0][0]["sender"]
        messages = [{"role": "system", "content": system}] if system else []
        for turn in kept:
            role = "user" if turn[0]["sender"] == first_sender else "assistant"
            messages.append({"role": role, "content": " ".join(message["text"] for message in turn)})
        rows.append({"messages": messages})
    return rows


# Running training in a fresh Python process ---------------------------------------------

_RUN_CODE = """
import json, sys
from transformers import TrainerCallback
from lorakit.train import train

settings = json.loads(sys.argv[1])
stop_after = int(sys.argv[2])


class StopAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == stop_after:
            raise KeyboardInterrupt(f"stopped after checkpoint {stop_after}")


train(callbacks=[StopAfterCheckpoint()] if stop_after else None, **settings)
"""


def run_training_process(settings: dict, stop_after_checkpoint: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``lorakit.train.train(**settings)`` in a new Python process, optionally interrupted after a checkpoint."""
    return subprocess.run(
        [sys.executable, "-c", _RUN_CODE, json.dumps(settings), str(stop_after_checkpoint)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
