"""The project's decoders as an lm-evaluation-harness model (lm-eval 0.4.13), registered as `orthrus`.

    orthrus-lm-eval --model orthrus \\
        --model_args pretrained=chiennv/Orthrus-Qwen3-8B,method=orthrus,dtype=bfloat16,device=cuda \\
        --tasks minerva_math500,gsm8k --batch_size 16

takes lm_eval's own command line (`python -m harness.lm_eval` is the same entry point): it registers the model, which
plain `lm_eval` cannot know about because lm-eval discovers no model plugins, and always puts the local task
configs (harness/lm_eval/tasks) on the include path ahead of the stock ones, so `minerva_math500` and `gsm8k`
read the data folder ($ORTHRUS_DATA_DIR) instead of the Hugging Face Hub (and `tiny_math` is the tiny-math
suite's held-out problems, for the embedded tiny family with --apply_chat_template); a `--include_path` of the
user's is added after them (its configs win over ours and the stock ones of the same name). In Python, pass
`OrthrusLM(...)` and `task_manager()` to `lm_eval.simple_evaluate`.

`generate_until` runs the chosen decoder: `method` is a method spec of the registry (harness.methods), as
`orthrus-bench run` takes it, e.g. `orthrus`, `ar`, `eagle3:tree=chain` (colons, so no commas, inside
model_args). It generates to EOS or max_gen_toks, then lm-eval's stop strings cut the text (the decoders
stop on tokens, not strings). `loglikelihood` and `loglikelihood_rolling` use the AR view, one request at a
time: a lossless decoder does not change the model's distribution, so only generation needs the accelerated
path.

Model arguments (anything else is refused, with this list):
- pretrained: checkpoint directory or hub id; default: the embedded tiny family.
- method: a method spec (default orthrus); dtype (default float32).
- device: cpu, cuda or cuda:N (`--device` or model_args; not both with different values). A device that is
  not on this machine is an error, as in `orthrus-bench run`: nothing falls back to the CPU. Without one
  (`auto`, what orthrus-lm-eval passes when neither `--device` nor model_args names a device, in place of
  lm-eval's unasked-for cuda:0): cuda when available, else cpu.
- batch_size (`--batch_size` or model_args; model_args win over lm-eval's default 1): B > 1 decodes the
  requests of a `generate_until` call that share their sampling settings B rows at a time through the
  method's decode loop (continuous batching, `Decoder.decode`); each row keeps its own seeded generator, so
  the generations are those of batch size 1. Only the batched methods (harness.methods.BATCHED) take B > 1.
  `auto` is refused (the adapter does not search for the largest batch that fits: give a number), and so is
  max_batch_size, which only bounds that search.
- seed (default 0): each generation's own seed is hashed from it, the task, the document and the repeat, as
  `orthrus-bench run` does (harness.run.seeds).
- max_gen_toks (default 256, lm-eval's own; raise it for chain-of-thought tasks); think (Qwen3 thinking mode
  in chat templates, default off as in the paper).
- trust_remote_code: what lm-eval's `--trust_remote_code` adds for the datasets; accepted, and changes
  nothing here (the project's loader runs no remote code).

Generation kwargs: until, do_sample, temperature, top_k, top_p and max_gen_toks (or lm-eval's aliases of it);
others are refused. They are checked as a run's options are (harness.options): a bad temperature, top_k or
top_p, or max_gen_toks below 1, is an `OptionError`; orthrus-lm-eval prints it and exits 2.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string

from harness.options import OptionError, check_device, check_memory, check_positive, check_sampling
from harness.run.seeds import generation_seed
from orthrus_core.loop import Request
from orthrus_core.params import SamplingParams

TASKS_DIR = Path(__file__).with_name("tasks")
AUTO_DEVICE = "auto"  # no device asked for: cuda when available, else cpu
# Generation kwargs the decoders honour (normalize_gen_kwargs folds max_new_tokens and the like into max_gen_toks).
GEN_KWARGS = ("until", "do_sample", "temperature", "top_k", "top_p", "max_gen_toks")
# What lm-eval passes every model besides model_args (simple_evaluate's additional_config), with the value that
# means "the user did not ask": the command line always passes batch_size 1, and orthrus-lm-eval passes the
# device `auto` where lm-eval would pass cuda:0 (see main).
LM_EVAL_DEFAULTS = {"batch_size": 1, "max_batch_size": None, "device": AUTO_DEVICE}


@dataclass
class _Job:
    """One generate_until request, its options checked: what goes to the decoder and what cuts its text."""

    context: str
    gen_kwargs: dict
    prompt: list[int]
    max_new: int
    params: SamplingParams
    seed: int
    until: list[str]


@register_model("orthrus")
class OrthrusLM(LM):
    def __init__(
        self,
        pretrained: str | None = None,
        method: str = "orthrus",
        dtype: str = "float32",
        device: str | None = None,
        seed: int = 0,
        max_gen_toks: int = 256,
        think: bool = False,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        **unknown,
    ):
        super().__init__()
        from harness.methods import load_target, make_decoder

        self.batch_size, device = _check_model_args(
            pretrained=pretrained, method=method, dtype=dtype, device=device, seed=seed, max_gen_toks=max_gen_toks,
            think=think, batch_size=batch_size, max_batch_size=max_batch_size,
            trust_remote_code=trust_remote_code, unknown=unknown,
        )  # fmt: skip
        target = load_target(pretrained, dtype, device)
        if target.tokenizer is None:
            raise ValueError(f"{target.path} has no tokenizer files; lm-eval tasks are text")
        self.directory, self.model, self.tokenizer = Path(target.path), target.model, target.tokenizer
        self.method, self.seed = method, seed
        self.max_gen_toks, self.think = max_gen_toks, think
        self.max_length = self.model.config.max_position_embeddings
        self._device = self.model.lm_head.weight.device  # LM.device reads it
        self.decoder = make_decoder(method, target)
        self.generations: list = []  # every GenerationResult, for τ / TPF / tokens/s after a run

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> OrthrusLM:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> OrthrusLM:
        """model_args merged with what lm-eval passes every model (batch_size, max_batch_size, device): a value
        given both ways must agree, except lm-eval's defaults, which model_args override (lm-eval's own merge
        passes both, a TypeError)."""
        return cls(**merge_model_args(arg_dict, additional_config))

    # ------------------------------------------------------------------------------------- generation

    def _job(self, position: int, request, repeats: Counter) -> _Job:
        context, gen_kwargs = request.args
        item = f"{request.task_name}/{request.doc_id}" if request.doc_id is not None else str(position)
        sample = repeats[item]
        repeats[item] += 1
        unknown = sorted(
            set(gen_kwargs) - {*GEN_KWARGS, "max_new_tokens", "max_tokens", "max_completion_tokens"}
        )
        if unknown:
            raise OptionError(
                f"gen_kwargs {', '.join(unknown)}: not supported by the orthrus model; it takes "
                f"{', '.join(GEN_KWARGS)}"
            )
        options = normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self.max_gen_toks)
        max_new = check_positive("gen_kwargs max_gen_toks", options["max_gen_toks"])
        if max_new >= self.max_length:
            raise OptionError(
                f"gen_kwargs max_gen_toks {max_new} leaves no room for a prompt in the model's "
                f"{self.max_length} positions; lower it to {self.max_length - 1} or less"
            )
        top_k = _whole(_number("top_k", options.get("top_k"), 0))
        top_p = float(_number("top_p", options.get("top_p"), 1.0))
        try:
            params = check_sampling(options["temperature"], top_k, top_p)
        except OptionError as exc:
            raise OptionError(f"gen_kwargs {exc}") from None
        try:
            self.decoder.check_params(params)  # greedy-only methods
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        prompt = self.tok_encode(context)[-(self.max_length - max_new) :]  # keep the end, as HFLM does
        seed = generation_seed(self.seed, item, sample, 0)
        return _Job(context, gen_kwargs, prompt, max_new, params, seed, options["until"])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        repeats: Counter[str] = Counter()  # lm-eval repeats a request by listing it again
        jobs = [self._job(position, request, repeats) for position, request in enumerate(requests)]
        if jobs:  # the method's memory plan for the longest request, in every row, fits (as `run` checks)
            from harness.methods.plan import plan_loaded
            from orthrus_core.memory import sampling_copies

            plans = plan_loaded(
                self.decoder.target,
                [self.decoder],
                context=max(len(job.prompt) + job.max_new for job in jobs),
                rows=min(self.batch_size, len(jobs)),
                prompt_tokens=max(len(job.prompt) for job in jobs),
                sampling=max((job.params for job in jobs), key=sampling_copies),
            )
            check_memory(
                plans,
                str(self._device),
                fix="lower max_gen_toks or batch_size, use a smaller dtype, or a device with more memory",
            )
        results: list = [None] * len(jobs)
        bar = tqdm(total=len(jobs), disable=disable_tqdm, desc=f"generate ({self.method})")
        if self.batch_size == 1:
            for i, job in enumerate(jobs):
                results[i] = self.decoder.generate(job.prompt, job.max_new, job.params, seed=job.seed)
                bar.update(1)
        else:
            # One decode per sampling setting (the loop samples every row alike); each request brings its own
            # length limit and its own seeded generator, so a row decodes as it would alone.
            by_params: dict[SamplingParams, list[int]] = defaultdict(list)
            for i, job in enumerate(jobs):
                by_params[job.params].append(i)
            for params, indices in by_params.items():
                queue = deque(
                    Request(
                        jobs[i].prompt, jobs[i].max_new, None, self.decoder.generator(jobs[i].seed), key=i
                    )
                    for i in indices
                )
                finished = self.decoder.decode(
                    lambda queue=queue: queue.popleft() if queue else None,
                    params,
                    rows=self.batch_size,
                    continuous=True,
                )
                for done in finished:
                    results[done.request.key] = done.result
                    bar.update(1)
        bar.close()
        outputs = []
        for job, result in zip(jobs, results, strict=True):
            self.generations.append(result)
            text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
            for stop in job.until:  # stop strings end the answer; generation stops at EOS or length
                text = text.split(stop, 1)[0]
            outputs.append(text)
            self.cache_hook.add_partial("generate_until", (job.context, job.gen_kwargs), text)
        return outputs

    # ------------------------------------------------------------------------- likelihoods (AR view)

    def tok_encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    @property
    def prefix_token_id(self) -> int:
        """What an empty context conditions on: the end-of-text token, as lm-eval's HF model does."""
        return self.tokenizer.convert_tokens_to_ids(self.tokenizer.pad_token or self.tokenizer.eos_token)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # Trailing spaces of the context belong to the continuation's first token (lm-eval's convention).
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tok_encode(context + continuation)
        context_ids = self.tok_encode(context)
        return context_ids, whole[len(context_ids) :]

    @torch.inference_mode()
    def _score(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """log p(continuation | context) under the AR view, and whether greedy decoding would produce it."""
        ids = (context_ids + continuation_ids)[-(self.max_length + 1) :]
        inputs = torch.tensor([ids[:-1]], device=self._device)
        cache = self.model.new_cache(inputs.shape[1])
        logits = self.model(inputs, 0, cache)[0, -len(continuation_ids) :].float()
        targets = torch.tensor(continuation_ids, device=self._device)
        logprobs = torch.log_softmax(logits, dim=-1)
        total = logprobs.gather(1, targets[:, None]).sum().item()
        return total, bool((logits.argmax(-1) == targets).all())

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        results = []
        for request in requests:
            context, continuation = request.args
            if context:
                context_ids, continuation_ids = self._encode_pair(context, continuation)
            else:
                context_ids, continuation_ids = [self.prefix_token_id], self.tok_encode(continuation)
            results.append(self._score(context_ids, continuation_ids))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), results[-1])
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for request in requests:
            (text,) = request.args
            windows = map(
                make_disjoint_window,
                get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1
                ),
            )
            results.append(sum(self._score(context, predicted)[0] for context, predicted in windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), results[-1])
        return results

    # ------------------------------------------------------------------------------------ chat format

    @property
    def tokenizer_name(self) -> str:
        return str(self.directory).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=self.think,
        )


