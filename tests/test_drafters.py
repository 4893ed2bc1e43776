"""EAGLE-3 and DFlash drafters: greedy identity with AR (chain and tree), the incremental draft cache against a
from-scratch recomputation (rows of a batch each against their own), EAGLE-3 trees at R > 1 giving each row its
batch-1 output, and the public checkpoint formats (names, shapes, loader errors)."""

import json

import pytest
import torch
from conftest import VOCAB, random_model, random_prompts
from safetensors import safe_open

from harness.method_spec import MethodSpec
from harness.methods import ar_hf
from harness.methods.target import Target
from orthrus_core.attention import ALL, CAUSAL
from orthrus_core.checkpoint import CheckpointError, save_model
from orthrus_core.dflash import DFlashDrafter, DFlashDraftModel, dflash_config, load_dflash, save_dflash
from orthrus_core.eagle3 import Eagle3Drafter, Eagle3Head, eagle3_config, load_eagle3, save_eagle3
from orthrus_core.engine import Engine
from orthrus_core.loop import Request, decode, generate
from orthrus_core.params import GREEDY, SamplingParams
from orthrus_core.tree import ancestors

DRAFT_VOCAB = 150


def random_head(target, seed=0, draft_vocab=DRAFT_VOCAB, aux=None) -> Eagle3Head:
    head = Eagle3Head(
        eagle3_config(target.config, draft_vocab, aux), target.config.hidden_size, target.model.embed_tokens
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in head.named_parameters():
            if name == "embed_tokens.weight":
                continue
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn(p.shape, generator=g) * 0.25)
        # A sparse draft vocabulary: every other target id from 20 on.
        used = torch.arange(20, 20 + 2 * draft_vocab, 2)
        head.d2t.copy_(used - torch.arange(draft_vocab))
        head.t2d.zero_()
        head.t2d[used] = True
    return head.eval()


def random_dflash(target, seed=0, layers=2, block_size=6, target_layer_ids=None) -> DFlashDraftModel:
    config = dflash_config(target.config, layers, block_size, target.config.mask_token_id, target_layer_ids)
    draft = DFlashDraftModel(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in draft.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn(p.shape, generator=g) * 0.25)
    return draft.eval()


@pytest.fixture(scope="module")
def target():
    return random_model(seed=0, num_hidden_layers=6)


@pytest.fixture(scope="module")
def engine(target):
    return Engine(target)


@pytest.fixture(scope="module")
def references(engine):
    return [(p, generate(engine, None, p, 25, stop_token_ids=[]).tokens) for p in random_prompts(8, seed=5)]


def bind(drafter, engine, prompts):
    """The drafter bound to a new decode with `prompts` admitted as rows 0.. (prefilled as the loop does)."""
    cache = engine.new_cache(len(prompts), 64)
    drafter.bind(engine, cache)
    for b, prompt in enumerate(prompts):
        prompt = torch.tensor(prompt)
        result = engine.prefill(cache, b, prompt, drafter.capture)
        cache.lengths.append(len(prompt))
        drafter.admit(b, prompt, result[1] if drafter.capture else None)
    return cache


@pytest.mark.parametrize(
    "top_k,depth,total", [(1, 1, 2), (1, 5, 6), (2, 3, 8), (3, 4, 16), (10, 7, 60), (4, 2, 100)]
)
def test_eagle3_greedy_identical_to_ar(target, engine, references, top_k, depth, total):
    head = random_head(target)
    for prompt, ar in references:
        drafter = Eagle3Drafter(head, target, top_k, depth, total)
        r = generate(engine, drafter, prompt, 25, stop_token_ids=[])
        assert r.tokens == ar
        assert r.draft_forwards == depth * r.cycles
    assert drafter.max_nodes == min(total, 1 + top_k + (depth - 1) * top_k**2)


