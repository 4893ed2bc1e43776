"""`orthrus-bench verify` and `calibrate`: the equivalence verdicts of a run, and their measured error rates."""

from __future__ import annotations

from dataclasses import fields

from harness.verify.config import ARM_KINDS, VERDICTS, CalibrationConfig, VerifyConfig


def register(sub) -> None:
    verify = VerifyConfig()
    p = sub.add_parser("verify", help="lossless-equivalence verdicts of a run against its AR run")
    p.add_argument("run_dir", metavar="RUN", help="results directory written by `orthrus-bench run`")
    p.add_argument("--out", help=f"verdicts file (default: RUN/{VERDICTS})")
    p.add_argument("--alpha", type=float, default=verify.alpha, help="family-wise level (Holm)")
    p.add_argument(
        "--margin", type=float, default=verify.margin, help="accuracy equivalence margin (0.02 = 2 points)"
    )
    p.add_argument("--reference", default=verify.reference, help="the method label to compare against")
    p.add_argument(
        "--tie-paths", type=int, default=verify.tie_paths, help="AR paths per suite for the near-tie study"
    )
    p.add_argument(
        "--t2-samples", type=int, default=verify.t2_samples, help="T2 draws at the fixed context (0: skip T2)"
    )
    p.add_argument("--t2-depth", type=int, default=verify.t2_depth, help="T2 positions per draw")
    p.add_argument(
        "--no-decoders",
        action="store_true",
        help="records only: no greedy re-synchronisation and no T2 (which re-run the methods)",
    )
    p.add_argument("--device", default=verify.device)
    p.add_argument("--seed", type=int, default=verify.seed)
    p.set_defaults(func=cmd_verify)

    calibration = CalibrationConfig()
    p = sub.add_parser("calibrate", help="measure the verification tests' false-positive rate and power")
    p.add_argument(
        "--model",
        help="checkpoint directory (default: the embedded tiny family if it is there, else the random micro "
        "model of the tests)",
    )
    p.add_argument(
        "--micro", action="store_true", help="use the random micro model even if the tiny family exists"
    )
    p.add_argument("--replicates", type=int, default=calibration.replicates, help="A/A replicates")
    p.add_argument(
        "--lossless-replicates",
        type=int,
        default=calibration.lossless_replicates,
        help="replicates of the correct Orthrus decoder",
    )
    p.add_argument(
        "--power-replicates", type=int, default=calibration.power_replicates, help="replicates per mutant"
    )
    p.add_argument(
        "--arms",
        nargs="+",
        choices=ARM_KINDS,
        default=list(ARM_KINDS),
        help="which arms to run (default: all); each gives the replicates it gives in a full calibration",
    )
    p.add_argument(
        "--prompts",
        type=int,
        help="prompts per synthetic run (default: 200 tiny-suite prompts, or 32 random ones for the micro model)",
    )
    p.add_argument("--max-new-tokens", type=int, default=calibration.max_new_tokens)
    p.add_argument("--t2-samples", type=int, default=calibration.t2_samples)
    p.add_argument("--t2-depth", type=int, default=calibration.t2_depth)
    p.add_argument("--block-size", type=int, help="Orthrus block size (default: the model's)")
    p.add_argument("--alpha", type=float, default=calibration.alpha)
    p.add_argument("--seed", type=int, default=calibration.seed)
    p.add_argument("--out", default="reports/calibration", help="writes OUT.md and OUT.json")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the calibration interrupted at OUT.partial.json (same settings), or start one",
    )
    p.set_defaults(func=cmd_calibrate)


def cmd_verify(args) -> int:
    from harness.verify.verdicts import verify_main

    names = [f.name for f in fields(VerifyConfig) if f.name != "decoders"]
    config = VerifyConfig(**{name: getattr(args, name) for name in names}, decoders=not args.no_decoders)
    return verify_main(args.run_dir, config, args.out)


def cmd_calibrate(args) -> int:
    import torch

    from harness.verify.calibrate import calibrate_main

    # Batch-1 decoding of small models is per-operation overhead: extra threads only contend.
    torch.set_num_threads(1)
    config = CalibrationConfig(**{f.name: getattr(args, f.name) for f in fields(CalibrationConfig)})
    return calibrate_main(args.model, args.out, micro=args.micro, config=config, resume=args.resume)