def model_arg_names() -> list[str]:
    """The model_args the orthrus model takes (its constructor's parameters)."""
    parameters = inspect.signature(OrthrusLM.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]


def merge_model_args(model_args: dict, additional_config: dict | None) -> dict:
    """model_args merged with what lm-eval passes every model (batch_size, max_batch_size, device): a value given
    both ways must agree, except lm-eval's defaults, which model_args override (lm-eval's own merge passes both
    to the constructor: a TypeError)."""
    merged = dict(model_args)
    for key, value in (additional_config or {}).items():
        if value is None:
            continue
        if key not in merged or str(value) == str(LM_EVAL_DEFAULTS.get(key)):
            merged.setdefault(key, value)
        elif str(merged[key]) != str(value):
            raise OptionError(
                f"{key} given twice: {key}={merged[key]} in model_args and {value} from lm-eval (--{key}); "
                "give it once"
            )
    return merged


def check_model_args(model_args: dict) -> tuple[int, str]:
    """What the orthrus model would check of these model_args before loading anything (OptionError): -> the
    batch size and the device it would run on. orthrus-lm-eval checks them before lm-eval indexes its tasks."""
    bound = inspect.signature(OrthrusLM.__init__).bind(None, **model_args)
    bound.apply_defaults()
    arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
    return _check_model_args(**arguments)


