"""Inference API: build a detector from a checkpoint and run it on images."""
from __future__ import annotations

from detcore.apis.inference import async_inference_detector, inference_detector, init_detector, show_result

__all__ = ["init_detector", "inference_detector", "async_inference_detector", "show_result"]
