"""Models and exact decoding for orthrus-bench.

    from orthrus_core.checkpoint import load_model
    from orthrus_core.engine import Engine
    from orthrus_core.loop import generate
    from orthrus_core.orthrus import OrthrusDrafter

    model = load_model("chiennv/Orthrus-Qwen3-1.7B", dtype=torch.bfloat16, device="cuda")
    engine = Engine(model, "cudagraph")
    result = generate(engine, OrthrusDrafter(model), prompt_ids, 256)   # plain AR: drafter None
    result.tokens, result.stop_reason, result.accepted, result.tau, result.tpf

The map: model.py (the dual-view model and its KV cache), engine.py (how passes run: eager, compiled, CUDA
graphs), loop.py (the one decode loop over R rows), sampling.py and params.py (distributions, the consensus
rules), tree.py (draft trees), orthrus.py, eagle3.py, dflash.py and prompt_lookup.py (the drafters),
block_diffusion.py (the lossy diffusion decoder), official_loop.py (Orthrus as the official code writes it),
generation.py (what a generation returns), metrics.py (τ and TPF), checkpoint.py, formats.py and tokenizer.py
(checkpoint I/O), micro.py (random micro models), training/ (the trainers).

Nothing is imported here, so the torch-free modules (params, metrics) load without torch.
"""