def _check_model_args(
    *, pretrained, method, dtype, device, seed, max_gen_toks, think, batch_size, max_batch_size,
    trust_remote_code, unknown,
) -> tuple[int, str]:  # fmt: skip
    from harness.methods import BATCHED, is_batched
    from harness.methods.target import torch_dtype

    if unknown:
        raise OptionError(
            f"model_args {', '.join(sorted(unknown))}: unknown to the orthrus model; "
            f"it takes {', '.join(model_arg_names())}"
        )
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise OptionError(f"model_args pretrained must be a directory or hub id, got {pretrained!r}")
    try:
        batched = is_batched(method)  # an unknown method or a malformed spec fails here
        torch_dtype(dtype)
    except (TypeError, ValueError, AttributeError) as exc:
        raise OptionError(f"model_args: {exc}") from None
    rows = _batch_size(batch_size)
    if max_batch_size is not None:
        raise OptionError(
            f"max_batch_size {max_batch_size}: it bounds lm-eval's batch_size=auto search, which the orthrus "
            "model does not do; give batch_size=N instead"
        )
    if rows > 1 and not batched:
        raise OptionError(
            f"batch_size {rows}: {method} does not decode in batches; the batched methods are "
            f"{', '.join(BATCHED)} (or use batch_size 1)"
        )
    check_positive("model_args seed", seed, minimum=0)
    check_positive("model_args max_gen_toks", max_gen_toks)
    for name, value in (("think", think), ("trust_remote_code", trust_remote_code)):
        if not isinstance(value, bool):
            raise OptionError(f"model_args {name} must be true or false, got {value!r}")
    if device is None or device == AUTO_DEVICE:
        return rows, "cuda" if torch.cuda.is_available() else "cpu"
    return rows, check_device(device)  # one that is not here is an error, as in `orthrus-bench run`


