"""Models and exact decoding for orthrus-bench.

from orthrus_core import load_model, generate, SamplingParams
model = load_model("chiennv/Orthrus-Qwen3-1.7B", dtype=torch.bfloat16, device="cuda")
result = generate(model, prompt_ids, max_new_tokens=256, mode="orthrus")
result.tokens, result.stop_reason, result.accepted, result.tau, result.tpf
"""

from .checkpoint import CheckpointError, load_model, save_model
from .decoding import generate, generate_ar, generate_orthrus
from .generation import GenerationResult
from .model import KVCache, OrthrusForCausalLM
from .sampling import SamplingParams

__all__ = [
    "CheckpointError",
    "GenerationResult",
    "KVCache",
    "OrthrusForCausalLM",
    "SamplingParams",
    "generate",
    "generate_ar",
    "generate_orthrus",
    "load_model",
    "save_model",
]
