"""Stage 4, verify: is a method's output the AR model's? Verdicts per method, suite and temperature.

config.py            VerifyConfig: the verdicts' settings (alpha, margin, reference, T2 size)
verdicts.py          `verify_run(run_dir)`: every verdict of a run; `verify_main` writes verdicts.json
fp32_reference.py    the target teacher-forced in float32: the distributions outputs are tested against
greedy.py            T = 0: token identity per prompt, forensics, the greedy verdict
sampling_verdict.py  T > 0: the Holm-corrected family of distribution tests (T1 to T5)
forensics.py         greedy divergences: logit gap, rank, near-tie vs algorithmic, AR-vs-AR benign rate
equivalence.py       the statistical tests themselves (PIT, G-tests, surprisal, two-sample, audit, accuracy)
calibrate.py         `orthrus-bench calibrate`: the sampling verdict's own false-positive rate and power
"""
