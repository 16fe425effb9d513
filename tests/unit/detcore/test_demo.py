"""The video and webcam demos, on a generated video file and a camera index that does not exist."""
from __future__ import annotations

from pathlib import Path

import cv2  # opencv-python-headless: the video extra, installed by .ci/run
import numpy as np

from detcore.tools.cli import main as detcore_main
from tests.unit.detcore.test_inference import checkpoint  # noqa: F401  (fixture)


def _write_video(path: Path, frames: int = 5) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (96, 64))
    for i in range(frames):
        frame = np.full((64, 96, 3), 40 * i, np.uint8)
        cv2.rectangle(frame, (10, 10), (40, 40), (255, 255, 255), -1)
        writer.write(frame)
    writer.release()


def test_video_demo_writes_an_annotated_video(tmp_path: Path, checkpoint: Path, capsys) -> None:  # noqa: F811
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    _write_video(src)
    assert detcore_main(["demo", "video", "none", str(checkpoint), "--input", str(src), "--out", str(out)]) == 0
    assert "processed 5 frame(s)" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(out))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 5


def test_webcam_demo_exits_cleanly_without_a_camera(checkpoint: Path, capsys) -> None:  # noqa: F811
    assert detcore_main(["demo", "webcam", "none", str(checkpoint), "--camera", "57"]) == 0
    assert "no camera at index 57" in capsys.readouterr().out
