"""`orthrus-bench generate`: one prompt through any registered method."""

from __future__ import annotations

import json
import re
import sys

from .args import UsageError, add_engine_arg, add_model_args, parse_int_list, parse_method

# Printed (on stderr) when generate runs the embedded default: what the tiny family can answer, which is only
# what its corpus taught it (orthrus_core/training/tiny_corpus.py; the model card, models/tiny/orthrus/README.md).
TINY_FAMILY_NOTE = (
    "note: no --model, so this is the embedded tiny family (models/tiny/orthrus), which knows only what it was "
    'trained on: arithmetic word problems and expressions ending "Please reason step '
    'by step, and put your final answer within \\boxed{}." (often wrong), one-line Python functions ("Write a '
    'python function add_3 that returns x plus 3.") and short templated chat (the capital of a country, the '
    'sound an animal makes, N tips for an activity, a greeting); e.g. --prompt "What is the capital of '
    'France?". Anything else gets one of those back; pass --model for a real checkpoint.'
)


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate from one prompt with any method (default: orthrus)")
    add_model_args(p)
    add_engine_arg(p)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="user message, formatted with the model's chat template")
    prompt.add_argument("--prompt-ids", type=parse_int_list, help="raw prompt token ids, e.g. 1,2,3")
    prompt.add_argument(
        "--prompt-file",
        metavar="PATH",
        help="the user message read from a UTF-8 text file (- = stdin; trailing newlines dropped), for a "
        "prompt too long for the command line",
    )
    prompt.add_argument(
        "--prompt-ids-file",
        metavar="PATH",
        help="raw prompt token ids read from a file (- = stdin): separated by commas and/or whitespace, or a "
        "JSON list, e.g. [1, 2, 3]",
    )
    p.add_argument(
        "--method",
        type=parse_method,
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
    if args.prompt_file is not None:
        args.prompt = read_prompt_file("--prompt-file", args.prompt_file).rstrip("\r\n")
    if args.prompt_ids_file is not None:
        args.prompt_ids = parse_ids_text(
            read_prompt_file("--prompt-ids-file", args.prompt_ids_file), args.prompt_ids_file
        )
    if args.model is None:
        print(TINY_FAMILY_NOTE, file=sys.stderr)
    target = load_target(args.model, args.dtype, args.device, args.engine)
    model, tokenizer = target.model, target.tokenizer
    decoder = make_decoder(args.method, target)
    if args.prompt_ids is not None:
        prompt_ids = args.prompt_ids
    else:
        if tokenizer is None:
            given = "--prompt-file" if args.prompt_file is not None else "--prompt"
            raise UsageError(
                f"{args.model} has no tokenizer files: pass --prompt-ids or --prompt-ids-file instead of {given}"
            )
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
        from orthrus_core.jsonfile import json_text

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


def read_prompt_file(option: str, path: str) -> str:
    """The text of `path` (`-`: standard input), read as UTF-8; a file that cannot be read is a usage error."""
    if path == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        where = "standard input"
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise UsageError(f"{option} {path}: no such file") from None
        except IsADirectoryError:
            raise UsageError(f"{option} {path}: a directory, not a file") from None
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
        where = path
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{option} {where}: not UTF-8 text (byte {exc.start})") from None


def parse_ids_text(text: str, path: str) -> list[int]:
    """Token ids from the text of --prompt-ids-file: a JSON list of integers, or integers separated by commas
    and/or whitespace. An empty file, an empty item (`1,,2`, a trailing comma) or anything not an integer is
    refused, naming the item and its position."""
    where = "standard input" if path == "-" else path
    stripped = text.strip()
    if not stripped:
        raise UsageError(f"--prompt-ids-file {where}: empty; give token ids, e.g. 1 2 3, 1,2,3 or [1, 2, 3]")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--prompt-ids-file {where}: not a valid JSON list ({exc})") from None
        for i, item in enumerate(items, 1):
            if type(item) is not int:
                raise UsageError(
                    f"--prompt-ids-file {where}: item {i} of the JSON list, {json.dumps(item)}, is not an "
                    "integer token id"
                )
        if not items:
            raise UsageError(f"--prompt-ids-file {where}: an empty JSON list; give one token id or more")
        return items
    ids = []
    for i, item in enumerate(re.split(r"\s*,\s*|\s+", stripped), 1):
        if not item:
            raise UsageError(
                f"--prompt-ids-file {where}: item {i} is empty (two commas in a row, or a trailing comma); "
                "separate token ids by single commas and/or whitespace"
            )
        try:
            ids.append(int(item))
        except ValueError:
            raise UsageError(
                f"--prompt-ids-file {where}: item {i}, {item[:40]!r}, is not an integer token id"
            ) from None
    return ids
