"""Token ids and labels: chat templates, assistant-only loss, plain text and padding."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from lorakit.errors import TrainingConfigError
from lorakit.train.tokenization import IGNORE_INDEX, CausalLMCollator, encode_chat, encode_text

from .helpers import bert_tokenizer, llama_tokenizer

CONVERSATION = [
    {"role": "user", "content": "hello how are you"},
    {"role": "assistant", "content": "fine thanks"},
    {"role": "user", "content": "what is up"},
    {"role": "assistant", "content": "nothing much"},
]


def _labelled_words(tokenizer, row) -> list[str]:
    return [tokenizer.convert_ids_to_tokens(i) for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]


def test_assistant_only_labels_cover_assistant_turns():
    tokenizer = llama_tokenizer()
    rows = encode_chat(Dataset.from_list([{"messages": CONVERSATION}]), tokenizer, "messages", 64, True, "training")
    assert _labelled_words(tokenizer, rows[0]) == ["fine", "thanks", "<|im_end|>", "nothing", "much", "<|im_end|>"]


def test_full_loss_labels_every_token():
    tokenizer = llama_tokenizer()
    rows = encode_chat(Dataset.from_list([{"messages": CONVERSATION}]), tokenizer, "messages", 64, False, "training")
    expected = tokenizer(tokenizer.apply_chat_template(CONVERSATION, tokenize=False), add_special_tokens=False)["input_ids"]
    assert rows[0]["input_ids"] == expected
    assert rows[0]["labels"] == expected


def test_chat_truncated_rows_without_assistant_dropped():
    tokenizer = llama_tokenizer()
    long_user = [{"role": "user", "content": " ".join(["hello"] * 30)}, {"role": "assistant", "content": "ok"}]
    rows = Dataset.from_list([{"messages": long_user}, {"messages": CONVERSATION}])
    encoded = encode_chat(rows, tokenizer, "messages", 16, True, "training")
    assert encoded.num_rows == 1
    assert len(encoded[0]["input_ids"]) == 16


def test_chat_without_template():
    tokenizer = llama_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(TrainingConfigError, match="holds chat messages but the tokenizer has no chat template"):
        encode_chat(Dataset.from_list([{"messages": CONVERSATION}]), tokenizer, "messages", 64, True, "training")


def test_chat_template_that_rewrites_history():
    tokenizer = llama_tokenizer()
    # Shows only the last assistant turn, as some reasoning models' templates do with old thoughts.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant{% endif %}"
    )
    with pytest.raises(TrainingConfigError, match="renders earlier turns differently"):
        encode_chat(Dataset.from_list([{"messages": CONVERSATION}]), tokenizer, "messages", 64, True, "training")


def test_chat_row_that_is_not_messages():
    tokenizer = llama_tokenizer()
    rows = Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}, {"messages": []}])
    with pytest.raises(TrainingConfigError, match="not a list of chat messages with 'role' and 'content'"):
        encode_chat(rows, tokenizer, "messages", 64, False, "training")


def test_plain_text_appends_eos_and_drops_blank_rows():
    tokenizer = llama_tokenizer()
    rows = encode_text(Dataset.from_dict({"text": ["hello how are you", "  ", "fine"]}), tokenizer, "text", 3, "training")
    assert rows.num_rows == 2
    assert rows[0]["input_ids"] == tokenizer.convert_tokens_to_ids(["hello", "how", "</s>"])
    assert rows[1]["labels"] == rows[1]["input_ids"]


def test_plain_text_all_blank():
    with pytest.raises(TrainingConfigError, match="No training rows are left with text in column 'text'"):
        encode_text(Dataset.from_dict({"text": ["", " "]}), llama_tokenizer(), "text", 8, "training")


def test_collator_pads_labels_with_ignore_index():
    batch = CausalLMCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [5, 6, 7]},
         {"input_ids": [8], "attention_mask": [1], "labels": [IGNORE_INDEX]}]
    )
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 0, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[5, 6, 7], [IGNORE_INDEX] * 3]))


def test_bert_tokenizer_helper_adds_cls_and_sep():
    ids = bert_tokenizer()("good film")["input_ids"]
    assert bert_tokenizer().convert_ids_to_tokens(ids) == ["[CLS]", "good", "film", "[SEP]"]
