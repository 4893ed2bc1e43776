"""Train an EAGLE-3 head for a frozen target on the target's own outputs (self-distillation).

Training-time test (EAGLE-3, eagle/traineagle3/cnets.py): the head is unrolled `ttt_steps` times. Step 0 sees
(target feature of token t-1, token t) for every t, causally; step s feeds each row the head's own output from
step s-1 together with the token s positions further on, and each row attends to the step-0 rows up to it plus
its own rows of steps 1..s (exactly what a depth-s draft node sees at inference: committed context, then its
ancestors). The loss at every step is the soft cross-entropy to the target's next-token distribution
restricted to the draft vocabulary, on response positions whose target argmax is in that vocabulary, weighted
0.8^s.

The draft vocabulary is the `draft_vocab_size` most frequent tokens of the training responses (d2t/t2d as
EAGLE-3 builds them). The head starts from the target's lm_head rows of those tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from orthrus_core.attention import CAUSAL
from orthrus_core.eagle3 import Eagle3Head, aux_layers, distinct_aux_layers, eagle3_config
from orthrus_core.model import OrthrusForCausalLM

from .batches import Batch, make_batches
from .optimize import train_loop


def draft_vocabulary(sequences: Sequence[tuple[list[int], int]], vocab_size: int, size: int) -> torch.Tensor:
    """The `size` most frequent response tokens, ascending (EAGLE-3's `used` ids)."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for ids, start in sequences:
        counts += torch.bincount(torch.tensor(ids[start:]), minlength=vocab_size)
    return counts.topk(size).indices.sort().values


def ttt_loss(head: Eagle3Head, target: OrthrusForCausalLM, batch: Batch, used: torch.Tensor, ttt_steps: int):
    ids = batch.ids
    B, T = ids.shape
    keep = lambda i, k, v: (k, v)  # noqa: E731
    with torch.no_grad():
        logits, features = target.run(
            ids,
            torch.arange(T)[None],
            CAUSAL,
            False,
            keep,
            capture=aux_layers(head.config, target.config.num_hidden_layers),
        )
        p = torch.softmax(logits[..., used], -1)  # the target restricted to the draft vocabulary
        in_vocab = head.t2d[logits.argmax(-1)]
        t = torch.arange(T)
        # Position t's distribution predicts token t+1: train where that is a real response token.
        trained = (
            (t[None] + 1 >= batch.response_start[:, None]) & (t[None] + 1 < batch.lengths[:, None]) & in_vocab
        )
    R = T - 1  # rows: (feature of t, token t+1) for t = 0..T-2
    hidden = features[:, :-1]
    keys, values = [], []

    def kv(k, v):
        keys.append(k)
        values.append(v)
        return torch.cat(keys, dim=2), torch.cat(values, dim=2)

    causal = torch.ones(R, R, dtype=torch.bool, device=ids.device).tril()
    diagonal = torch.eye(R, dtype=torch.bool, device=ids.device)
    total = 0.0
    for s in range(ttt_steps):
        tokens = F.pad(ids[:, 1 + s :], (0, s))  # row i's token: position i+1+s
        mask = torch.cat([causal] + [diagonal] * s, dim=1)
        hidden = head(tokens, hidden, (torch.arange(R) + s)[None], mask, lambda k, v: kv(k, v))
        logp = torch.log_softmax(head.logits(hidden[:, : R - s]), -1)
        # Row i at step s predicts position i+2+s: the target's distribution at position i+1+s.
        target_p, weight = p[:, 1 + s :], trained[:, 1 + s :].float()
        loss = -(target_p * logp).sum(-1)
        total = total + 0.8**s * (loss * weight).sum() / weight.sum().clamp_min(1)
    return total


def train_eagle3(
    target: OrthrusForCausalLM,
    sequences: Sequence[tuple[list[int], int]],
    *,
    draft_vocab_size: int,
    aux_layer_ids: list[int] | None = None,
    steps: int = 400,
    batch_size: int = 8,
    lr: float = 3e-3,
    ttt_steps: int = 5,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Eagle3Head:
    """A new head trained on `sequences` ((ids, response_start) pairs of the target's own outputs). It reads
    the target states `aux_layer_ids`, default three distinct ones (`distinct_aux_layers`), named in its config
    so that every loader (this project's, vLLM's) reads the same ones."""
    torch.manual_seed(seed)
    target.requires_grad_(False)
    used = draft_vocabulary(sequences, target.config.vocab_size, draft_vocab_size)
    layers = aux_layer_ids or distinct_aux_layers(target.config.num_hidden_layers)
    config = eagle3_config(target.config, draft_vocab_size, layers)
    head = Eagle3Head(config, target.config.hidden_size, target.model.embed_tokens)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name != "embed_tokens.weight":
                p.normal_(0, 0.02)
        head.lm_head.weight.copy_(target.lm_head.weight[used])
        head.norm.weight.copy_(target.model.norm.weight)
        head.d2t.copy_(used - torch.arange(draft_vocab_size))
        head.t2d.zero_()
        head.t2d[used] = True
    params = [p for n, p in head.named_parameters() if n != "embed_tokens.weight"]
    draw = make_batches(sequences, batch_size, pad_id=0, seed=seed)
    loss_of = lambda batch: ttt_loss(head, target, batch, used, ttt_steps)  # noqa: E731
    train_loop(head, params, loss_of, draw, steps=steps, lr=lr, name="eagle3", log=log)
    return head
