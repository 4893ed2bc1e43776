"""The project's decoders as an lm-evaluation-harness model (lm-eval 0.4.13), registered as `orthrus`.

    orthrus-lm-eval --model orthrus \\
        --model_args pretrained=chiennv/Orthrus-Qwen3-8B,method=orthrus,dtype=bfloat16,device=cuda \\
        --tasks minerva_math500,gsm8k

takes lm_eval's own command line (`python -m harness.lm_eval` is the same entry point): it registers the model, which
plain `lm_eval` cannot know about because lm-eval discovers no model plugins, and puts the local task
configs (harness/lm_eval/tasks) on the include path ahead of the stock ones, so `minerva_math500` and
`gsm8k` read the data folder ($ORTHRUS_DATA_DIR) instead of the Hugging Face Hub. In Python, pass
`OrthrusLM(...)` and `task_manager()` to `lm_eval.simple_evaluate`.

`generate_until` runs the chosen decoder: `method` is a method spec of the registry (harness.methods), as
`orthrus-bench run` takes it, e.g. `orthrus`, `ar`, `eagle3:tree=chain` (colons, so no commas, inside
model_args). It generates to EOS or max_gen_toks, then lm-eval's stop strings cut the text (the decoders
stop on tokens, not strings). `loglikelihood` and `loglikelihood_rolling` use the AR view: a lossless decoder
does not change the model's distribution, so only generation needs the accelerated path. Model arguments:
pretrained (checkpoint directory or hub id; default: the embedded tiny family), method, dtype, device
(default: cuda when available, else cpu), seed (each generation's own seed is hashed from it, the task, the
document and the repeat, as `orthrus-bench run` does: harness.run.seeds), max_gen_toks (default 256,
lm-eval's own; raise it for chain-of-thought tasks), think (Qwen3 thinking mode in chat templates, default
off as in the paper).
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from harness.run.seeds import generation_seed
from orthrus_core.params import SamplingParams

logger = logging.getLogger(__name__)
TASKS_DIR = Path(__file__).with_name("tasks")


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
        **unused,  # lm-eval passes max_batch_size and the like to every model
    ):
        super().__init__()
        from harness.methods import load_target, make_decoder

        if str(batch_size) not in ("1", "auto"):
            raise ValueError(f"the decoders run batch size 1 only, not {batch_size}")
        # lm-eval's command line passes cuda:0 unless told otherwise; like its HF model, use the CPU when no GPU.
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            if device is not None:
                logger.warning("%s is not available; running on the CPU", device)
            device = "cuda" if torch.cuda.is_available() else "cpu"
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

    # ------------------------------------------------------------------------------------- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        outputs = []
        repeats: Counter[str] = Counter()  # lm-eval repeats a request by listing it again
        for position, request in enumerate(
            tqdm(requests, disable=disable_tqdm, desc=f"generate ({self.method})")
        ):
            context, gen_kwargs = request.args
            item = f"{request.task_name}/{request.doc_id}" if request.doc_id is not None else str(position)
            sample = repeats[item]
            repeats[item] += 1
            options = normalize_gen_kwargs(gen_kwargs, default_max_gen_toks=self.max_gen_toks)
            max_new = options["max_gen_toks"]
            prompt = self.tok_encode(context)[-(self.max_length - max_new) :]  # keep the end, as HFLM does
            params = SamplingParams(
                float(options["temperature"]),
                int(options.get("top_k") or 0),
                float(options.get("top_p") or 1.0),
            )
            result = self.decoder.generate(
                prompt, max_new, params, seed=generation_seed(self.seed, item, sample, 0)
            )
            self.generations.append(result)
            text = self.tokenizer.decode(result.tokens, skip_special_tokens=True)
            for stop in options["until"]:  # stop strings end the answer; generation stops at EOS or length
                text = text.split(stop, 1)[0]
            outputs.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
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


def task_manager(include_defaults: bool = True):
    """lm-eval's task index with the local, offline configs taking precedence over the stock tasks (or, with
    include_defaults=False, alone: indexing lm-eval's thousands of stock configs takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def main(argv: list[str] | None = None) -> None:
    """lm_eval's command line with this model registered and the local tasks included."""
    from lm_eval.__main__ import cli_evaluate

    argv = list(sys.argv[1:] if argv is None else argv)
    evaluating = not argv or argv[0] not in ("ls", "validate")  # `run`, or the legacy form without one
    if evaluating and "--include_path" not in argv:
        argv += ["--include_path", str(TASKS_DIR)]
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
