"""The CUDA route, rehearsed on this CPU (orthrus_core.rehearsal): what a first GPU run compiles and captures.
Kernels are chosen as on CUDA, FlexAttention is compiled as on CUDA with Dynamo's eager backend (the same guards
and the same limits), CUDA graphs are simulated. Each test starts from an empty compile cache
(torch._dynamo.reset), so what it counts is its own.

The known set of shapes (docs/methodology.md, "Compiled shapes"): per dtype, capacity bucket and row bucket, the
union of what each method's passes need. `flex_shapes` and `graphs` below write that formula for the tiny
family; a run shaped like `nox -s bench-8b` must compile exactly it, in warm-up, and decode the CPU route's
tokens."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from conftest import random_prompts

from harness.run.runner import execute
from harness.run.spec import RunSpec
from harness.store import load_run, read_records
from orthrus_core.attention import Visibility, attend
from orthrus_core.compiled import LEDGER
from orthrus_core.engine import Engine, bucket, row_bucket
from orthrus_core.loop import Request, decode
from orthrus_core.rehearsal import rehearsal


def test_more_than_eight_flexattention_shapes_compile_in_one_process():
    """Dynamo keeps 8 graphs per function by default and, under fullgraph, raises FailOnRecompileLimitHit at
    the ninth (the first GPU run stopped there: EAGLE-3's six window widths and its tree verify pass alone made
    eight). The limits are raised where the project makes its compiled function: twelve window widths of one
    pass compile twelve shapes, each computing what the CPU route computes."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, 16, generator=g) for heads, n in ((4, 2), (2, 256), (2, 256)))
    mark = LEDGER.mark()
    for width in range(1, 13):
        window = torch.ones(1, 2, width, dtype=torch.bool)
        expected = attend(q, k, v, Visibility.after([100], 2, "pattern", window=window))
        with rehearsal():
            got = attend(q, k, v, Visibility.after([100], 2, "pattern", window=window))
        torch.testing.assert_close(got, expected)
    assert [c.kind for c in LEDGER.since(mark)] == ["flex_attention"] * 12


# ------------------------------------------------------------------------------ a run shaped like bench-8b

# The tiny family's methods (models/tiny): Orthrus' block, DFlash's block, prompt lookup's nodes (10 drafts and
# the root), EAGLE-3's tree (59 drafts and the root; 10 per level, 7 levels) and the features each drafter reads.
ORTHRUS_K, DFLASH_K, PLD_NODES, TREE_NODES, TOP_K, DEPTH = 16, 16, 11, 60, 10, 7
LOSSLESS = ["ar", "ar-hf", "ar-hf:cache=static", "orthrus", "eagle3", "dflash", "pld"]
BATCHED = ["ar", "orthrus", "eagle3", "dflash", "pld"]
NODES = {"ar": 1, "orthrus": ORTHRUS_K, "pld": PLD_NODES, "dflash": DFLASH_K, "eagle3": TREE_NODES}


def flex_shapes(method: str, rows: int, capacity: int) -> set:
    """The FlexAttention shapes `method` compiles at a (row bucket, capacity bucket): its static passes (a
    window over the pass's own tokens, or a tree's ancestors; Orthrus' diffusion and verify passes share one)
    and its drafter's own passes, static too (EAGLE-3: its first pass, and every expansion level one shape)."""

    def static(T, kind="window"):  # noqa: E306
        return ("static", rows, T, kind, capacity)

    if method == "ar":
        return {static(1)}
    if method == "orthrus":
        return {static(ORTHRUS_K)}
    if method == "pld":  # at its full width, drafts or not
        return {static(PLD_NODES)}
    if method == "dflash":
        return {static(DFLASH_K), ("dflash draft", rows, capacity)}
    if method == "eagle3":
        drafter = {("eagle3 first pass", rows, capacity), ("eagle3 expansion", rows, capacity)}
        return {static(TREE_NODES, "tree")} | drafter
    return set()  # ar-hf and the official loop: SDPA only


def graphs(method: str, rows: int, capacity: int) -> set:
    """The CUDA graphs `method` captures at a (row bucket, capacity bucket): one per static pass kind, keyed as
    the engine keys them (tokens, diffusion view, tree, the features the drafter reads), and its drafter's one
    (DFlash's draft pass, EAGLE-3's drafting)."""
    return {
        "ar": {(rows, 1, "ar", ())},
        "orthrus": {(rows, ORTHRUS_K, "diffusion", ()), (rows, ORTHRUS_K, "ar", ())},
        "pld": {(rows, PLD_NODES, "ar", ())},
        "dflash": {(rows, DFLASH_K, "ar", "dflash features"), (rows, "dflash draft")},
        "eagle3": {(rows, TREE_NODES, "tree", "eagle3 features"), (rows, "eagle3 draft")},
    }.get(method, set())


def expected_compiles(methods, capacities: dict, rows: int) -> dict:
    """The formula: the union over methods of their shapes, per capacity bucket its items need and per row
    bucket of `rows` (1, 2, 4, ... up to rows)."""
    row_buckets = {row_bucket(active, rows) for active in range(1, rows + 1)}
    flex, captured = set(), set()
    for method in methods:
        for capacity in capacities.get(method, ()):
            for r in row_buckets:
                flex |= flex_shapes(method, r, capacity)
                captured |= {(capacity, *g) for g in graphs(method, r, capacity)}
    return {"flex_attention": len(flex), "cudagraph": len(captured)}