def test_eagle3_tree_shape(target, engine):
    head = random_head(target)
    drafter = Eagle3Drafter(head, target, top_k=3, depth=4, total_tokens=20)
    prompts = [[5, 6, 7, 8], [9, 3, 30, 41, 2, 7, 11]]
    bind(drafter, engine, prompts)
    proposal = drafter.propose(torch.tensor([9, 12]), GREEDY, [None, None])
    tokens, parents = proposal.tokens, proposal.parents
    assert proposal.passes == 4 and tokens.shape == (2, 20) and tokens[:, 0].tolist() == [9, 12]
    assert proposal.drafts == [19, 19] and proposal.q is None
    depth = ancestors(parents).sum(-1) - 1
    assert int(depth[0].max()) == 4 and int(depth.max()) == 4  # at most `depth` levels
    assert (parents[:, 0] == -1).all() and bool((parents[:, 1:] < torch.arange(1, 20)).all())
    assert bool(head.t2d[tokens[:, 1:]].all())  # drafts are mapped into the target vocabulary
    for b in range(2):
        # Siblings are distinct, so greedy acceptance has at most one matching child.
        pairs = {(int(p), int(t)) for p, t in zip(parents[b, 1:], tokens[b, 1:], strict=True)}
        assert len(pairs) == 19
        # A row's tree is the one it gets alone.
        alone = Eagle3Drafter(head, target, top_k=3, depth=4, total_tokens=20)
        bind(alone, engine, prompts[b : b + 1])
        own = alone.propose(tokens[b : b + 1, 0], GREEDY, [None])
        assert torch.equal(own.tokens[0], tokens[b]) and torch.equal(own.parents[0], parents[b])


def naive_eagle3_chain(head, target, sequence, depth):
    """Chain drafts after `sequence` computed without any cache: every step re-runs the head causally over
    all rows (target feature of t-1, token t), then the drafted rows (previous output, drafted token)."""
    ids = torch.tensor(sequence)[None]
    _, feats = target(ids, 0, target.new_cache(len(sequence)), capture=head_capture(head, target))
    tokens, hidden = ids[0, 1:], feats[0, :-1]
    drafts = []
    keep = lambda k, v: (k, v)  # noqa: E731
    rows_h = head.fc(hidden)
    for _ in range(depth):
        T = len(tokens)
        out = head(tokens[None], rows_h[None], torch.arange(T)[None], CAUSAL, keep)
        nxt = head.to_target(head.logits(out[0, -1]).argmax())
        drafts.append(int(nxt))
        # The drafted row takes the head's own output at the last row, and the drafted token.
        tokens, rows_h = torch.cat([tokens, nxt[None]]), torch.cat([rows_h, out[0, -1:]])
    return drafts


def head_capture(head, target):
    return Eagle3Drafter(head, target, 1, 1, 2).capture


def committed(seqs, starts, steps, feats):
    """A cycle's commits for the rows as the loop hands them to `accept`: counts, tokens [R, n] (the root, then
    the accepted drafts; padded) and their target features [R, n, F]."""
    n = max(steps)
    tokens = torch.zeros(len(seqs), n, dtype=torch.long)
    features = torch.zeros(len(seqs), n, feats[0].shape[-1])
    for b, (seq, start, step) in enumerate(zip(seqs, starts, steps, strict=True)):
        tokens[b, :step] = torch.tensor(seq[start : start + step])
        features[b, :step] = feats[b][0, start : start + step]
    return steps, tokens, features


# Two rows committing in uneven cycles, as verification would: each row's drafts are checked against its own
# from-scratch recomputation.
PROMPTS = [[4, 9, 13, 2, 7], [6, 20, 31]]
STEPS = [[1, 3, 1, 4, 2], [2, 1, 4, 1, 3]]


def test_eagle3_incremental_drafts_match_a_recomputation(target, engine):
    head = random_head(target, seed=1)
    drafter = Eagle3Drafter.chain(head, target, depth=4)
    seqs = [p + generate(engine, None, p, 30, stop_token_ids=[]).tokens for p in PROMPTS]
    with torch.inference_mode():
        feats = [
            target(torch.tensor(s)[None], 0, target.new_cache(len(s)), capture=drafter.capture)[1]
            for s in seqs
        ]
        n = [len(p) for p in PROMPTS]
        bind(drafter, engine, PROMPTS)
        for cycle in range(len(STEPS[0])):
            proposal = drafter.propose(
                torch.tensor([s[i] for s, i in zip(seqs, n, strict=True)]), GREEDY, [None] * 2
            )
            for b, seq in enumerate(seqs):
                assert proposal.tokens[b, 1:].tolist() == naive_eagle3_chain(head, target, seq[: n[b] + 1], 4)
            steps = [s[cycle] for s in STEPS]
            drafter.accept(*committed(seqs, n, steps, feats))
            n = [i + s for i, s in zip(n, steps, strict=True)]


