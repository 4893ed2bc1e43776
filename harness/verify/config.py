"""The settings of `orthrus-bench verify` and `calibrate`, checked before anything is loaded."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ALPHA = 0.01
DEFAULT_MARGIN = 0.02  # accuracy equivalence margin: 2 points
DEFAULT_T2_SAMPLES = 500  # draws at the fixed context (see reports/calibration.md for the power this buys)
DEFAULT_T2_DEPTH = 4  # new-token positions tested at the fixed context
DEFAULT_TIE_PATHS = 4  # AR greedy paths per suite for the benign-perturbation study
VERDICTS = "verdicts.json"
ARM_KINDS = ("aa", "lossless", "mutants")  # the calibration's arms: A/A, the correct decoder, planted bugs


@dataclass
class VerifyConfig:
    alpha: float = DEFAULT_ALPHA  # family-wise level of every verdict (Holm within a sampling family)
    margin: float = DEFAULT_MARGIN  # accuracy equivalence margin, as a fraction
    reference: str = "ar"  # the method label every other method is held to
    tie_paths: int = DEFAULT_TIE_PATHS
    t2_samples: int = DEFAULT_T2_SAMPLES  # 0: no T2
    t2_depth: int = DEFAULT_T2_DEPTH
    # Re-run the methods (greedy re-synchronisation after a divergence, T2's draws); False: records only.
    decoders: bool = True
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1) (0.02 = 2 points), got {self.margin}")
        for name, least in (("tie_paths", 1), ("t2_samples", 0), ("t2_depth", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")


@dataclass
class CalibrationConfig:
    replicates: int = 200  # A/A replicates
    lossless_replicates: int = 100  # replicates of the correct Orthrus decoder
    power_replicates: int = 20  # replicates per mutant
    # Prompts per synthetic run (each decoder); None: 32 random prompts for the micro model (~8k tokens), 200
    # tiny-suite prompts for a model with a tokenizer (~9k tokens from the tiny family).
    prompts: int | None = None
    max_new_tokens: int = 384
    t2_samples: int = DEFAULT_T2_SAMPLES
    t2_depth: int = DEFAULT_T2_DEPTH
    block_size: int | None = None  # None: the model's
    alpha: float = DEFAULT_ALPHA
    seed: int = 0
    arms: tuple[str, ...] = ARM_KINDS

    def __post_init__(self):
        """Bad settings fail here, before the AR references (minutes of work) are drawn."""
        self.arms = tuple(self.arms)
        counts = ["replicates", "lossless_replicates", "power_replicates", "max_new_tokens", "t2_samples"]
        counts += ["t2_depth"] + [k for k in ("prompts", "block_size") if getattr(self, k) is not None]
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.block_size is not None and self.block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {self.block_size}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        unknown = sorted(set(self.arms) - set(ARM_KINDS))
        if unknown or not self.arms:
            raise ValueError(f"arms must be some of {list(ARM_KINDS)}, got {list(self.arms)}")


@dataclass
class GreedyCalibrationConfig:
    dtype: str = "bfloat16"
    pool: int = 180  # prompts decoded once each; every replicate draws from them
    prompts: int = 20  # per replicate: the GPU CI's run size
    replicates: int = 500
    max_new_tokens: int = 256
    tie_paths: int = DEFAULT_TIE_PATHS
    bias: float = 0.3  # the mutant's logit bias, in logits
    alpha: float = DEFAULT_ALPHA
    seed: int = 0

    def __post_init__(self):
        if self.dtype not in ("bfloat16", "float16"):
            raise ValueError(
                f"dtype must be bfloat16 or float16 (float32 requires identity), got {self.dtype!r}"
            )
        for name in ("pool", "prompts", "replicates", "max_new_tokens", "tie_paths"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prompts > self.pool or self.tie_paths > self.prompts:
            raise ValueError(
                f"need tie_paths <= prompts <= pool, got {self.tie_paths}, {self.prompts}, {self.pool}"
            )
        if not self.bias > 0:
            raise ValueError(f"bias must be > 0 logits, got {self.bias}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
