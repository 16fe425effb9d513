"""Benchmarks of detcore and the launcher against the plain tools users would otherwise use.

``python -m benchmarks [--quick] [--only NAME ...]`` runs them (see ``benchmarks/README.md``).
This package imports nothing heavy at import time: some of its modules run as small
subprocesses (the plain training loop, the pycocotools side of the evaluation benchmark)
whose start-up must not pay for torch or detcore imports they do not need.
"""
