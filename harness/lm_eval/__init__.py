"""The decoders as an lm-evaluation-harness model (`orthrus`), and offline task configs (tasks/)."""
