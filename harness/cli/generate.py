"""`orthrus-bench generate`: one prompt through any registered method."""

from __future__ import annotations

import sys

from .args import UsageError, add_engine_arg, add_model_args, parse_int_list


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate from one prompt with any method (default: orthrus)")
    add_model_args(p)
    add_engine_arg(p)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="user message, formatted with the model's chat template")
    prompt.add_argument("--prompt-ids", type=parse_int_list, help="raw prompt token ids, e.g. 1,2,3")
    p.add_argument(
        "--method",
        default="orthrus",
        help="a method spec of the registry, e.g. ar, orthrus:block_size=16, eagle3:tree=chain, pld (see "
        "`orthrus-bench methods`)",
    )
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args) -> int:
    from harness.methods import load_target, make_decoder
    from harness.options import check_length, check_positive, check_sampling

    # checked before anything is loaded, as `run` checks them (harness.options)
    params = check_sampling(args.temperature, args.top_k, args.top_p, flags=True)
    check_positive("--max-new-tokens", args.max_new_tokens)
    target = load_target(args.model, args.dtype, args.device, args.engine)
    model, tokenizer = target.model, target.tokenizer
    decoder = make_decoder(args.method, target)
    if args.prompt_ids is not None:
        prompt_ids = args.prompt_ids
    else:
        if tokenizer is None:
            raise UsageError(f"{args.model} has no tokenizer files: pass --prompt-ids instead of --prompt")
        messages = [{"role": "user", "content": args.prompt}]
        prompt_ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
        )
    bad = [t for t in prompt_ids if not 0 <= t < model.config.vocab_size]
    if bad:
        raise UsageError(f"prompt ids {bad[:5]} are outside the vocabulary [0, {model.config.vocab_size})")
    check_length(len(prompt_ids), args.max_new_tokens, model.config.max_position_embeddings)

    stream = None
    if not args.json and tokenizer is not None:

        def stream(new_tokens):
            print(tokenizer.decode(new_tokens, skip_special_tokens=False), end="", flush=True)

    result = decoder.generate(prompt_ids, args.max_new_tokens, params, seed=args.seed, on_tokens=stream)
    text = tokenizer.decode(result.tokens, skip_special_tokens=False) if tokenizer is not None else None
    if args.json:
        from harness.store import json_text

        print(json_text({"method": decoder.label, **result.to_dict(), "text": text}))
        return 0
    if tokenizer is None:
        print(" ".join(map(str, result.tokens)))
    else:
        print()
    tau = f"  tau {result.tau:.2f}" if result.tau is not None else ""
    print(
        f"[{result.new_tokens} tokens, stop: {result.stop_reason}{tau}  TPF {result.tpf or float('nan'):.2f}"
        f"  {result.tokens_per_s:.1f} tok/s  TTFT {result.prefill_s * 1e3:.1f} ms]",
        file=sys.stderr,
    )
    return 0