SUITE = """
description = "C4 text filled to four prompt lengths, then a question: items in two capacity buckets"
[dataset]
fields = {{ text = "text" }}
[dataset.local]
files = ["instruct/c4_demo.jsonl"]
[context_sweep]
lengths = [140, 150, 290, 300]
document_separator = "\\n\\n"
[prompt]
system = ""
user = "Read the following documents.\\n\\n{{context}}\\n\\nWhat are they about?"
chat_template_kwargs = {{ enable_thinking = false }}
[generation]
max_new_tokens = {new}
temperature = {temperature}
top_k = 0
top_p = 1.0
stop = []
[scoring]
scorer = "lengths"
"""
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def suites(tmp_path_factory, data_dir):
    """The same items, greedy and sampled (a run's suites each keep their own temperature)."""
    directory = tmp_path_factory.mktemp("suites")
    paths = []
    for name, temperature in (("greedy", 0.0), ("sampled", 1.0)):
        path = directory / f"ctx-{name}.toml"
        path.write_text(SUITE.format(new=NEW_TOKENS, temperature=temperature))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_run_shaped_like_bench_8b_compiles_its_known_shapes_in_warm_up_and_decodes_the_cpu_routes_tokens(
    suites, data_dir, tmp_path, dtype
):
    """Every lossless method of the project's engine, one row and three (continuous), items in two capacity
    buckets, greedy and sampled, through the CUDA route: no compile fails, warm-up compiles exactly the formula's
    shapes and no measured generation compiles; in float32 every generation is the CPU route's, token for token
    (in bfloat16 the two routes' roundings differ; verify's near-tie study is what judges that)."""
    for rows in (None, 3):
        spec = RunSpec(suites=suites, methods=BATCHED if rows else LOSSLESS, dtype=dtype, batch_size=rows,
                       continuous=rows is not None, data_dir=str(data_dir), warmup=1)  # fmt: skip
        torch._dynamo.reset()
        mark = LEDGER.mark()
        with rehearsal():
            rehearsed = read_records(execute(spec, tmp_path / f"rehearsed-{rows}", progress=False))
        compiled = Counter(c.kind for c in LEDGER.since(mark))
        assert all(r["status"] == "ok" for r in rehearsed), [r.get("error") for r in rehearsed]
        assert all(r["compiles"] == 0 for r in rehearsed if not r["method"].startswith("ar-hf"))
        capacities = {
            m: {bucket(r["prompt_tokens"] + NEW_TOKENS + NODES[m]) for r in rehearsed if r["method"] == m}
            for m in NODES
        }
        assert all(len(c) == 2 for c in capacities.values()), capacities  # two capacity buckets each
        expected = expected_compiles(spec.methods, capacities, rows or 1)
        assert {kind: compiled[kind] for kind in expected} == expected
        run = load_run(tmp_path / f"rehearsed-{rows}")
        assert all(
            c["generations"]["count"] == 0 for m, c in run.compiles.items() if not m.startswith("ar-hf")
        )
        if dtype == "float32":
            cpu = read_records(execute(spec, tmp_path / f"cpu-{rows}", progress=False))
            assert {(r["suite"], r["item_id"], r["method"]): r["output_ids"] for r in rehearsed} == {
                (r["suite"], r["item_id"], r["method"]): r["output_ids"] for r in cpu
            }


# ------------------------------------------------------------------------------------------ drafters' passes


def decode_all(engine, drafter, rows: int) -> None:
    prompts = [p + p[:3] for p in random_prompts(4, seed=4, min_len=3, max_len=10)]
    queue = [Request(p, n, [], key=i) for i, (p, n) in enumerate(zip(prompts, [16, 11, 16, 6], strict=True))]
    queue.reverse()
    for _ in decode(engine, drafter, lambda: queue.pop() if queue else None, rows, continuous=True):
        pass


@pytest.mark.parametrize("mode", ["compile", "cudagraph"])
def test_a_drafters_passes_compile_or_capture_once_per_row_bucket(micro, mode):
    """The drafters' passes run in the target's engine (Engine.run), on the CUDA route (rehearsed): under compile
    one graph per pass function and row bucket, under cudagraph one capture per row bucket (its cache the
    engine's, at one address), and a second decode of the same shapes makes nothing new."""
    target, drafters = micro
    for name, kind in (
        ("dflash", "draft_block"),
        ("eagle3:tree=chain", "draft_tree"),
        ("eagle3", "draft_tree"),
    ):
        torch._dynamo.reset()
        made = []
        with rehearsal():
            engine = Engine(target, mode, autotune=False)
            for rows in (2, 1, 2, 1):  # the batch of 2 ends on one row: row buckets 2 and 1
                mark = LEDGER.mark()
                decode_all(engine, drafters[name], rows)
                made.append(
                    sum(c.kind == kind or c.kind == "cudagraph" and c.shapes.startswith(kind)
                        for c in LEDGER.since(mark))
                )  # fmt: skip
        assert sum(made[:2]) == 2 and made[2:] == [0, 0], (name, made)
