"""Stage 1, suites: a declarative suite file (`suites/*.toml`) turned into prompts, generation settings and a
scorer.

    config.py        the suite file format: parsing and validation, with errors that name file, table and key
    data.py          where a suite's records come from: the local data folder, then the Hugging Face hub
    suite.py         `load_suite(name)`: the records as `SuiteItem`s, rendered with the chat template, scored
    context_fill.py  prompts filled to an exact token count (the long-context sweep)
    conversation.py  one item through one decoder, turn by turn (multi-turn items feed answers back)
"""

from .config import GenerationSettings, SuiteError
from .suite import Suite, SuiteItem, list_suites, load_suite

__all__ = ["GenerationSettings", "Suite", "SuiteError", "SuiteItem", "list_suites", "load_suite"]
