"""Train the tiny Orthrus family from scratch: tokenizer, base causal LM, then the diffusion view.

Three stages, each a pure function of the recipe and the seed:

1. Tokenizer: byte-level BPE fitted on the corpus (`tiny_tokenizer.py`).
2. Base: a Qwen3-architecture causal LM trained with next-token loss on packed chat-formatted documents
   (`tiny_corpus.py`: generated problems with checkable answers plus real training-split text).
3. Diffusion view: the base frozen, the `*_diff` projections and norms initialised from their AR
   counterparts and trained by self-distillation. For random anchors a in each sequence, the block
   [x_a, MASK x (K-1)] at positions a..a+K-1 attends to the frozen AR view's keys/values of positions < a and
   bidirectionally to itself, exactly what it sees at inference; block offset i is trained towards the AR
   view's next-token distribution at position a+i (forward KL). Many blocks share one forward: their queries
   are concatenated and an explicit boolean mask keeps every block to its own prefix and itself.

Each stage checkpoints its parameters, optimiser and loss history every `save_every` steps, so an interrupted
run resumes where it stopped; batches are drawn from a generator seeded by (seed, step), so a resumed run
sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Qwen3Config

from orthrus_core.attention import CAUSAL
from orthrus_core.jsonfile import write_json
from orthrus_core.model import OrthrusForCausalLM, copy_ar_to_diffusion, init_weights

from . import tiny_corpus
from .schedule import lr_at
from .tiny_tokenizer import ENDOFTEXT, IM_END, MASK, train_tokenizer


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the tiny family. The defaults are what ships in models/tiny."""

    seed: int = 0
    # Tokenizer and corpus
    vocab_size: int = 4096
    generated_conversations: int = tiny_corpus.TRAIN_CONVERSATIONS
    gsm8k_train: int = 2000  # documents drawn from each real training split (None: all)
    math_train: int = 1000
    mbpp_train: int | None = None
    # Model (Qwen3 architecture)
    hidden_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    max_position_embeddings: int = 4096
    block_size: int = 16
    # Base stage
    seq_len: int = 256
    base_steps: int = 1600
    base_batch: int = 16
    base_lr: float = 3e-3
    # Diffusion stage
    diff_steps: int = 1000
    diff_batch: int = 16
    diff_lr: float = 2e-3
    blocks_per_seq: int = 12
    warmup_steps: int = 50
    weight_decay: float = 0.1

    def config(self, mask_token_id: int, eos_token_id: int, pad_token_id: int) -> Qwen3Config:
        config = Qwen3Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            bos_token_id=None,
            use_cache=False,
        )
        config.block_size = self.block_size
        config.mask_token_id = mask_token_id
        return config


# ---------------------------------------------------------------------------------------------- corpus


def render(tokenizer, messages: list[dict]) -> list[int]:
    """A conversation as the model sees it at inference: the chat-template prompt for the last user turn
    (enable_thinking=False, so it ends with an empty think block) followed by the answer and <|im_end|>."""
    prompt = tokenizer.apply_chat_template(
        messages[:-1], add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
    )
    answer = tokenizer.encode(messages[-1]["content"] + IM_END + "\n", add_special_tokens=False)
    return list(prompt) + answer


def _take(items: Iterable, count: int | None, rng: random.Random) -> list:
    items = list(items)
    return items if count is None or count >= len(items) else rng.sample(items, count)


def training_conversations(recipe: Recipe, data_dir: str | Path | None) -> list[list[dict]]:
    """The generated mix plus, when the data folder is given, a seeded sample of each real training split."""
    conversations = list(tiny_corpus.conversations(tiny_corpus.TRAIN_SEED, recipe.generated_conversations))
    if data_dir is not None:
        rng = random.Random(recipe.seed)
        real = tiny_corpus.real_conversations(data_dir)
        for source, count in (
            ("gsm8k", recipe.gsm8k_train),
            ("math", recipe.math_train),
            ("mbpp", recipe.mbpp_train),
        ):
            conversations += _take(real[source], count, rng)
    return conversations


def token_stream(tokenizer, conversations: list[list[dict]], seed: int) -> torch.Tensor:
    """Documents in a seeded random order, each followed by <|endoftext|>, as one 1-D tensor of ids."""
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    eot = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    ids: list[int] = []
    for i in order:
        ids += render(tokenizer, conversations[i])
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def sample_windows(stream: torch.Tensor, seq_len: int, batch: int, generator: torch.Generator):
    """`batch` random windows of seq_len + 1 tokens: [batch, seq_len + 1]."""
    starts = torch.randint(0, len(stream) - seq_len - 1, (batch,), generator=generator)
    return torch.stack([stream[s : s + seq_len + 1] for s in starts.tolist()])


# ---------------------------------------------------------------------------------------------- losses


