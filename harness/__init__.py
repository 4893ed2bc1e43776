"""orthrus-bench: everything around decoding, one subpackage per stage of the pipeline.

    suites/   1. suite files -> prompts, generation settings, scorers
    methods/  2. every decoder behind one interface, on a target loaded once
    run/      3. suites x methods -> records, with telemetry, provenance, shards
    verify/   4. records -> equivalence verdicts against the AR run
    report/   5. records and verdicts -> tables, figures, the regression gate, trends

records.py (the record schema) and store.py (the results directory) are what stages 3 to 5 pass on; scoring/
scores answers (code in its sandbox); bench/ and tiny/ benchmark the engine and train the tiny family;
lm_eval/ exposes the decoders to lm-evaluation-harness; cli/ is the `orthrus-bench` command.
"""