def test_eagle3_default_aux_layers_and_override(target):
    assert Eagle3Drafter(random_head(target), target, 1, 1, 2).capture == (2, 3, 3)
    custom = random_head(target, aux=[1, 3, 5])
    assert Eagle3Drafter(custom, target, 1, 1, 2).capture == (1, 3, 5)


# Rows stop at different times; a one-token prompt among them.
LIMITS = [25, 9, 1, 17, 25, 4, 13, 25]


@pytest.mark.parametrize("top_k,depth,total", [(2, 3, 8), (3, 4, 16), (10, 7, 60)])
@pytest.mark.parametrize("params", [GREEDY, SamplingParams(1.0, top_p=0.9)], ids=["greedy", "sampled"])
def test_eagle3_trees_give_every_row_its_batch_1_output(
    target, engine, references, top_k, depth, total, params
):
    """Dynamic trees for R rows at once (one head forward per level over every row's frontier; one tree verify
    pass): each row emits, and accepts, what it does alone, greedy and seeded-sampled, static and continuous."""
    drafter = Eagle3Drafter(random_head(target, seed=2), target, top_k, depth, total)
    prompts = [p for p, _ in references[:-1]] + [references[0][0][-1:]]

    def seeded(i):
        return None if params.greedy else torch.Generator().manual_seed(50 + i)

    alone = [generate(engine, drafter, p, n, params, stop_token_ids=[], generator=seeded(i))
             for i, (p, n) in enumerate(zip(prompts, LIMITS, strict=True))]  # fmt: skip
    if params.greedy:  # lossless
        ar = [
            generate(engine, None, p, n, stop_token_ids=[]).tokens
            for p, n in zip(prompts, LIMITS, strict=True)
        ]
        assert [a.tokens for a in alone] == ar
    for rows, continuous in [(4, False), (3, True), (8, False)]:
        queue = [
            Request(p, n, [], seeded(i), key=i) for i, (p, n) in enumerate(zip(prompts, LIMITS, strict=True))
        ]
        queue.reverse()
        done = {
            d.request.key: d.result
            for d in decode(
                engine, drafter, lambda q=queue: q.pop() if q else None, rows, params, continuous=continuous
            )
        }
        for i, a in enumerate(alone):
            assert (done[i].tokens, done[i].accepted) == (a.tokens, a.accepted), f"R={rows}: row {i}"


@pytest.mark.parametrize("block_size", [2, 4, 6])
def test_dflash_greedy_identical_to_ar(target, engine, references, block_size):
    draft = random_dflash(target)
    for prompt, ar in references:
        r = generate(engine, DFlashDrafter(draft, target, block_size), prompt, 25, stop_token_ids=[])
        assert r.tokens == ar
        assert r.draft_forwards == r.ar_forwards == r.cycles


def test_dflash_incremental_drafts_match_a_recomputation(target, engine):
    draft = random_dflash(target, seed=2, block_size=5)
    seqs = [p + generate(engine, None, p, 30, stop_token_ids=[]).tokens for p in PROMPTS]
    drafter = DFlashDrafter(draft, target)
    keep = lambda i, k, v: (k, v)  # noqa: E731
    with torch.inference_mode():
        feats = [
            target(torch.tensor(s)[None], 0, target.new_cache(len(s)), capture=drafter.capture)[1]
            for s in seqs
        ]
        n = [len(p) for p in PROMPTS]
        bind(drafter, engine, PROMPTS)
        for cycle in range(4):
            proposal = drafter.propose(
                torch.tensor([s[i] for s, i in zip(seqs, n, strict=True)]), GREEDY, [None] * 2
            )
            for b, seq in enumerate(seqs):
                block = torch.tensor([[seq[n[b]]] + [draft.mask_token_id] * 4])
                hidden = draft(
                    target.model.embed_tokens(block),
                    feats[b][:, : n[b]],
                    torch.arange(n[b] + 5)[None],
                    ALL,  # the block sees every context row and itself
                    keep,
                )
                assert proposal.tokens[b, 1:].tolist() == target.lm_head(hidden[0, 1:]).argmax(-1).tolist()
            steps = [s[cycle] for s in [[2, 1, 5, 3], [1, 4, 2, 5]]]
            drafter.accept(*committed(seqs, n, steps, feats))
            n = [i + s for i, s in zip(n, steps, strict=True)]


