"""Trainers: the tiny family's tokenizer, base model and diffusion view (tiny.py, on the generated corpus of
tiny_corpus.py), and EAGLE-3 heads and DFlash drafters for a frozen target (eagle3.py, dflash.py, on one
loop: optimize.py)."""
