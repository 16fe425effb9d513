"""The sparse CPU RoIAlign backward: torchvision's gradients, torchvision's code wherever it does not apply."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign as TvMultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from detcore.errors import ConfigError
from detcore.models import build_detector
from detcore.models.roi_align import MultiScaleRoIAlign, roi_align


def _rois(n: int, count: int, extent: float, seed: int) -> torch.Tensor:
    """Boxes of every kind: inside, partly and wholly outside the image, thinner than a pixel."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * extent * 1.3 - extent * 0.15
    wh = torch.rand(count, 2, generator=g) * extent * 0.6
    wh[: count // 10] *= 0.01
    return torch.cat([torch.randint(0, n, (count, 1), generator=g).float(), xy, xy + wh], 1)


def _edge_rois(n: int, height: float, width: float) -> torch.Tensor:
    """Boxes on and past the image's borders (input pixels): the whole image, touching each side,
    straddling each side, wholly outside, a point, and one past the far corner."""
    h, w = height, width
    return torch.tensor([
        [0, 0, 0, w, h], [n - 1, 0, 0, w - 1, h - 1], [0, w - 8, h - 8, w, h], [0, -8, -8, 8, 8],
        [n - 1, w - 4, 2, w + 12, 10], [0, 3, h - 5, 15, h + 9], [0, -40, -40, -20, -20], [n - 1, w + 5, h + 5, w + 40, h + 40],
        [0, w / 2, h / 2, w / 2, h / 2], [n - 1, -1, -1, w + 1, h + 1], [0, w - 0.5, 0, w + 0.5, h],
    ])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, 4])
def test_gradient_equals_torchvision(sampling_ratio: int, aligned: bool, dtype: torch.dtype) -> None:
    """Random features and boxes (inside, at and past the borders, sub-pixel): the sparse backward's
    input gradient is torchvision's own backward's, to the dtype's rounding (the sums run in another order)."""
    x = torch.randn(3, 8, 13, 19, dtype=dtype, generator=torch.Generator().manual_seed(0))
    rois = torch.cat([_rois(3, 200, 19 * 8, seed=1), _edge_rois(3, 13 * 8, 19 * 8)]).to(dtype)
    grad = torch.randn(len(rois), 8, 7, 5, dtype=dtype, generator=torch.Generator().manual_seed(2))
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = roi_align(ours, rois, (7, 5), 1 / 8, sampling_ratio, aligned)
    ref = tv_roi_align(theirs, rois, (7, 5), 1 / 8, sampling_ratio, aligned)
    assert out.grad_fn.name() == "_RoIAlignSparseBackwardBackward"
    assert torch.equal(out, ref)  # the forward is torchvision's op
    out.backward(grad)
    ref.backward(grad)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=tol, atol=tol)
    assert theirs.grad.abs().sum() > 0
    assert ours.grad.dtype == dtype and ours.grad.shape == x.shape


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_gradcheck(sampling_ratio: int, aligned: bool) -> None:
    """torch.autograd.gradcheck (finite differences, float64) on a small case with border boxes."""
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    rois = torch.cat([_rois(2, 6, 14, seed=4), _edge_rois(2, 12, 14)]).double()
    assert roi_align(x, rois, 3, 0.5, sampling_ratio, aligned).grad_fn.name() == "_RoIAlignSparseBackwardBackward"
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 3, 0.5, sampling_ratio, aligned), (x,))


