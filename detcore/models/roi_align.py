"""RoIAlign for training on the CPU: torchvision's forward, the input gradient as one sparse product.

torchvision's CPU ``roi_align`` backward walks every (RoI, channel, bin) serially and recomputes the
bilinear weights of each sample for every channel: on the shapes Faster R-CNN it is about 40% of a
training step, on ``fasterrcnn_mobilenet_v3_large_320_fpn`` about 35%, while the forward (which
precomputes the weights and runs in parallel) barely shows. The gradient is linear in the pooled
gradient: ``grad_input[b, c, y, x] = sum over bins of S[(b, y, x), bin] * grad[bin, c]``, where the
weights ``S`` depend only on the boxes. :func:`roi_align_input_grad` builds ``S`` once per call
(16 entries per bin for ``sampling_ratio`` 2: 2x2 samples, 4 corners each) with torchvision's
sampling rules, sorts it into CSR by input position, and multiplies it with the gradient (MKL's
sparse-dense product), for every channel at once: 4-10x faster than torchvision's kernel, the
same sums (the test compares them to torchvision's within float32 rounding).

:class:`MultiScaleRoIAlign` is torchvision's pooler with that backward. It takes the sparse path
only where it applies: gradients on, CPU tensors of float32/float64, a fixed ``sampling_ratio``
(> 0), no ``torch.use_deterministic_algorithms`` (torchvision's serial kernel is the
deterministic reference), no tracing. Everything else (inference, CUDA, export) runs torchvision's
own code, so predictions are unchanged. No parameters or buffers: state dicts are torchvision's.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torchvision
from torch import Tensor
from torch.nn.modules.utils import _pair
from torchvision.ops import MultiScaleRoIAlign as TvMultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from detcore.errors import ConfigError

BACKWARDS = ("sparse", "torchvision")  # model.roi_head.roi_align_backward


def _axis(start: Tensor, bin_size: Tensor, pooled: int, samples: int, size: int) -> tuple[Tensor, Tensor]:
    """Indices and weights ``[R, pooled, samples, 2]`` (low and high neighbour) along one axis.

    torchvision's ``bilinear_interpolate_gradient``: a sample outside ``[-1, size]`` weighs 0; one
    below 0 is moved to 0; one at or past the last pixel uses the last pixel for both neighbours.
    """
    bins = torch.arange(pooled, dtype=start.dtype, device=start.device)
    steps = torch.arange(samples, dtype=start.dtype, device=start.device)
    c = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
         + (steps[None, None, :] + 0.5) * bin_size[:, None, None] / samples)
    inside = (c >= -1.0) & (c <= size)
    c = c.clamp(min=0.0)
    low = c.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    c = torch.where(at_edge, low, c)
    high = torch.where(at_edge, low, low + 1)
    frac = c - low
    weights = torch.stack([1.0 - frac, frac], -1) * inside[..., None]
    return torch.stack([low, high], -1).to(torch.int32), weights


def roi_align_input_grad(grad: Tensor, rois: Tensor, input_shape: Sequence[int], spatial_scale: float,
                         sampling_ratio: int, aligned: bool) -> Tensor:
    """The gradient of ``roi_align(input, rois, grad.shape[-2:], spatial_scale, sampling_ratio, aligned)``
    with respect to ``input`` (of ``input_shape``), for ``grad`` of shape ``[R, C, PH, PW]``.

    The result has ``input_shape`` with channels-last strides (no copy back to NCHW).
    """
    n, c, h, w = (int(v) for v in input_shape)
    num_rois, _, ph, pw = grad.shape
    if num_rois == 0:
        return grad.new_zeros((n, c, h, w))
    s = int(sampling_ratio)
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:].to(grad.dtype) * spatial_scale - offset
    roi_w, roi_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    yi, yw = _axis(boxes[:, 1], roi_h / ph, ph, s, h)  # [R, PH, s, 2]
    xi, xw = _axis(boxes[:, 0], roi_w / pw, pw, s, w)  # [R, PW, s, 2]
    image = rois[:, 0].to(torch.int32)
    # entry (roi, ph, pw, sample y, low/high y, sample x, low/high x): input position and weight
    pos = (image[:, None, None, None, None, None, None] * (h * w) + yi[:, :, None, :, :, None, None] * w
           + xi[:, None, :, None, None, :, :]).reshape(-1)
    weight = (yw[:, :, None, :, :, None, None] * xw[:, None, :, None, None, :, :] / (s * s)).reshape(-1)
    per_bin = (2 * s) ** 2
    bins = num_rois * ph * pw
    order = torch.sort(pos, stable=True).indices  # stable: the same sums in the same order every run
    rows = torch.zeros(n * h * w + 1, dtype=torch.int32, device=grad.device)
    rows[1:] = torch.cumsum(torch.bincount(pos, minlength=n * h * w), 0)
    cols = torch.div(order, per_bin, rounding_mode="floor").to(torch.int32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the product used here is MKL's
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(rows, cols, weight[order], size=(n * h * w, bins), check_invariants=False)
        by_bin = grad.permute(0, 2, 3, 1).reshape(bins, c)
        return (matrix @ by_bin).view(n, h, w, c).permute(0, 3, 1, 2)


class _RoIAlignSparseBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.save_for_backward(rois)
        ctx.args = (tuple(input.shape), spatial_scale, sampling_ratio, aligned)
        return torch.ops.torchvision.roi_align(input, rois, spatial_scale, output_size[0], output_size[1],
                                               sampling_ratio, aligned)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        shape, spatial_scale, sampling_ratio, aligned = ctx.args
        grad_input = roi_align_input_grad(grad.contiguous(), rois, shape, spatial_scale, sampling_ratio, aligned)
        return grad_input, None, None, None, None, None


def sparse_backward_applies(input: Tensor, sampling_ratio: int) -> bool:
    """Whether :func:`roi_align` takes the sparse backward for ``input`` (else torchvision's op)."""
    return (torch.is_grad_enabled() and input.requires_grad and input.device.type == "cpu"
            and input.dtype in (torch.float32, torch.float64) and sampling_ratio > 0
            and not torch.are_deterministic_algorithms_enabled() and not torchvision._is_tracing()
            and not torch.jit.is_scripting())


def roi_align(input: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """torchvision's ``roi_align`` (``rois`` as ``[K, 5]``), with the sparse CPU backward where it applies."""
    if not sparse_backward_applies(input, sampling_ratio):
        return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return _RoIAlignSparseBackward.apply(input, rois.to(input.dtype), _pair(output_size), float(spatial_scale),
                                         int(sampling_ratio), bool(aligned))


class MultiScaleRoIAlign(TvMultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` whose CPU training backward is :func:`roi_align_input_grad`'s.

    The levels, scales and the order of the pooled RoIs are torchvision's (``_multiscale_roi_align``,
    re-stated below because it calls torchvision's ``roi_align`` by name).
    """

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        if not sparse_backward_applies(x_filtered[0], self.sampling_ratio):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(x_filtered, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        if len(x_filtered) == 1:
            return roi_align(x_filtered[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        first = x_filtered[0]
        result = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(x_filtered, self.scales)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[index], self.output_size, scale, self.sampling_ratio)
            result[index] = pooled.to(result.dtype)
        return result


def build_roi_pool(featmap_names: Sequence[str], output_size: int, sampling_ratio: int,
                   backward: str = "sparse") -> TvMultiScaleRoIAlign:
    """The RoI pooler of ``model.roi_head.roi_align_backward``: ``sparse`` (default) or ``torchvision``."""
    if backward not in BACKWARDS:
        raise ConfigError(f"model.roi_head.roi_align_backward must be one of {', '.join(BACKWARDS)}; got {backward!r}")
    cls = MultiScaleRoIAlign if backward == "sparse" else TvMultiScaleRoIAlign
    return cls(list(featmap_names), output_size, sampling_ratio=sampling_ratio)
