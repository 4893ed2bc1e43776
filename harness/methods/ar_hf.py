"""`ar-hf`: transformers' `generate` with its own Qwen3ForCausalLM on the same weights, a second AR reference
(independent attention, cache and sampling code). It shares the target's tensors rather than copying them.

`ar-hf` uses transformers' default DynamicCache, eager. `ar-hf:cache=static` is the strongest off-the-shelf AR:
its StaticCache with the forward compiled by `generate` itself (CompileConfig; CUDA graphs on a GPU through
mode "reduce-overhead", inductor alone on a CPU, where transformers compiles only when told to)."""

from __future__ import annotations

import time

import torch
from transformers import CompileConfig, GenerationConfig, Qwen3Config, Qwen3ForCausalLM
from transformers.generation.streamers import BaseStreamer

from orthrus_core import compiled
from orthrus_core.generation import Clock, GenerationResult, check_prompt, offsets, stop_ids
from orthrus_core.memory import Decoding

from .base import Decoder, GenerateArgs

OPTIONS = {"cache": (str, "dynamic")}
CACHES = ("dynamic", "static")


def compile_config(device: torch.device) -> CompileConfig:
    """CUDA graphs on a GPU; in a rehearsal of one (orthrus_core.rehearsal) its backend, which keeps Dynamo's
    guards (the same graphs compile) and runs on a CPU."""
    cuda = device.type == "cuda"
    config = CompileConfig(
        fullgraph=True, backend=compiled.backend(), mode="reduce-overhead" if cuda else "default"
    )
    config._compile_all_devices = not cuda  # transformers' switch to compile on a CPU too
    return config


class _Timer(BaseStreamer):
    """Records when the first new token is known, when each later one reaches the streamer (perf_counter:
    generate hands the streamer tokens already copied to the host, so no synchronisation is added), and
    forwards new tokens to on_tokens."""

    def __init__(self, clock, on_tokens):
        self.clock, self.on_tokens = clock, on_tokens
        self.first_token_at = None
        self.emitted_at: list[float] = []
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:  # generate() streams the prompt first
            self.prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = self.clock()
        else:
            self.emitted_at.append(time.perf_counter())
        if self.on_tokens:
            self.on_tokens(value.flatten().tolist())

    def end(self):
        pass


class HFDecoder(Decoder):
    def __init__(self, target, label, config, hf_model):
        super().__init__(target, label, config)
        self.hf_model = hf_model

    @torch.inference_mode()
    def _generate(self, args: GenerateArgs) -> GenerationResult:
        model, params, max_new_tokens = self.target.model, args.params, args.max_new_tokens
        device = model.lm_head.weight.device
        prompt = check_prompt(args.prompt_ids, max_new_tokens, device)[None]
        stop = stop_ids(model, args.stop_token_ids)
        sampling = dict(
            do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p
        )
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            use_cache=True,  # explicit: the Orthrus checkpoints' config says use_cache false
            eos_token_id=stop or None,
            pad_token_id=stop[0] if stop else 0,
            **(
                dict(cache_implementation="static", compile_config=compile_config(device))
                if self.config["cache"] == "static"
                else {}
            ),
            **(sampling if not params.greedy else dict(do_sample=False)),
        )
        if args.seed is not None:
            torch.manual_seed(args.seed)  # transformers samples from the global generator
        clock = Clock(device)
        timer = _Timer(clock, args.on_tokens)
        t0 = clock()
        # An explicit mask: without one, generate() masks every prompt token equal to pad_token_id.
        mask = torch.ones_like(prompt)
        out = self.hf_model.generate(prompt, attention_mask=mask, generation_config=config, streamer=timer)
        out = out[0, prompt.shape[1] :]
        end = clock()
        tokens = out.tolist()
        stop_reason = "stop" if tokens and tokens[-1] in stop else "length"
        first = timer.first_token_at or end
        return GenerationResult(
            tokens, stop_reason, [], 1, len(tokens) - 1, 0, first - t0, end - first,
            emit_offsets_s=offsets(timer.emitted_at, first),
        )  # fmt: skip

    def memory_decoding(self) -> Decoding:
        """transformers' generate on its DynamicCache or StaticCache, one prompt at a time."""
        return Decoding(self.label, kind=f"hf-{self.config['cache']}")


def build(target, label, options):
    if options["cache"] not in CACHES:
        raise ValueError(f"ar-hf: cache must be one of {', '.join(CACHES)}, got {options['cache']!r}")
    model = target.model
    config = Qwen3Config.from_dict(model.config.to_dict())
    config.architectures = ["Qwen3ForCausalLM"]
    with torch.device("meta"):
        hf_model = Qwen3ForCausalLM(config)
    state = {k: v for k, v in model.state_dict(keep_vars=True).items() if "_diff" not in k}
    hf_model.load_state_dict(state, strict=True, assign=True)  # the same tensors, no copy
    if config.tie_word_embeddings:
        hf_model.tie_weights()
    # and the same RoPE: the target's frequencies (float32 whatever the dtype, orthrus_core.rope)
    hf_model.model.rotary_emb = model.model.rotary_emb
    return HFDecoder(target, label, options, hf_model.eval())
