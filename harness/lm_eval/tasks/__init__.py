"""lm-eval task configs that read the data folder instead of the Hugging Face Hub (see harness.lm_eval.adapter)."""
