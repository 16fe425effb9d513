"""detcore: the detection library every detlaunch job executes."""
from __future__ import annotations

__version__ = "0.1.0"
