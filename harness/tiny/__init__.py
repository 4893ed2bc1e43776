"""The shipped tiny family (models/tiny/): `orthrus-bench train-tiny` trains it (orthrus_core.training),
measures it on the tiny suites and writes it with its model card; the drafts stage adds its EAGLE-3 head and
DFlash drafter."""