def next_token_loss(model: OrthrusForCausalLM, window: torch.Tensor) -> torch.Tensor:
    """Causal LM loss on a [B, S+1] window: positions 0..S-1 predict 1..S."""
    x, y = window[:, :-1], window[:, 1:]
    S = x.shape[1]
    positions = torch.arange(S, device=x.device)[None]
    logits = model.run(x, positions, CAUSAL, False, lambda i, k, v: (k, v))
    return F.cross_entropy(logits.flatten(0, 1), y.flatten())


@torch.no_grad()
def ar_teacher(model: OrthrusForCausalLM, x: torch.Tensor):
    """The frozen AR view over x [B, S]: its log-probabilities [B, S, V] and every layer's keys and values
    ([B, kv_heads, S, D] each), which the diffusion blocks attend to as they would to the KV cache."""
    S = x.shape[1]
    keys, values = [], []

    def keep(i, k, v):
        keys.append(k)
        values.append(v)
        return k, v

    positions = torch.arange(S, device=x.device)[None]
    logits = model.run(x, positions, CAUSAL, False, keep)
    return logits.log_softmax(-1), keys, values


def draw_anchors(S: int, K: int, n_blocks: int, generator: torch.Generator) -> torch.Tensor:
    """n_blocks distinct anchors in [1, S-K+1]: each block's offsets 0..K-2 have a teacher position < S, and
    every block has at least one clean position before it."""
    return torch.randperm(S - K + 1, generator=generator)[:n_blocks] + 1


def diffusion_loss(model: OrthrusForCausalLM, x: torch.Tensor, anchors: torch.Tensor, K: int) -> torch.Tensor:
    """Self-distillation loss of the diffusion view on x [B, S] with blocks at `anchors` [B, n] (sorted or
    not); the mean over blocks and offsets 0..K-2 of KL(AR(. | x_<=a+i) || diffusion(. | block i))."""
    B, S = x.shape
    n = anchors.shape[1]
    teacher_logp, ar_keys, ar_values = ar_teacher(model, x)
    offsets = torch.arange(K, device=x.device)
    positions = (anchors[:, :, None] + offsets).reshape(B, n * K)  # [B, n*K]
    block_ids = torch.full((B, n, K), model.mask_token_id, dtype=torch.long, device=x.device)
    block_ids[:, :, 0] = x.gather(1, anchors)
    block_ids = block_ids.reshape(B, n * K)

    # Query of block j sees AR keys at positions < anchor_j, and the K keys of block j itself.
    query_block = torch.arange(n * K, device=x.device) // K  # [n*K]
    sees_prefix = (
        torch.arange(S, device=x.device)[None, None, :] < anchors.repeat_interleave(K, 1)[:, :, None]
    )
    sees_block = query_block[:, None] == query_block[None, :]  # [n*K, n*K]
    mask = torch.cat([sees_prefix, sees_block[None].expand(B, -1, -1)], dim=2)[:, None]  # [B, 1, nK, S+nK]

    def context(i, k, v):
        return torch.cat([ar_keys[i], k], dim=2), torch.cat([ar_values[i], v], dim=2)

    logits = model.run(block_ids, positions, mask, True, context).view(B, n, K, -1)[:, :, :-1]
    target = teacher_logp.gather(
        1, (anchors[:, :, None] + offsets[:-1]).reshape(B, -1, 1).expand(-1, -1, teacher_logp.shape[-1])
    ).view(B, n, K - 1, -1)
    return F.kl_div(logits.log_softmax(-1), target, log_target=True, reduction="none").sum(-1).mean()


# ---------------------------------------------------------------------------------------------- stages