def _batch_size(value) -> int:
    """lm-eval's batch_size (an int, or the command line's string) as a number of rows; `auto` is refused."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, str) and value.startswith("auto"):
        raise OptionError(
            f"batch_size {value}: the orthrus model does not search for the largest batch that fits; give a "
            "number of rows (batch_size=N), e.g. 1, or 16 on a GPU"
        )
    return check_positive("batch_size", value)


def _number(name: str, value, default):
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"gen_kwargs {name} must be a number, got {value!r}")
    return value


def _whole(value):
    """An integral float (top_k=50.0) as an int; anything else as it is, for check_sampling to judge."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def task_manager(include_defaults: bool = True, include_path=None):
    """lm-eval's task index with the local, offline configs taking precedence over the stock tasks (or, with
    include_defaults=False, alone: indexing lm-eval's thousands of stock configs takes seconds). Paths in
    `include_path` (one, or a list) come after the local configs: theirs win for the same task name."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_paths(include_path), include_defaults=include_defaults)


def include_paths(user) -> list[str]:
    """The local task configs, then the user's include path(s) (lm-eval lets later paths override)."""
    extra = [] if not user else [user] if isinstance(user, (str, Path)) else list(user)
    return [str(TASKS_DIR), *(str(p) for p in extra if str(p) != str(TASKS_DIR))]


def _prepare(args) -> None:
    """What orthrus-lm-eval changes in lm_eval's parsed command line: the local task configs always on the
    include path (every command that has one: run, ls, validate), and for `--model orthrus` the device
    `auto` where the user named none (lm-eval would pass cuda:0, which on a machine without CUDA is an error
    here, not a silent fall back to the CPU)."""
    config = {}
    if getattr(args, "config", None):
        from lm_eval.config.evaluate_config import EvaluatorConfig

        config = EvaluatorConfig.load_yaml_config(args.config)
    if hasattr(args, "include_path"):
        args.include_path = include_paths(args.include_path or config.get("include_path"))
    if getattr(args, "command", None) == "run" and (args.model or config.get("model")) == "orthrus":
        if not args.device and not config.get("device"):
            args.device = AUTO_DEVICE
        if not config:  # fail before lm-eval indexes its tasks (seconds), as the model itself will
            given = {"batch_size": getattr(args, "batch_size", None), "max_batch_size": args.max_batch_size}
            check_model_args(merge_model_args(args.model_args or {}, {**given, "device": args.device}))


def main(argv: list[str] | None = None) -> None:
    """lm_eval's command line (lm_eval.__main__.cli_evaluate) with this model registered and the local tasks
    included, options taken only as spelled (no prefix matching). An option the orthrus model refuses
    (OptionError) is printed, and exits 2. `orthrus-lm-eval` enters through harness.lm_eval.main, which
    checks first that lm-eval is installed."""
    from lm_eval._cli import HarnessCLI
    from lm_eval.utils import setup_logging

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    setup_logging()
    parser = HarnessCLI()
    # No prefix matching, as in orthrus-bench: `--task gsm8k` is refused, not read as `--tasks gsm8k`. lm-eval
    # 0.4.13's HarnessCLI keeps its parser and subcommands' parsers here.
    subparsers = getattr(getattr(parser, "_subparsers", None), "choices", {})
    for p in (getattr(parser, "_parser", None), *subparsers.values()):
        if p is not None:
            p.allow_abbrev = False
    args = parser.parse_args()
    try:
        _prepare(args)
        parser.execute(args)
    except OptionError as exc:
        print(f"orthrus-lm-eval: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
