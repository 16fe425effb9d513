"""detlaunch's launcher: submit, watch, stop and sweep detcore jobs on local, Slurm or Ray backends.

Import-light on purpose: ``launcher list`` must not import torch, yaml or any backend library.
"""
from __future__ import annotations

__version__ = "0.1.0"
