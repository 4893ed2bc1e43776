"""orthrus-bench: everything around decoding (methods, suites, runner, measurement, verdicts, reports, CLI)."""
