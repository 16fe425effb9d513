"""``detcore demo video|webcam``: annotate a video file, or a camera stream, frame by frame (OpenCV)."""
from __future__ import annotations

import argparse
import logging

from detcore.errors import DataError

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("source", choices=["video", "webcam"])
    p.add_argument("config", help="YAML config, or 'none' to use the checkpoint's")
    p.add_argument("checkpoint")
    p.add_argument("--input", help="video file (video) ")
    p.add_argument("--camera", type=int, default=0, help="camera index (webcam, default 0)")
    p.add_argument("--out", help="annotated video to write (.mp4); required for video")
    p.add_argument("--score-thr", type=float, default=0.3)
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: all)")
    p.add_argument("--device", default="cpu")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise DataError("the video and webcam demos need OpenCV: pip install 'detlaunch[video]'") from None
    return cv2


def run(args: argparse.Namespace) -> int:
    cv2 = _cv2()
    from detcore.apis import inference_detector, init_detector, show_result

    if args.source == "video":
        if not args.input or not args.out:
            raise DataError("demo video needs --input VIDEO and --out OUT.mp4")
        cap = cv2.VideoCapture(args.input)
        if not cap.isOpened():
            raise DataError(f"cannot open video {args.input}; check the path and codec")
    else:
        cap = cv2.VideoCapture(args.camera)
        if not cap.isOpened():
            print(f"no camera at index {args.camera}; nothing to do")
            return 0
    model = init_detector(None if args.config.lower() == "none" else args.config, args.checkpoint, args.device)
    writer, frames = None, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            # min_side=0: a video keeps its frames' size
            drawn = cv2.cvtColor(show_result(rgb, inference_detector(model, rgb), args.score_thr, min_side=0),
                                 cv2.COLOR_RGB2BGR)
            if args.out:
                if writer is None:
                    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
                    writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (drawn.shape[1], drawn.shape[0]))
                writer.write(drawn)
            frames += 1
            if args.max_frames and frames >= args.max_frames:
                break
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    print(f"processed {frames} frame(s)" + (f" into {args.out}" if args.out else ""))
    return 0
