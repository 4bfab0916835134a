"""Preparing a grid's inputs before it runs: `python -m harness.prepare.assets` (pin and check the
weight files and data a grid needs) and `python -m harness.prepare.tokenize` (real images to tokens)."""