# ---------------------------------------------------------------------------------------------- formats

EAGLE3_TENSORS = {
    "fc.weight",
    "midlayer.self_attn.q_proj.weight",
    "midlayer.self_attn.k_proj.weight",
    "midlayer.self_attn.v_proj.weight",
    "midlayer.self_attn.o_proj.weight",
    "midlayer.mlp.gate_proj.weight",
    "midlayer.mlp.up_proj.weight",
    "midlayer.mlp.down_proj.weight",
    "midlayer.hidden_norm.weight",
    "midlayer.input_layernorm.weight",
    "midlayer.post_attention_layernorm.weight",
    "norm.weight",
    "lm_head.weight",
    "d2t",
    "t2d",
}


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_eagle3_round_trip_in_the_public_format(target, tmp_path, fmt):
    head = random_head(target, seed=3)
    save_eagle3(head, tmp_path, weights_format=fmt)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLMEagle3"] and config["draft_vocab_size"] == DRAFT_VOCAB
    if fmt == "bin":
        names = set(torch.load(tmp_path / "pytorch_model.bin", weights_only=True))
    else:
        with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
            names = set(f.keys())
    assert names == EAGLE3_TENSORS  # no embedding: it is the target's
    loaded = load_eagle3(tmp_path, target)
    assert loaded.embed_tokens is target.model.embed_tokens
    for name, value in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    prompt, engine = [3, 1, 4, 1, 5], Engine(target)
    a = generate(engine, Eagle3Drafter(head, target, 3, 3, 10), prompt, 20, stop_token_ids=[])
    b = generate(engine, Eagle3Drafter(loaded, target, 3, 3, 10), prompt, 20, stop_token_ids=[])
    assert (a.tokens, a.accepted) == (b.tokens, b.accepted)


def test_eagle3_head_dim_comes_from_the_weights(target, tmp_path):
    """SafeAILab's code derives head_dim as H / heads; a config saying otherwise must not win."""
    head = random_head(target)
    save_eagle3(head, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["head_dim"] = 998
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert load_eagle3(tmp_path, target).config.head_dim == target.config.head_dim


def test_eagle3_loader_errors(target, tmp_path):
    save_eagle3(random_head(target), tmp_path / "ok")
    wider = random_model(seed=1, hidden_size=96, num_hidden_layers=6)
    with pytest.raises(CheckpointError, match="hidden size 64"):
        load_eagle3(tmp_path / "ok", wider)
    other_vocab = random_model(seed=1, vocab_size=VOCAB + 10, num_hidden_layers=6)
    with pytest.raises(CheckpointError, match=f"vocabulary {VOCAB}"):
        load_eagle3(tmp_path / "ok", other_vocab)
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    head = random_head(target)
    head.d2t[-1] = VOCAB  # maps the last draft id past the target's vocabulary
    save_eagle3(head, tmp_path / "bad-d2t")
    with pytest.raises(
        CheckpointError, match=rf"d2t maps draft ids outside the target vocabulary \[0, {VOCAB}\)"
    ):
        load_eagle3(tmp_path / "bad-d2t", target)
    save_model(target, tmp_path / "a-target")  # a checkpoint, but no head: its tensors say so
    with pytest.raises(CheckpointError, match="not an EAGLE-3 head: it has no fc.weight"):
        load_eagle3(tmp_path / "a-target", target)
    shallow = random_model(seed=1, num_hidden_layers=2)
    with pytest.raises(CheckpointError, match=r"reads the target's hidden states \[2, 1, -1\].*2 layers"):
        load_eagle3(tmp_path / "ok", shallow)
    for bad, match in [
        (dict(draft_vocab_size=DRAFT_VOCAB + 1), "lm_head.weight"),
        (dict(intermediate_size=64), "midlayer.mlp"),
    ]:
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "config.json").write_text(json.dumps({**config, **bad}))
        (tmp_path / "bad" / "model.safetensors").write_bytes(
            (tmp_path / "ok" / "model.safetensors").read_bytes()
        )
        with pytest.raises(CheckpointError, match=match):
            load_eagle3(tmp_path / "bad", target)


