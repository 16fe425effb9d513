"""The CUDA/NCCL paths of detcore, pinned down without a GPU (issue 19): ``torch.cuda`` and the
process-group calls are replaced by recording fakes; AMP and RNG state use the real classes."""
from __future__ import annotations

import logging
import re
import sys
import weakref
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist

from detcore.engine import dist as D
from detcore.engine import rng as R
from detcore.errors import ConfigError


class FakeCuda:
    """``torch.cuda`` as a process that sees ``count`` GPUs: records ``set_device`` and RNG calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.count, self.set_devices, self.rng_set = count, [], []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self._set_device)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.set_devices[-1] if self.set_devices else 0)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: torch.tensor([7, _index(device)],
                                                                                            dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: self.rng_set.append(
            (state.tolist(), _index(device))))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.tensor([7, i], dtype=torch.uint8)
                                                                     for i in range(count)])

    def _set_device(self, device) -> None:
        index = _index(device)
        if not 0 <= index < self.count:
            raise RuntimeError("CUDA error: invalid device ordinal")
        self.set_devices.append(index)


def _index(device) -> int:
    if device is None:
        return 0
    return device if isinstance(device, int) else (torch.device(device).index or 0)


class FakeGroup:
    """``torch.distributed`` before and after ``init_process_group``: records its arguments."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, rank: int, world: int, backend: str = "nccl") -> None:
        self.init_kwargs: dict = {}
        self.barriers: list[dict] = []
        self.up = False
        monkeypatch.setattr(tdist, "is_initialized", lambda: self.up)
        monkeypatch.setattr(tdist, "init_process_group", self._init)
        monkeypatch.setattr(tdist, "get_rank", lambda group=None: rank)
        monkeypatch.setattr(tdist, "get_world_size", lambda group=None: world)
        monkeypatch.setattr(tdist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(tdist, "barrier", lambda **kw: self.barriers.append(kw))
        # no rank-0 store to reach: the group's rendezvous is faked as a whole
        monkeypatch.setattr(D, "bound_store", lambda timeout: "store")

    def _init(self, **kwargs) -> None:
        self.init_kwargs, self.up = kwargs, True


def _rank_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in ("TORCHELASTIC_USE_AGENT_STORE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


# ---- 1. Slurm, 2+ GPUs per node: a task shown one GPU uses it whatever its local rank ---------
def test_slurm_task_with_local_rank_3_uses_its_only_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from launcher.backends.slurm.task import task_env

    slurm = {"SLURM_NTASKS": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_LOCALID": "3", "SLURM_PROCID": "7",
             "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "4242", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    env = task_env(slurm, gpus_per_node=4)  # the README's --gpus-per-node 4 --nodes 2
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["LOCAL_RANK"] == "3"
    _rank_env(monkeypatch, env)
    cuda = FakeCuda(monkeypatch, count=len(env["CUDA_VISIBLE_DEVICES"].split(",")))
    group = FakeGroup(monkeypatch, rank=7, world=8)
    info = D.init_distributed("cuda")
    assert info.device == torch.device("cuda", 0)
    assert cuda.set_devices == [0]  # set before the group exists, never to the ordinal 3
    assert group.init_kwargs["backend"] == "nccl"


# ---- 6. --device cuda:1 -----------------------------------------------------------------------
def test_device_index_is_honoured_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(monkeypatch, count=2)
    assert D.resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)
    assert D.resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)
    assert D.resolve_device(None, local_rank=0) == torch.device("cuda", 0)
    assert D.resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"sees 2 GPU\(s\), numbered 0..1"):
        D.resolve_device("cuda:2", local_rank=0)
    with pytest.raises(ConfigError, match="expected cpu, cuda or cuda:N"):
        D.resolve_device("gpu0", local_rank=0)


