"""The methods registry: spec parsing and its errors, draft checkpoint resolution, and every method behind the
one interface (greedy identity with AR for the lossless ones, the lossy one marked and visible)."""

import copy
import json
import pickle

import pytest
from conftest import check_emissions, random_model, random_prompts
from test_drafters import random_dflash, random_head

from harness.method_spec import MethodSpec
from harness.methods import (
    BACKEND,
    BATCHED,
    METHODS,
    backend_of,
    is_batched,
    is_greedy_only,
    make_decoder,
    resolve_options,
)
from harness.methods.base import BatchError
from harness.methods.checkpoints import draft_checkpoint
from harness.methods.target import Target
from harness.run.spec import RunSpec
from orthrus_core.checkpoint import save_model
from orthrus_core.dflash import save_dflash
from orthrus_core.eagle3 import save_eagle3
from orthrus_core.params import SamplingParams
from orthrus_core.sampling import AcceptanceRule


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A random tiny family on disk: <dir>/orthrus, <dir>/eagle3, <dir>/dflash."""
    root = tmp_path_factory.mktemp("family")
    model = random_model(seed=0, num_hidden_layers=6)
    save_model(model, root / "orthrus")
    save_eagle3(random_head(model), root / "eagle3")
    save_dflash(random_dflash(model), root / "dflash")
    return Target.of(model, str(root / "orthrus"))


def test_available_and_spec_parsing():
    assert list(METHODS) == ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld", "diffusion"] + [
        "vllm-ar",
        "vllm-pld",
        "vllm-eagle3",
        "vllm-dflash",
        "vllm-orthrus",
    ]  # vLLM's beside the project's engine (tests/test_vllm.py)
    spec = MethodSpec.parse(" eagle3:tree=chain:depth=5")
    assert (spec.name, spec.options) == ("eagle3", {"tree": "chain", "depth": "5"})
    assert (MethodSpec.parse("ar").name, MethodSpec.parse("ar").options) == ("ar", {})
    for bad in ["eagle3:depth", "eagle3:=3", "pld:max_ngram=2:max_ngram=3"]:
        with pytest.raises(ValueError, match="bad method spec"):
            MethodSpec.parse(bad)
    with pytest.raises(TypeError, match="a method spec is a string"):
        MethodSpec.parse(["ar"])
    with pytest.raises(TypeError, match=r"MethodSpec.parse\(text\) makes"):
        MethodSpec("ar")  # it would have no name


def test_a_spec_is_its_canonical_string_wherever_it_goes():
    """What run.json and the records hold of a spec is its text as written (stripped), whatever was parsed."""
    spec = MethodSpec.parse(" eagle3:tree=chain:depth=5 ")
    assert spec == "eagle3:tree=chain:depth=5" and type(str(spec)) is str
    assert {spec: 1}["eagle3:tree=chain:depth=5"] == 1  # the key run.json's methods and the records use
    assert json.dumps({spec: [spec]}) == '{"eagle3:tree=chain:depth=5": ["eagle3:tree=chain:depth=5"]}'
    assert MethodSpec.of(spec) is spec and copy.deepcopy(spec) is spec  # passed on, not parsed again
    again = pickle.loads(pickle.dumps(spec))  # to another process: parsed there
    assert (again, again.name, again.options) == (spec, "eagle3", {"tree": "chain", "depth": "5"})
    assert spec.with_options(depth=3, top_k="4") == "eagle3:tree=chain:depth=3:top_k=4"
    assert spec.options == {"tree": "chain", "depth": "5"}  # unchanged by with_options or a caller's edit
    spec.options["depth"] = "9"
    assert spec.options["depth"] == "5"


def test_resolving_a_spec_types_its_options_and_writes_the_overrides_into_it(family):
    spec = MethodSpec.parse("eagle3:tree=chain:depth=5")
    resolved = resolve_options(spec, top_k=3)
    assert resolved.spec == "eagle3:tree=chain:depth=5:top_k=3" and resolved.module.__name__.endswith(
        "eagle3"
    )
    assert resolved.options == {"tree": "chain", "top_k": 3, "depth": 5, "total_tokens": 60, "draft": None}
    assert resolve_options(spec).spec is spec  # no overrides: the spec as it came
    d = make_decoder(MethodSpec.parse("orthrus"), family, block_size=4)
    assert (d.spec, d.label, d.name, type(d.label)) == (
        "orthrus:block_size=4",
        "orthrus:block_size=4",
        "orthrus",
        str,
    )


def test_a_spec_parsed_where_it_entered_is_passed_on_not_parsed_again(family, monkeypatch):
    """The registry, make_decoder, the decoder and a RunSpec take a parsed spec as it is: once it is parsed,
    nothing parses its text again (the decoder holds the very spec it was given)."""
    specs = [MethodSpec.parse(s) for s in ("ar", "orthrus:block_size=4", "eagle3:tree=chain", "ar-hf")]

    def parse_again(cls, text):
        raise AssertionError(f"{text!r} parsed again")

    monkeypatch.setattr(MethodSpec, "parse", classmethod(parse_again))
    assert [m is s for m, s in zip(RunSpec(methods=specs).methods, specs, strict=True)] == [True] * 4
    for spec in specs:
        decoder = make_decoder(spec, family)
        assert decoder.spec is spec and decoder.name == spec.name, spec
        assert (decoder.batched, decoder.greedy_only) == (spec.name != "ar-hf", False), spec
        assert backend_of(spec) == BACKEND


def test_the_registry_says_which_methods_batch_and_which_decode_greedily_only(family):
    assert BATCHED == [name for name, m in METHODS.items() if m.batched and m.backend == BACKEND]
    assert set(BATCHED) == {"ar", "orthrus", "eagle3", "dflash", "pld"}
    for spec in ["ar", "orthrus", "orthrus:block_size=3", "eagle3", "eagle3:tree=chain", "dflash", "pld"]:
        assert is_batched(spec) and not is_greedy_only(spec), spec
    for spec in ["ar-hf", "ar-hf:cache=static", "diffusion", "orthrus:cache=dynamic"]:
        assert not is_batched(spec), spec
    assert (
        is_greedy_only("diffusion")
        and is_greedy_only("orthrus:cache=dynamic")
        and not is_greedy_only("ar-hf")
    )
    for spec in ["ar", "ar-hf", "orthrus:cache=dynamic", "eagle3", "diffusion"]:
        d = make_decoder(spec, family)
        assert (d.batched, d.greedy_only) == (is_batched(spec), is_greedy_only(spec)), spec
        if not d.batched:
            with pytest.raises(BatchError, match="does not decode in batches"):
                d.decode(lambda: None, rows=2)


def test_spec_errors_name_what_is_known(family):
    with pytest.raises(ValueError, match="unknown method 'medusa'; known methods: ar, ar-hf, orthrus"):
        make_decoder("medusa", family)
    with pytest.raises(ValueError, match=r"unknown option\(s\) depht; known options: tree .*depth"):
        make_decoder("eagle3:depht=3", family)
    with pytest.raises(ValueError, match="option depth must be int, got 'x'"):
        make_decoder("eagle3:depth=x", family)
    with pytest.raises(ValueError, match="tree must be 'dynamic' or 'chain'"):
        make_decoder("eagle3:tree=beam", family)
    with pytest.raises(ValueError, match="top_k >= 1"):
        make_decoder("eagle3:top_k=0", family)
    with pytest.raises(ValueError, match="block size must be >= 2|block_size must be >= 2"):
        make_decoder("orthrus:block_size=1", family)
    with pytest.raises(ValueError, match="temperature"):
        make_decoder("diffusion", family).generate([1, 2], 4, SamplingParams(temperature=1.0))
    with pytest.raises(ValueError, match=r"mask_token_id 100000 is outside the vocabulary \[0, 320\)"):
        make_decoder("diffusion:mask_token_id=100000", family)


def test_missing_draft_names_model_method_and_option(tmp_path):
    target = Target.of(random_model(seed=0), str(tmp_path / "somewhere" / "my-model"))
    with pytest.raises(
        ValueError, match=r"no eagle3 draft checkpoint is known for the model .*my-model.*eagle3:draft="
    ):
        make_decoder("eagle3", target)
    with pytest.raises(ValueError, match=r"no dflash draft .*Qwen3-1.7B.*dflash:draft="):
        draft_checkpoint("dflash", Target(None, "/cache/models--Qwen--Qwen3-1.7B/snapshots/x", None, None))


def test_public_draft_table():
    hub = Target(None, "/hf/hub/models--chiennv--Orthrus-Qwen3-8B/snapshots/0123", None, None)
    assert draft_checkpoint("eagle3", hub) == "AngelSlim/Qwen3-8B_eagle3"
    assert draft_checkpoint("dflash", hub) == "z-lab/Qwen3-8B-DFlash-b16"
    assert (
        draft_checkpoint("eagle3", Target(None, "Qwen/Qwen3-1.7B", None, None))
        == "AngelSlim/Qwen3-1.7B_eagle3"
    )
    assert (
        draft_checkpoint("dflash", Target(None, "Qwen/Qwen3-4B", None, None)) == "z-lab/Qwen3-4B-DFlash-b16"
    )
    assert draft_checkpoint("eagle3", hub, "me/my-head") == "me/my-head"
    with pytest.raises(ValueError):
        draft_checkpoint("eagle3", Target(None, "Qwen/Qwen3-14B", None, None))


LOSSLESS_SPECS = [
    "ar-hf",
    "orthrus",
    "orthrus:block_size=3",
    "pld",
    "pld:max_ngram=1:num_draft_tokens=3",
    "eagle3",
    "eagle3:tree=chain:depth=5",
    "eagle3:total_tokens=16",
    "eagle3:top_k=3:depth=3:total_tokens=9",
    "dflash",
    "dflash:block_size=4",
]


@pytest.mark.parametrize("spec", LOSSLESS_SPECS)
def test_lossless_methods_greedy_identical_to_ar(family, spec):
    ar = make_decoder("ar", family)
    decoder = make_decoder(spec, family)
    assert decoder.lossless and decoder.name == spec.split(":")[0] and decoder.label == spec
    json.dumps(decoder.config)
    for prompt in random_prompts(4, seed=7):
        expected = ar.generate(prompt, 30)
        r = decoder.generate(prompt, 30)
        assert (r.tokens, r.stop_reason) == (expected.tokens, expected.stop_reason)
    free = ar.generate([5, 6], 40, stop_token_ids=[])
    r = decoder.generate([5, 6], 40, stop_token_ids=[free.tokens[20]])
    assert r.tokens == free.tokens[: free.tokens.index(free.tokens[20]) + 1] and r.stop_reason == "stop"


def test_checkpoints_and_config_are_resolved(family):
    d = make_decoder("eagle3:tree=chain:depth=5", family)
    root = family.path.rsplit("/", 1)[0]
    assert d.checkpoints == {"target": family.path, "draft": f"{root}/eagle3"}
    assert d.config == {"tree": "chain", "top_k": 1, "depth": 5, "total_tokens": 6, "draft": f"{root}/eagle3"}
    d = make_decoder("dflash", family, draft=f"{root}/dflash")
    assert (
        d.config == {"block_size": 6, "draft": f"{root}/dflash"}
        and d.checkpoints["draft"] == f"{root}/dflash"
    )
    assert make_decoder("orthrus", family).config == {"block_size": 8, "cache": "static"}
    assert make_decoder("ar", family).checkpoints == {"target": family.path}


def test_diffusion_is_marked_lossy_and_counts(family):
    d = make_decoder("diffusion:threshold=0.5", family)
    assert not d.lossless and d.config["block_size"] == 8 and d.config["sub_block_size"] == 8
    r = d.generate([3, 4, 5], 21, stop_token_ids=[])
    assert len(r.tokens) == 21 and r.ar_forwards == 3 and r.draft_forwards >= 3
    check_emissions(r, 3)  # one per block after the first token's prefill: its tokens come at once


def test_sampling_is_seeded_for_every_method(family):
    for spec in ["ar", "ar-hf", "eagle3", "dflash", "pld", "orthrus"]:
        d = make_decoder(spec, family)
        params = SamplingParams(temperature=1.0, top_k=50)
        a = d.generate([1, 2, 3], 20, params, seed=3, stop_token_ids=[])
        b = d.generate([1, 2, 3], 20, params, seed=3, stop_token_ids=[])
        assert a.tokens == b.tokens and len(a.tokens) == 20, spec


@pytest.mark.parametrize("spec", ["ar-hf", "orthrus:cache=dynamic", "diffusion"])
def test_a_decoder_with_its_own_acceptance_refuses_another_rule(family, spec):
    """Only the decode loop's methods accept by a rule a caller may replace; the others decode by their own, so
    a planted rule would be ignored: they refuse it instead, and take the exact rule (a fresh one is equal)."""
    d = make_decoder(spec, family)
    with pytest.raises(ValueError, match="takes no acceptance rule but the exact one"):
        d.generate([3, 4, 5], 4, stop_token_ids=[], rule=AcceptanceRule(ratio_scale=2.0))
    assert len(d.generate([3, 4, 5], 4, stop_token_ids=[], rule=AcceptanceRule()).tokens) == 4
    loop = make_decoder("orthrus", family)
    planted = loop.generate([3, 4, 5], 4, stop_token_ids=[], rule=AcceptanceRule(ratio_scale=2.0))
    assert len(planted.tokens) == 4


def test_ar_hf_streams_and_times(family):
    chunks = []
    r = make_decoder("ar-hf", family).generate([7, 8], 12, stop_token_ids=[], on_tokens=chunks.append)
    assert sum(chunks, []) == r.tokens and len(r.tokens) == 12
    assert r.prefill_s > 0 and r.decode_s > 0 and r.ar_forwards == 11
    check_emissions(r, 11)  # each token after the first, as generate streams it