@pytest.mark.parametrize(
    "architecture", ["LlamaForCausalLMEagle3", "LlamaForCausalLMEEagle3", "Eagle3LlamaForCausalLM"]
)
def test_an_eagle3_head_is_recognised_by_its_tensors_not_its_spelling(target, tmp_path, architecture):
    """AngelSlim/Qwen3-1.7B_eagle3's config is reported to say LlamaForCausalLMEEagle3 (sic); the training
    configs say Eagle3LlamaForCausalLM. All are the same head."""
    save_eagle3(random_head(target), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    assert load_eagle3(tmp_path, target).draft_vocab_size == DRAFT_VOCAB


DFLASH_LAYER_TENSORS = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
]


def test_dflash_round_trip_in_the_public_format(target, tmp_path):
    draft = random_dflash(target, seed=4, layers=2, block_size=6)
    save_dflash(draft, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["DFlashDraftModel"] and config["block_size"] == 6
    assert config["dflash_config"] == {
        "mask_token_id": target.config.mask_token_id,
        "target_layer_ids": [1, 3],
    }
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        assert f.get_slice("fc.weight").get_shape() == [64, 128]
    expected = {f"layers.{i}.{n}" for i in range(2) for n in DFLASH_LAYER_TENSORS}
    assert names == expected | {"fc.weight", "hidden_norm.weight", "norm.weight"}
    loaded = load_dflash(tmp_path, target)
    for name, value in draft.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert loaded.capture == (2, 4)


def test_dflash_loader_errors(target, tmp_path):
    save_dflash(random_dflash(target), tmp_path / "ok")
    with pytest.raises(CheckpointError, match="hidden size 64 != the target's 96"):
        load_dflash(tmp_path / "ok", random_model(seed=1, hidden_size=96, num_hidden_layers=6))
    with pytest.raises(CheckpointError, match="target_layer_ids"):
        load_dflash(tmp_path / "ok", random_model(seed=1, num_hidden_layers=2))
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    for bad, match in [
        (dict(architectures=["Qwen3ForCausalLM"]), "not a DFlash drafter"),
        (dict(dflash_config={"mask_token_id": VOCAB, "target_layer_ids": [1, 3]}), "mask_token_id"),
        (dict(vocab_size=VOCAB + 8), f"vocabulary {VOCAB + 8} != the target's {VOCAB}"),
        (dict(block_size=1), "block_size must be an integer >= 2"),
        (dict(intermediate_size=100), "layers.0.mlp"),
    ]:
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / "config.json").write_text(json.dumps({**config, **bad}))
        (tmp_path / "bad" / "model.safetensors").write_bytes(
            (tmp_path / "ok" / "model.safetensors").read_bytes()
        )
        with pytest.raises(CheckpointError, match=match):
            load_dflash(tmp_path / "bad", target)


def test_captured_features_use_transformers_hidden_state_indices(target):
    """capture=(i, ...) returns transformers' output_hidden_states[i] (0 embeddings, l+1 after layer l, the
    last after the final norm), the indices EAGLE-3 and DFlash configs are written in."""
    hf_model = ar_hf.build(Target.of(target, "x"), MethodSpec.parse("ar-hf"), {"cache": "dynamic"}).hf_model
    ids = torch.tensor([[5, 9, 2, 33, 7]])
    with torch.inference_mode():
        hf_states = hf_model(ids, output_hidden_states=True).hidden_states
        _, ours = target(ids, 0, target.new_cache(5), capture=(0, 2, 5, 6))
    expected = torch.cat([hf_states[i] for i in (0, 2, 5, 6)], dim=-1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_every_method_of_the_decode_loop_runs_its_drafters_passes_in_the_engine():
    """run.json's `outside_engine` is null for every method of the registry that decodes in the loop (every
    batched one, EAGLE-3's chains too): its drafter's passes are the engine's (Engine.run). The baselines outside
    the loop (transformers' generate, the official loop) still say that every pass of theirs is outside it."""
    from harness.methods import BATCHED, make_decoder
    from harness.methods.target import load_target
    from harness.run.runner import method_provenance

    target = load_target(None)
    for spec in [*BATCHED, "eagle3:tree=chain"]:
        assert method_provenance(make_decoder(spec, target))["outside_engine"] is None, spec
    for spec in ("ar-hf", "orthrus:cache=dynamic"):
        assert make_decoder(spec, target).outside_engine == "every pass", spec