def test_single_process_cuda_1_selects_gpu_1(monkeypatch: pytest.MonkeyPatch) -> None:
    _rank_env(monkeypatch, {"WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    cuda = FakeCuda(monkeypatch, count=2)
    info = D.init_distributed("cuda:1")
    assert info.device == torch.device("cuda", 1) and cuda.set_devices == [1]


# ---- 12. missing CUDA is one line ---------------------------------------------------------------
def test_missing_cuda_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCuda(monkeypatch, count=0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError) as exc:
        D.init_distributed("cuda")
    assert "no usable CUDA device" in str(exc.value) and "\n" not in str(exc.value)
    assert D.resolve_device(None, 0) == torch.device("cpu")  # no device asked for: the CPU


def test_init_detector_on_missing_cuda_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from detcore.apis.inference import init_detector

    FakeCuda(monkeypatch, count=0)
    with pytest.raises(ConfigError, match="no usable CUDA device"):
        init_detector({"model": {"type": "FasterRCNN"}}, device="cuda")


def test_detcore_cli_exits_2_with_one_line_when_cuda_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from detcore.tools.cli import main

    FakeCuda(monkeypatch, count=0)
    root = Path(__file__).resolve().parents[3]
    code = main(["train", str(root / "configs/shapes/faster_rcnn_tiny_shapes.yaml"), "--work-dir",
                 str(tmp_path / "w"), "--device", "cuda", "--cfg-options", "data.workers_per_gpu=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no usable CUDA device" in err[0]


# ---- 10. NCCL timeout, 12. barrier device ----------------------------------------------------------
def test_process_group_timeout_default_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    _rank_env(monkeypatch, {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    group = FakeGroup(monkeypatch, rank=0, world=2, backend="gloo")
    D.init_distributed("cpu")
    assert group.init_kwargs == {"backend": "gloo", "timeout": timedelta(minutes=D.DEFAULT_TIMEOUT_MIN),
                                 "store": "store", "rank": 0, "world_size": 2}
    assert D.DEFAULT_TIMEOUT_MIN >= 30
    group.up = False
    D.init_distributed("cpu", timeout_min=90)
    assert group.init_kwargs["timeout"] == timedelta(minutes=90)
    D._OWN_GROUP = False


def test_nccl_rank_binds_its_gpu_to_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA rank passes its device to init_process_group (NCCL then connects at start, so a bad
    NCCL set-up fails there, not at the first barrier); a torch without ``device_id`` gets none."""
    _rank_env(monkeypatch, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    FakeCuda(monkeypatch, count=2)
    group = FakeGroup(monkeypatch, rank=1, world=2, backend="nccl")
    D.init_distributed("cuda")
    assert group.init_kwargs == {"backend": "nccl", "timeout": timedelta(minutes=D.DEFAULT_TIMEOUT_MIN),
                                 "device_id": torch.device("cuda", 1), "store": "store", "rank": 1, "world_size": 2}
    D._OWN_GROUP = False

    def init_of_torch_2_2(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                          group_name="", pg_options=None) -> None:
        pass

    monkeypatch.setattr(tdist, "init_process_group", init_of_torch_2_2)
    assert D.device_binding(torch.device("cuda", 1)) == {}
    assert D.device_binding(torch.device("cpu")) == {}


class GroupEnd:
    """Records how the default group is ended (``destroy_process_group`` or torch's abort)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, abort_error: Exception | None = None) -> None:
        self.calls: list[str] = []

        def abort() -> None:
            self.calls.append("abort")
            if abort_error is not None:
                raise abort_error

        monkeypatch.setattr(tdist, "destroy_process_group", lambda group=None: self.calls.append("destroy"))
        monkeypatch.setattr(tdist.distributed_c10d, "_abort_process_group", abort)


@pytest.mark.parametrize("backend, failed, call", [("nccl", True, "abort"), ("nccl", False, "destroy"),
                                                   ("gloo", True, "destroy"), ("gloo", False, "destroy")])
def test_a_failing_rank_aborts_its_nccl_group(monkeypatch: pytest.MonkeyPatch, backend: str, failed: bool,
                                             call: str) -> None:
    """A rank that fails (perhaps alone) aborts NCCL: finalizing communicators with peers that are
    gone can hang. A finished run destroys its group; gloo always does (its exit-time abort)."""
    assert D.ending(backend, failed) == call
    group = FakeGroup(monkeypatch, rank=0, world=2, backend=backend)
    end = GroupEnd(monkeypatch)
    group.up, D._OWN_GROUP = True, True
    D.shutdown_distributed(failed=failed)
    assert end.calls == [call] and D._OWN_GROUP is False
    D.shutdown_distributed(failed=failed)  # once only
    assert end.calls == [call]


def test_a_failing_abort_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    group = FakeGroup(monkeypatch, rank=0, world=2, backend="nccl")
    end = GroupEnd(monkeypatch, abort_error=RuntimeError("NCCL communicator was aborted by the watchdog"))
    group.up, D._OWN_GROUP = True, True
    with caplog.at_level(logging.WARNING):
        D.shutdown_distributed(failed=True)
    assert end.calls == ["abort"] and "could not abort the process group" in caplog.text and not D._OWN_GROUP


def test_an_older_torch_aborts_through_the_nccl_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch before 2.5 has no ``_abort_process_group``: the NCCL backend's own abort is called."""
    from types import SimpleNamespace

    asked, aborted = [], []
    backend = SimpleNamespace(abort=lambda: aborted.append(True))
    monkeypatch.delattr(tdist.distributed_c10d, "_abort_process_group")
    monkeypatch.setattr(tdist.distributed_c10d, "_get_default_group",
                        lambda: SimpleNamespace(_get_backend=lambda device: asked.append(device) or backend))
    D.abort_process_group()
    assert asked == [torch.device("cuda")] and aborted == [True]


def test_a_group_of_someone_else_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    group = FakeGroup(monkeypatch, rank=0, world=2, backend="nccl")
    end = GroupEnd(monkeypatch)
    group.up, D._OWN_GROUP = True, False  # Ray Train's group
    D.shutdown_distributed(failed=True)
    assert end.calls == []


def test_detcore_cli_ends_the_group_as_failed_unless_the_command_succeeded(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from detcore.tools.cli import main

    ended: list[bool] = []
    monkeypatch.setattr(D, "shutdown_distributed", lambda failed=False: ended.append(failed))
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() sets it
    root = Path(__file__).resolve().parents[3]
    assert main(["config", "show", str(root / "configs/shapes/faster_rcnn_tiny_shapes.yaml")]) == 0
    assert main(["config", "show", str(tmp_path / "missing.yaml")]) == 2
    assert ended == [False, True]
    capsys.readouterr()


def test_gloo_group_is_destroyed_even_when_the_rank_failed(tmp_path: Path) -> None:
    """The real gloo path: a failing rank still destroys its group (no abort call for gloo)."""
    D.start_process_group("gloo", torch.device("cpu"), timedelta(minutes=1), tdist.FileStore(str(tmp_path / "s"), 1),
                          rank=0, world_size=1)
    assert tdist.is_initialized() and tdist.get_backend() == "gloo"
    D.shutdown_distributed(failed=True)
    assert not tdist.is_initialized() and not D._OWN_GROUP


def test_ddp_options_from_dist_params_reach_ddp(tmp_path: Path) -> None:
    """``dist_params`` keys become DDP keyword arguments that DDP accepts (a 1-rank gloo group);
    a wrong key or value is one ConfigError naming it."""
    from torch.nn.parallel import DistributedDataParallel

    assert D.ddp_options(None) == {} and D.ddp_options({"timeout_min": 5, "backend": "nccl"}) == {}
    opts = D.ddp_options({"timeout_min": 5, "bucket_cap_mb": 1, "gradient_as_bucket_view": True, "static_graph": True})
    assert opts == {"bucket_cap_mb": 1, "gradient_as_bucket_view": True, "static_graph": True}
    for bad, words in (({"bucket_size": 1}, "unknown option(s) ['bucket_size']"),
                       ({"bucket_cap_mb": 0}, "dist_params.bucket_cap_mb must be a positive number"),
                       ({"static_graph": "yes"}, "dist_params.static_graph must be true or false")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            D.ddp_options(bad)
    store = tdist.FileStore(str(tmp_path / "store"), 1)
    tdist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = DistributedDataParallel(torch.nn.Linear(4, 2), **opts)
        for _ in range(2):  # static_graph records the graph in the first iteration
            model.zero_grad(set_to_none=True)
            model(torch.ones(3, 4)).sum().backward()
        assert torch.equal(model.module.bias.grad, torch.full((2,), 3.0))
    finally:
        tdist.destroy_process_group()


def test_barrier_names_the_current_gpu_under_nccl(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, count=4)
    group = FakeGroup(monkeypatch, rank=1, world=2, backend="nccl")
    group.up = True
    cuda.set_devices.append(2)
    D.barrier()
    assert group.barriers == [{"device_ids": [2]}]


# ---- 2. resume a non-AMP checkpoint with --amp: a real GradScaler round trip -----------------------
def test_amp_resume_of_a_checkpoint_saved_without_amp() -> None:
    from detcore.engine.trainer import restore_scaler

    saved_without_amp = torch.amp.GradScaler("cpu", enabled=False).state_dict()
    assert saved_without_amp == {}
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 10)
    with pytest.raises(RuntimeError, match="empty"):  # what resume used to do
        enabled.load_state_dict(saved_without_amp)
    assert restore_scaler(enabled, saved_without_amp) is False
    assert enabled.get_scale() == 2.0 ** 10  # a fresh scale
    with_amp = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0 ** 7)
    resumed = torch.amp.GradScaler("cpu", enabled=True)
    assert restore_scaler(resumed, with_amp.state_dict()) is True and resumed.get_scale() == 2.0 ** 7
    assert restore_scaler(torch.amp.GradScaler("cpu", enabled=False), with_amp.state_dict()) is False


# ---- 3. and 7. random state per rank and per device -------------------------------------------------
def test_restore_with_fewer_gpus_than_at_save_time(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    cuda = FakeCuda(monkeypatch, count=1)
    old = R.rng_state()
    old["cuda"] = [torch.tensor([9, i], dtype=torch.uint8) for i in range(8)]  # an older release, 8 GPUs seen
    R.set_rng_state(old, torch.device("cuda", 0))
    assert cuda.rng_set == [([9, 0], 0)]
    with caplog.at_level(logging.WARNING):
        R.set_rng_state({**old, "cuda": old["cuda"][:1]}, torch.device("cuda", 5))  # no IndexError
    assert "none for cuda:5" in caplog.text and len(cuda.rng_set) == 1
    state = R.rng_state(torch.device("cuda", 0))
    assert state["cuda"].tolist() == [7, 0]  # this device's generator only, not one per visible device


def test_each_rank_restores_its_own_state(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = FakeCuda(monkeypatch, count=1)
    states = []
    for rank in range(2):
        R.torch.manual_seed(R.rank_seed(0, rank))
        state = R.rng_state(torch.device("cuda", 0))
        state["cuda"] = torch.tensor([rank, 0], dtype=torch.uint8)
        states.append(state)
    ckpt = {"meta": {"world_size": 2}, "rng": states[0], "rng_per_rank": states}
    assert R.restore_rank_state(ckpt, 1, 2, torch.device("cuda", 0))
    assert torch.equal(torch.get_rng_state(), states[1]["torch"]) and cuda.rng_set[-1] == ([1, 0], 0)
    assert not R.restore_rank_state(ckpt, 0, 4, torch.device("cuda", 0))  # world size changed: seeds kept


def test_ranks_draw_different_sampling_permutations() -> None:
    from detcore.engine.setup import seed_everything

    draws = []
    for rank in (0, 1):
        seed_everything(5, rank=rank)
        draws.append(torch.randperm(1000).tolist())
    assert draws[0] != draws[1]
    seed_everything(5, rank=0)
    assert torch.randperm(1000).tolist() == draws[0]  # rank 0 keeps the run's seed


def test_deterministic_sets_what_torch_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {}
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode, warn_only=False: calls.update(
        mode=mode, warn_only=warn_only))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    R.configure_determinism(True)
    import os

    assert calls == {"mode": True, "warn_only": True}
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True


# ---- 12. checkpoints hold CPU tensors ----------------------------------------------------------------
def test_checkpoint_tensors_are_copied_to_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from detcore.checkpoint import save_checkpoint

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(1, 3, 8, 8)).sum().backward()
    opt.step()
    copied = []
    real_cpu = torch.Tensor.cpu

    def cpu(self, *a, **kw):
        copied.append(id(self))
        return real_cpu(self, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    save_checkpoint(tmp_path / "c.pth", model, {"arch": None}, optimizer=opt.state_dict())
    expected = len(model.state_dict()) + sum(len(s) for s in opt.state_dict()["state"].values())
    assert len(copied) >= expected
    monkeypatch.undo()
    data = torch.load(tmp_path / "c.pth", weights_only=True)
    assert "1" in data["state_dict"]._metadata  # module versions survive the copy


# ---- 11. one host sync per step, DDP buffers ------------------------------------------------------------
def test_loss_values_are_read_once_after_backward_is_queued() -> None:
    values = {"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(0.25, requires_grad=True) * 2, "stop": 0.0}
    pending = D.all_reduce_mean_async(values, torch.device("cpu"))
    assert pending.wait() == {"loss_a": 1.5, "loss_b": 0.5, "stop": 0.0}
    assert D.all_reduce_mean_async({}, torch.device("cpu")).wait() == {}


def test_frozen_batchnorm_needs_no_buffer_broadcast() -> None:
    from torchvision.ops import FrozenBatchNorm2d

    from detcore.engine.trainer import has_running_stats

    assert not has_running_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), FrozenBatchNorm2d(3)))
    assert has_running_stats(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)))
    assert not has_running_stats(torch.nn.BatchNorm2d(3, track_running_stats=False))


# ---- 9. evaluation keeps no full-size mask past its batch ------------------------------------------------
class BigMaskModel(torch.nn.Module):
    """A Mask R-CNN's output shape: ``n`` detections with full-size float masks per image."""

    def __init__(self, n: int = 20) -> None:
        super().__init__()
        self.n = n
        self.masks: list[weakref.ref] = []

    def forward(self, images):
        outs = []
        for img in images:
            h, w = img.shape[-2:]
            masks = torch.rand(self.n, 1, h, w)
            self.masks.append(weakref.ref(masks))
            boxes = torch.tensor([[0.0, 0.0, w / 2, h / 2]]).repeat(self.n, 1)
            outs.append({"boxes": boxes, "scores": torch.linspace(1, 0.1, self.n),
                         "labels": torch.ones(self.n, dtype=torch.int64), "masks": masks})
        return outs


class FakeSet:
    cat_ids = [1]

    def get_img_info(self, image_id):
        from types import SimpleNamespace

        return SimpleNamespace(orig_size=(200, 300), img_shape=(200, 300))


def test_masks_are_encoded_per_batch_and_freed() -> None:
    from detcore.engine.evaluator import coco_converter, run_inference

    model = BigMaskModel()
    seen_alive = []

    def batches():
        for b in range(4):
            seen_alive.append(sum(ref() is not None for ref in model.masks))
            yield [torch.rand(3, 200, 300)] * 2, [{"image_id": 2 * b}, {"image_id": 2 * b + 1}]

    outputs, _ = run_inference(model, batches(), torch.device("cpu"), convert=coco_converter(FakeSet()))
    assert [image_id for image_id, _ in outputs] == list(range(8))
    first = outputs[0][1]
    assert len(first) == 20 and isinstance(first[0]["segmentation"]["counts"], str)  # RLE, not a tensor
    assert max(seen_alive) == 0  # no earlier batch's masks alive when the next batch starts
    assert all(ref() is None for ref in model.masks)


# ---- 12. peak memory: reset at each log line, the busiest rank's ---------------------------------------
def test_memory_figure_is_reset_each_time_and_the_largest_over_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from detcore.engine import trainer as T

    peaks = iter([300 * 2 ** 20, 100 * 2 ** 20])
    resets = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: next(peaks))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: resets.append(device))
    other_ranks = {"peak": 0.0}
    monkeypatch.setattr(T, "all_reduce_max", lambda value, device: max(value, other_ranks["peak"]))
    fake = SimpleNamespace(dist=SimpleNamespace(device=torch.device("cuda", 0)))
    assert T.Trainer.memory_mb(fake) == 300
    other_ranks["peak"] = 250.0  # rank 1 peaked higher in the next window
    assert T.Trainer.memory_mb(fake) == 250
    assert resets == [torch.device("cuda", 0)] * 2


# ---- 11/12. pinned val/test batches on a GPU, --amp on the CPU says it is ignored ----------------------
def test_eval_loaders_pin_memory_only_for_cuda() -> None:
    from detcore.config import load_config
    from detcore.engine.setup import build_split_loader

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(root / "configs/shapes/faster_rcnn_tiny_shapes.yaml", ["data.workers_per_gpu=0"])
    on_gpu = build_split_loader(cfg, "val", D.DistInfo(0, 1, 0, torch.device("cuda", 0)), seed=0, train=False)
    on_cpu = build_split_loader(cfg, "val", D.DistInfo(0, 1, 0, torch.device("cpu")), seed=0, train=False)
    assert on_gpu.pin_memory is True and on_cpu.pin_memory is False


def test_amp_on_the_cpu_is_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from detcore.config import load_config
    from detcore.engine.trainer import Trainer

    root = Path(__file__).resolve().parents[3]
    cfg = load_config(root / "configs/shapes/faster_rcnn_tiny_shapes.yaml",
                      ["runner.max_iters=1", "data.workers_per_gpu=0", "data.samples_per_gpu=2", "auto_scale_lr.enable=false"])
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(cfg, tmp_path, validate=False, amp=True, device="cpu")
    assert not trainer.amp and not trainer.scaler.is_enabled()
    assert "--amp" in caplog.text and "needs a CUDA device" in caplog.text
