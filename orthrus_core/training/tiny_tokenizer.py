"""A small Qwen3-style tokenizer for the tiny family: byte-level BPE with Qwen2's split rule (digits one by
one), Qwen3's special tokens plus a mask token, and a Qwen3-like chat template, saved in Hugging Face format so
`AutoTokenizer.from_pretrained(dir).apply_chat_template(messages, add_generation_prompt=True,
enable_thinking=False)` renders prompts as Qwen3 does.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Qwen2/Qwen3's pre-tokenizer pattern: contractions, letter runs, single digits, punctuation runs, whitespace.
QWEN_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
ENDOFTEXT, IM_START, IM_END, MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"
THINK, END_THINK = "<think>", "</think>"
# Ids vocab_size-6 ... vocab_size-1, in this order; the mask token is the last id, as 151669 is for Qwen3.
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, THINK, END_THINK, MASK]

# Qwen3's template reduced to what the project uses (no tools): history turns are rendered without a think
# block, and a generation prompt with enable_thinking=false opens an empty one.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Fit the BPE on `texts` and save the tokenizer files into out_dir; returns the loaded tokenizer."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.add_special_tokens(SPECIAL_TOKENS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        mask_token=MASK,
        additional_special_tokens=[IM_START, THINK, END_THINK],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    if len(tokenizer) != vocab_size or tokenizer.convert_tokens_to_ids(MASK) != vocab_size - 1:
        raise RuntimeError(f"tokenizer came out with {len(tokenizer)} tokens instead of {vocab_size}")
    tokenizer.save_pretrained(out_dir)
    return tokenizer
