"""`orthrus-bench verify` and `calibrate`: the equivalence verdicts of a run, and their measured error rates."""

from __future__ import annotations

from dataclasses import fields

from harness.verify.config import (
    ARM_KINDS,
    VERDICTS,
    CalibrationConfig,
    GreedyCalibrationConfig,
    VerifyConfig,
)

from .args import add_quiet_arg


def register(sub) -> None:
    _register_verify(sub)
    _register_calibrate(sub)


def _register_verify(sub) -> None:
    """`verify`'s parser: the run, the verdicts' levels and sizes, the device and seed."""
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
    add_quiet_arg(p)
    p.set_defaults(func=cmd_verify)


def _register_calibrate(sub) -> None:
    """`calibrate`'s parser: which model and verdict, the calibration's size, the greedy calibration's own
    settings, the level, seed and output."""
    calibration = CalibrationConfig()
    p = sub.add_parser("calibrate", help="measure the verification tests' false-positive rate and power")
    _add_calibrated_args(p)
    _add_calibration_size_args(p)
    _add_greedy_calibration_args(p)
    p.add_argument("--alpha", type=float, default=calibration.alpha)
    p.add_argument("--seed", type=int, default=calibration.seed)
    p.add_argument(
        "--out",
        help="writes OUT.md and OUT.json (default: reports/calibration; with --greedy, "
        "reports/calibration-greedy-DTYPE)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the calibration interrupted at OUT.partial.json (same settings), or start one",
    )
    add_quiet_arg(p, "and the table on stdout (OUT.md still holds it)")
    p.set_defaults(func=cmd_calibrate)


def _add_calibrated_args(p) -> None:
    """What is calibrated: --model, --micro, and --greedy (the greedy verdict instead of the sampling one)."""
    p.add_argument(
        "--model",
        help="checkpoint directory (default: the embedded tiny family if it is there, else the random micro "
        "model of the tests)",
    )
    p.add_argument(
        "--micro", action="store_true", help="use the random micro model even if the tiny family exists"
    )
    p.add_argument(
        "--greedy",
        action="store_true",
        help="calibrate the greedy verdict below float32 (ar-hf vs ar, Orthrus vs ar, a planted logit bias) "
        "instead of the sampling verdict",
    )


def _add_calibration_size_args(p) -> None:
    """How large a calibration is: its replicates, arms, prompts and tokens, T2's size and the block size."""
    calibration, greedy = CalibrationConfig(), GreedyCalibrationConfig()
    p.add_argument(
        "--replicates",
        type=int,
        help=f"A/A replicates (default {calibration.replicates}); with --greedy, replicates of every arm "
        f"(default {greedy.replicates})",
    )
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
        help="prompts per synthetic run (default: 200 tiny-suite prompts, or 32 random ones for the micro model; "
        f"with --greedy, {greedy.prompts}, the GPU CI's run size)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help=f"default {calibration.max_new_tokens}; with --greedy, {greedy.max_new_tokens}",
    )
    p.add_argument("--t2-samples", type=int, default=calibration.t2_samples)
    p.add_argument("--t2-depth", type=int, default=calibration.t2_depth)
    p.add_argument("--block-size", type=int, help="Orthrus block size (default: the model's)")


def _add_greedy_calibration_args(p) -> None:
    """--greedy's own settings: --dtype, --pool, --tie-paths, --bias."""
    greedy = GreedyCalibrationConfig()
    p.add_argument("--dtype", default=greedy.dtype, help="--greedy: the dtype calibrated")
    p.add_argument(
        "--pool",
        type=int,
        default=greedy.pool,
        help="--greedy: prompts decoded once, drawn from by every replicate",
    )
    p.add_argument(
        "--tie-paths",
        type=int,
        default=greedy.tie_paths,
        help="--greedy: AR paths per replicate's benign study",
    )
    p.add_argument("--bias", type=float, default=greedy.bias, help="--greedy: the mutant's logit bias")


def cmd_verify(args) -> int:
    from harness.verify.verdicts import verify_main

    names = [f.name for f in fields(VerifyConfig) if f.name != "decoders"]
    config = VerifyConfig(**{name: getattr(args, name) for name in names}, decoders=not args.no_decoders)
    return verify_main(args.run_dir, config, args.out, quiet=args.quiet)


def cmd_calibrate(args) -> int:
    import torch

    # Batch-1 decoding of small models is per-operation overhead: extra threads only contend.
    torch.set_num_threads(1)
    if args.greedy and (args.micro or args.resume):
        raise ValueError("--greedy takes neither --micro nor --resume: it calibrates a checkpoint, in one go")
    kind = GreedyCalibrationConfig if args.greedy else CalibrationConfig
    given = {f.name: getattr(args, f.name) for f in fields(kind) if getattr(args, f.name, None) is not None}
    config = kind(**given)
    if args.greedy:
        from harness.verify.calibrate_greedy import calibrate_greedy_main

        out = args.out or f"reports/calibration-greedy-{config.dtype}"
        return calibrate_greedy_main(args.model, out, config, quiet=args.quiet)
    from harness.verify.calibrate import calibrate_main

    out = args.out or "reports/calibration"
    return calibrate_main(
        args.model, out, micro=args.micro, config=config, resume=args.resume, quiet=args.quiet
    )