def run_stage(
    name: str,
    model: OrthrusForCausalLM,
    params: list[tuple[str, torch.nn.Parameter]],
    loss_fn: Callable[[int, torch.Generator], torch.Tensor],
    *,
    steps: int,
    lr: float,
    recipe: Recipe,
    work_dir: Path,
    save_every: int = 100,
    progress: bool = True,
) -> dict:
    """Train `params` for `steps` AdamW steps of loss_fn(step, generator), resuming from work_dir/name.pt.

    Returns the stage's log: per-step losses, wall time, steps. Weight decay applies to matrices only."""
    from tqdm import tqdm

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / f"{name}.pt"
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )
    log = {"losses": [], "wall_s": 0.0, "steps": steps}
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        log = state["log"]
        start = len(log["losses"])

    def save():
        tmp = state_path.with_suffix(".pt.partial")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "log": log}, tmp)
        os.replace(tmp, state_path)

    bar = tqdm(range(start, steps), desc=name, initial=start, total=steps, disable=not progress)
    t0 = time.perf_counter() - log["wall_s"]
    device_type = params[0][1].device.type
    model.train()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, recipe.warmup_steps)
        # bf16 autocast on GPUs (the parameters and optimiser state stay float32); float32 on CPU.
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            loss = loss_fn(step, torch.Generator().manual_seed(recipe.seed * 1_000_003 + step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        optimizer.step()
        log["losses"].append(loss.item())
        log["wall_s"] = time.perf_counter() - t0
        bar.set_postfix(loss=f"{sum(log['losses'][-20:]) / len(log['losses'][-20:]):.3f}")
        if (step + 1) % save_every == 0 or step + 1 == steps:
            save()
    model.eval()
    return log


def train_base(model, stream: torch.Tensor, recipe: Recipe, work_dir: Path, progress: bool = True) -> dict:
    def loss_fn(step, generator):
        window = sample_windows(stream, recipe.seq_len, recipe.base_batch, generator)
        return next_token_loss(model, window.to(model.lm_head.weight.device))

    params = list(model.named_parameters())
    return run_stage(
        "base",
        model,
        [(n, p) for n, p in params if "_diff" not in n],
        loss_fn,
        steps=recipe.base_steps,
        lr=recipe.base_lr,
        recipe=recipe,
        work_dir=work_dir,
        progress=progress,
    )


def diffusion_parameters(model: OrthrusForCausalLM) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if "_diff" in n]


def train_diffusion(
    model, stream: torch.Tensor, recipe: Recipe, work_dir: Path, progress: bool = True
) -> dict:
    """Freeze everything but the diffusion view and distil the AR view into it (module docstring)."""
    trainable = diffusion_parameters(model)
    for _, p in model.named_parameters():
        p.requires_grad_(False)
    for _, p in trainable:
        p.requires_grad_(True)
    K = recipe.block_size

    def loss_fn(step, generator):
        window = sample_windows(stream, recipe.seq_len, recipe.diff_batch, generator)[:, :-1]
        anchors = torch.stack(
            [draw_anchors(recipe.seq_len, K, recipe.blocks_per_seq, generator) for _ in range(len(window))]
        )
        device = model.lm_head.weight.device
        return diffusion_loss(model, window.to(device), anchors.to(device), K)

    try:
        return run_stage(
            "diffusion",
            model,
            trainable,
            loss_fn,
            steps=recipe.diff_steps,
            lr=recipe.diff_lr,
            recipe=recipe,
            work_dir=work_dir,
            progress=progress,
        )
    finally:
        for _, p in model.named_parameters():
            p.requires_grad_(True)


# ---------------------------------------------------------------------------------------------- all


def build_model(recipe: Recipe, tokenizer, device: str = "cpu") -> OrthrusForCausalLM:
    config = recipe.config(
        mask_token_id=tokenizer.convert_tokens_to_ids(MASK),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
    )
    return init_weights(OrthrusForCausalLM(config), seed=recipe.seed).to(device)


def train_tiny(
    out_dir: str | Path,
    data_dir: str | Path | None,
    *,
    recipe: Recipe = Recipe(),
    device: str = "cpu",
    work_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[OrthrusForCausalLM, object, dict]:
    """Tokenizer, base and diffusion view, resumable from work_dir (default out_dir/../.train-work).

    Returns the trained float32 model, its tokenizer and the training log; writing the checkpoint is the
    caller's (`save_family`), after evaluation."""
    from transformers import AutoTokenizer

    torch.manual_seed(recipe.seed)
    work_dir = Path(work_dir or Path(out_dir).parent / f".{Path(out_dir).name}-work")
    work_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = work_dir / "recipe.json"
    if recipe_file.exists() and json.loads(recipe_file.read_text()) != asdict(recipe):
        raise ValueError(
            f"{work_dir} holds a run with a different recipe; remove it or pass another work directory"
        )
    write_json(recipe_file, asdict(recipe))

    t0 = time.perf_counter()
    tokenizer_dir = work_dir / "tokenizer"
    if (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        texts = tiny_corpus.tokenizer_training_text(data_dir)
        tokenizer = train_tokenizer(texts, recipe.vocab_size, tokenizer_dir)
    stream_path = work_dir / "stream.pt"
    if stream_path.exists():
        stream = torch.load(stream_path)
    else:
        stream = token_stream(tokenizer, training_conversations(recipe, data_dir), recipe.seed)
        torch.save(stream, stream_path)
    corpus_s = time.perf_counter() - t0

    model = build_model(recipe, tokenizer, device)
    base_log = train_base(model, stream, recipe, work_dir, progress)
    copy_ar_to_diffusion(model)
    diff_log = train_diffusion(model, stream, recipe, work_dir, progress)
    log = {
        "recipe": asdict(recipe),
        "corpus_tokens": len(stream),
        "real_data": data_dir is not None,
        "corpus_s": corpus_s,
        "base": base_log,
        "diffusion": diff_log,
        "device": device,
    }
    return model, tokenizer, log
