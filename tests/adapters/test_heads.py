"""Transformers' report of a new base head is hidden only when every adapter brings its own head."""

import transformers
from factories import make_peft_adapter

from lorakit import read_adapter
from lorakit.adapters.heads import carries_head, new_head_report_quiet


def test_report_hidden_when_all_carry_heads(tmp_path):
    with_head = read_adapter(make_peft_adapter("bert", tmp_path / "with_head", seed=1))
    without_head = read_adapter(make_peft_adapter("bert", tmp_path / "without_head", seed=2, task_type=None))
    assert carries_head(with_head)
    assert not carries_head(without_head)

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    try:
        with new_head_report_quiet([with_head]):
            assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert transformers.logging.get_verbosity() == transformers.logging.WARNING
        with new_head_report_quiet([with_head, without_head]):
            assert transformers.logging.get_verbosity() == transformers.logging.WARNING
    finally:
        transformers.logging.set_verbosity(before)
