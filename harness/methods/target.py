"""The target model every method decodes for, loaded once with the engine its passes run in:
`load_target(model, dtype, device, engine)`. The engine is settled here and nowhere else; a run records it and
verify rebuilds its decoders on a target loaded with the same one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from harness.options import check_device
from harness.paths import default_model
from orthrus_core.checkpoint import load_model, resolve
from orthrus_core.engine import Engine, check_engine
from orthrus_core.model import OrthrusForCausalLM
from orthrus_core.quantize import check_format, quantize_
from orthrus_core.tokenizer import load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Target:
    """A loaded target model, the local checkpoint directory it came from, its tokenizer (or None) and the
    engine its passes run in."""

    model: OrthrusForCausalLM
    path: str
    tokenizer: object | None
    engine: Engine
    # How engines that spread a model over devices do it (vLLM's tensor_parallel_size, data_parallel_size; the
    # run's --tensor-parallel-size, --data-parallel-size); the project's engine decodes on one device.
    parallel: dict = field(default_factory=dict)
    # The simulated weight quantization of the model (orthrus_core.quantize; None: full precision): the
    # drafters built for this target are quantized the same way (harness/methods/eagle3.py, dflash.py).
    quantize: str | None = None

    @classmethod
    def of(
        cls, model: OrthrusForCausalLM, path: str, tokenizer=None, engine: str = "auto", **options
    ) -> Target:
        """A target around a model already loaded (random weights, a micro model), in `engine`."""
        return cls(model, path, tokenizer, Engine(model, engine, **options))  # the engine checks `engine`


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A dtype name ("bfloat16") or torch dtype, checked against the ones the decoders support."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def load_target(
    model: str | os.PathLike | None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    engine: str = "auto",
    quantize: str | None = None,
) -> Target:
    """The checkpoint `model` (a directory or hub id; None: the embedded tiny family) in `dtype` on `device`,
    its passes run by `engine` (orthrus_core.engine; auto: the fastest exact one the device runs), with its
    tokenizer when it has one; with `quantize` (a format of orthrus_core.quantize) its linear weights quantized
    and dequantized back to `dtype`. Bad input fails here, before anything is loaded."""
    dtype, device = torch_dtype(dtype), check_device(device)
    engine = check_engine(engine, device)
    quantize = check_format(quantize)
    directory = resolve(model) if model else default_model()
    loaded = load_model(directory, dtype=dtype, device=device)
    # Before the engine is built: compiled passes and CUDA graphs see the quantized weights.
    quantize_(loaded, quantize)
    tokenizer = load_tokenizer(directory)
    return Target(loaded, str(directory), tokenizer, Engine(loaded, engine), quantize=quantize)
