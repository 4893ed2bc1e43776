"""Stage 3, run: suites x methods on a target -> one record per generation in a results directory.

spec.py        RunSpec: what a run is (suites, methods, model, settings), its defaults and its hash
runner.py      `execute(spec, out)`: checks everything, warms up, generates, measures, scores, records
shards.py      `--shard i/n` and `merge`: one run split across processes and joined again
launch.py      launched by torchrun, accelerate or srun: ranks, cost-balanced shards, rank 0's wait for all
telemetry.py   what is measured around each generation: per-forward times, memory, NVML power and energy
provenance.py  what a run was: code, versions, hardware, configuration hashes, weight hashes
seeds.py       the seed of every sampled generation
"""
