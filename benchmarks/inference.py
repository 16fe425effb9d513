"""6. Inference: ``inference_detector`` latency per image against a raw ``model(images)`` call
(goal: ratio <= 1.05), single image and batched.

One model, built once by ``init_detector(shapes config)`` (random weights, eval mode, CPU,
torch's default thread count), serves both sides. Inputs are shapes validation images already
decoded to float 3xHxW tensors, so both sides get the same tensors:

* ours: ``inference_detector(model, img)`` / ``inference_detector(model, [imgs])``, which
  returns per-image dicts of numpy arrays with class names;
* raw: ``with torch.no_grad(): model([img])`` / ``model(imgs)``, which returns tensors.

Calls alternate ours/raw; the figure is the median per-image latency over ``calls`` calls after
``warmup`` calls (a batched call's time divided by the batch size).
"""
from __future__ import annotations


from benchmarks import jobs
from benchmarks.harness import Context, Goal, Result, compared, interleave, log, measured

TITLE = "inference: inference_detector vs raw model(images), per image, single and batched"
GOAL = Goal("ratio", "<=", 1.05)


def load_images(n: int) -> list:
    import torch

    from detcore.config import load_config
    from detcore.data import build_dataset

    cfg = load_config(jobs.SHAPES_CONFIG)
    dataset = build_dataset({**cfg["data"]["test"], "test_mode": True})
    return [torch.as_tensor(dataset[i][0]).clone() for i in range(n)]


def run(ctx: Context) -> Result:
    import torch

    from detcore.apis import inference_detector, init_detector

    torch.manual_seed(0)
    model = init_detector(str(jobs.SHAPES_CONFIG), device="cpu")
    batch = 8
    images = load_images(batch)
    warmup, calls = ctx.pick((3, 20), (10, 100))
    rows = []
    details = {}
    for label, imgs, per in (("single image", images[0], 1), (f"batch of {batch}", images, batch)):
        raw_in = [imgs] if per == 1 else list(imgs)

        def ours() -> None:
            inference_detector(model, imgs)

        def raw() -> None:
            with torch.no_grad():
                model(raw_in)

        log(f"inference: {label}, {calls} calls each")
        t = interleave({"ours": ours, "raw": raw}, calls, warmup)
        ours_ms = [1000 * x / per for x in t["ours"]]
        raw_ms = [1000 * x / per for x in t["raw"]]
        rows += [compared(f"inference_detector, {label}", ours_ms, raw_ms, "ms/img", GOAL,
                          note="ratio vs raw model() below (pairwise spread)"),
                 measured(f"raw model(images), {label}", raw_ms, "ms/img")]
        with torch.no_grad():
            details[label] = {"detections_per_image": [len(o["boxes"]) for o in model(raw_in)]}
    settings = {"config": str(jobs.SHAPES_CONFIG), "batch": batch, "warmup_calls": warmup, "calls": calls,
                "threads": torch.get_num_threads(), "input": "float 3x128x128 tensors", "weights": "random"}
    return Result(rows, settings, details)