def test_torchvision_runs_where_the_sparse_backward_does_not_apply() -> None:
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    rois = _rois(1, 5, 32, seed=0)
    assert roi_align(x, rois, 7, 0.25, sampling_ratio=0).grad_fn.name() != "_RoIAlignSparseBackwardBackward"
    assert roi_align(x, rois, 7, 0.25, sampling_ratio=2).grad_fn.name() == "_RoIAlignSparseBackwardBackward"
    with torch.no_grad():
        assert torch.equal(roi_align(x, rois, 7, 0.25, 2), tv_roi_align(x, rois, 7, 0.25, 2))
    torch.use_deterministic_algorithms(True)
    try:
        assert roi_align(x, rois, 7, 0.25, 2).grad_fn.name() != "_RoIAlignSparseBackwardBackward"
    finally:
        torch.use_deterministic_algorithms(False)
    empty = x.clone().detach().requires_grad_()
    roi_align(empty, rois[:0], 7, 0.25, 2).sum().backward()
    assert torch.equal(empty.grad, torch.zeros_like(x))


def test_models_train_with_the_same_gradients_as_torchvision_pooling() -> None:
    """A Mask R-CNN step with the default pooler gives torchvision's gradients (box and mask
    pools); ``roi_head.roi_align_backward: torchvision`` builds torchvision's own pooler."""
    cfg = {"type": "MaskRCNN", "num_classes": 2, "min_size": 96, "max_size": 96,
           "backbone": {"type": "TinyNet", "channels": [8, 16, 32], "returned_layers": [1, 2]},
           "neck": {"type": "FPN", "out_channels": 16}, "anchor_generator": {"sizes": [[16], [32], [64]]},
           "roi_head": {"representation_size": 32, "mask_layers": [16]}}
    images = [torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    masks = torch.zeros(2, 96, 96, dtype=torch.uint8)
    masks[0, 10:50, 20:60] = masks[1, 40:90, 30:80] = 1
    targets = [{"boxes": torch.tensor([[20.0, 10.0, 60.0, 50.0], [30.0, 40.0, 80.0, 90.0]]),
                "labels": torch.tensor([1, 2]), "masks": masks}] * 2
    grads = {}
    for backward in ("sparse", "torchvision"):
        torch.manual_seed(0)
        model = build_detector({**cfg, "roi_head": {**cfg["roi_head"], "roi_align_backward": backward}}).train()
        pools = (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool)
        assert all(type(p) is (MultiScaleRoIAlign if backward == "sparse" else TvMultiScaleRoIAlign) for p in pools)
        sum(model(images, targets).values()).backward()
        grads[backward] = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert grads["sparse"].keys() == grads["torchvision"].keys()
    for k in grads["sparse"]:
        torch.testing.assert_close(grads["sparse"][k], grads["torchvision"][k], rtol=1e-4, atol=1e-6, msg=k)
    with pytest.raises(ConfigError, match="roi_align_backward must be one of sparse, torchvision"):
        build_detector({**cfg, "roi_head": {"roi_align_backward": "fast"}})


@pytest.mark.parametrize("backward", ["sparse", "torchvision"])
@pytest.mark.parametrize("model_type,mask_options", [("FasterRCNN", {}), ("MaskRCNN", {}),
                                                     ("MaskRCNN", {"mask_roi_size": 14}), ("CascadeRCNN", {}),
                                                     ("CascadeRCNN", {"mask_layers": [8]})])
def test_the_switch_reaches_every_roi_pool(model_type: str, mask_options: dict, backward: str) -> None:
    cfg = {"type": model_type, "num_classes": 2, "min_size": 64, "max_size": 64,
           "backbone": {"type": "TinyNet", "channels": [8, 16, 32], "returned_layers": [1, 2]},
           "neck": {"type": "FPN", "out_channels": 16}, "anchor_generator": {"sizes": [[16], [32], [64]]},
           "roi_head": {"representation_size": 16, "roi_align_backward": backward, **mask_options}}
    pools = [m for m in build_detector(cfg).modules() if isinstance(m, TvMultiScaleRoIAlign)]
    expected = {"FasterRCNN": 1, "MaskRCNN": 2, "CascadeRCNN": 3 + bool(mask_options)}[model_type]
    assert len(pools) == expected
    assert all(type(p) is (MultiScaleRoIAlign if backward == "sparse" else TvMultiScaleRoIAlign) for p in pools)
