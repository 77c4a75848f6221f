"""What makes a training step fast stays exact: the fused mask arithmetic, no host syncs, compile, channels_last."""

import copy
import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from adafuse.engine.config import DEFAULTS, load_config
from adafuse.engine.module import RecognitionModule
from adafuse.errors import UserError
from adafuse.flops import profile
from adafuse.layers import KEEP, REUSE, TemporalShift, fuse
from adafuse.layers.actions import NUM_ACTIONS
from adafuse.models import build_model

LAMBDA = torch.tensor(0.1)  # the efficiency weight as the training step passes it: a 0-dim host tensor


def textbook_fuse(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The formula as written: a zero-padded shifted copy of y, two masked products, a sum."""
    n, t, g, _ = mask.shape
    y6 = y.view(n, t, g, y.shape[1] // g, *y.shape[2:])
    mask = mask.to(y.dtype).view(n, t, g, 1, 1, 1, NUM_ACTIONS)
    history = torch.cat([torch.zeros_like(y6[:, :1]), y6[:, :-1]], dim=1)
    return (mask[..., KEEP] * y6 + mask[..., REUSE] * history).view_as(y)


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    soft = logits.softmax(-1)
    return torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0) - soft.detach() + soft


@pytest.mark.parametrize("t", [1, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_mask_arithmetic_equals_the_formula_with_gradients(t, channels_last):
    y = torch.randn(2 * t, 8, 5, 6, dtype=torch.float64).relu()
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    y.requires_grad_(True)
    logits = torch.randn(2, t, 4, 3, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2 * t, 8, 5, 6, dtype=torch.float64)
    results = []
    for f in (fuse, textbook_fuse):
        out = f(y, straight_through(logits))
        results.append((out, *torch.autograd.grad(out, (y, logits), grad)))
    (out, grad_y, grad_logits), (ref, ref_y, ref_logits) = results
    assert torch.allclose(out, ref) and torch.allclose(grad_y, ref_y) and torch.allclose(grad_logits, ref_logits)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # forced masks (no gradient to the mask) take the same path and give the same values and d/dy
    mask = straight_through(logits).detach()
    out = fuse(y, mask)
    assert torch.allclose(out, ref) and torch.allclose(torch.autograd.grad(out, y, grad)[0], ref_y)


class HostSyncs(TorchDispatchMode):
    """Records the ops that would make the host wait for a GPU: reading a value (``.item()``, ``bool()``,
    ``float()``), data-dependent shapes (``nonzero``), and copies or mixes of host and device tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {a.device.type for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor) and a.dim()}
        name = str(func)
        if "_local_scalar_dense" in name or "nonzero" in name or "cpu" in devices:
            self.found.append(name)
        return func(*args, **kwargs)


@pytest.mark.parametrize("method", ["adafuse_tsm", "adafuse_tsn", "tsm", "cgnet"])
def test_training_step_never_waits_for_the_device(method):
    """The step on the meta device stands in for a GPU: every host-side read or host-to-device copy shows up."""
    model = build_model(backbone="resnet10_mini", method=method, num_classes=5, num_segments=2, policy_hidden=8)
    module = RecognitionModule(model.to("meta"), table=profile(model, input_size=16), config=DEFAULTS, meta={})
    clips = torch.empty(2, 2, 3, 16, 16, device="meta")
    labels = torch.zeros(2, dtype=torch.long, device="meta")
    if method == "adafuse_tsn":  # the check can fail: the cost table left on the host is a copy per fused block
        with HostSyncs() as syncs:
            module.training_terms(clips, labels, efficiency_weight=LAMBDA)
        assert syncs.found
    module.table = module.table.to("meta")  # what on_fit_start does
    with HostSyncs() as syncs:
        loss, logs, blocks = module.training_terms(clips, labels, efficiency_weight=LAMBDA)
        loss.backward()
    assert syncs.found == []
    assert all(v.device.type == "meta" for v in logs.values() if v.dim())
    assert all(v.device.type == "meta" for v in blocks.values())


def _one_step(module: RecognitionModule, clips, labels, seed: int):
    torch.manual_seed(seed)
    loss, logs, _ = module._terms(clips, labels, efficiency_weight=LAMBDA)
    loss.backward()
    grads = {n: p.grad for n, p in module.model.named_parameters() if p.grad is not None}
    return loss.detach(), logs, grads


def _assert_steps_agree(a, b, rel: float) -> None:
    (loss_a, logs_a, grads_a), (loss_b, logs_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=rel)
    assert logs_a.keys() == logs_b.keys() and grads_a.keys() == grads_b.keys()
    scale = max(g.abs().max() for g in grads_a.values())  # some gradients are zero in theory (bias before BN)
    for name, g in grads_a.items():
        assert (g - grads_b[name]).abs().max() <= rel * scale, name


@pytest.mark.slow  # ~20 s on an idle 2-core machine (dynamo and AOT autograd tracing), 50 s under load
def test_compiled_training_step_agrees_with_eager(monkeypatch):
    # aot_eager runs exactly what torch.compile captures (one graph, forward and backward through AOT autograd)
    # without generating kernels, which takes minutes on a CPU; inductor itself is exercised by the GPU benchmark.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    model = build_model(backbone="resnet10_mini", method="adafuse_tsm", num_classes=5, num_segments=2, policy_hidden=8)
    table = profile(model, input_size=16)
    clips, labels = torch.randn(2, 2, 3, 16, 16), torch.tensor([1, 3])
    steps = [_one_step(RecognitionModule(copy.deepcopy(model).train(), table=table, config=DEFAULTS, meta={},
                                         compile=compiled), clips, labels, seed=1)
             for compiled in (False, True)]  # fmt: skip
    _assert_steps_agree(*steps, rel=1e-5)


@pytest.mark.slow  # dynamo tracing, ~10 s
def test_a_ramping_efficiency_weight_does_not_recompile(monkeypatch):
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    model = build_model(backbone="resnet10_mini", method="adafuse_tsn", num_classes=5, num_segments=2, policy_hidden=8)
    module = RecognitionModule(model.train(), table=profile(model, input_size=16), config=DEFAULTS, meta={},
                               compile=True)  # fmt: skip
    clips, labels = torch.randn(2, 2, 3, 16, 16), torch.tensor([1, 3])
    losses = []
    for weight in (0.0, 0.05, 0.1):  # λ during the ramp: a new value every step
        torch.manual_seed(0)
        losses.append(module._terms(clips, labels, efficiency_weight=torch.tensor(weight))[0].item())
        if weight == 0.0:
            first = len(graphs)
    assert first > 0 and len(graphs) == first
    assert losses[0] < losses[1] < losses[2]  # the weight is really used, not baked in at its first value


def test_channels_last_training_step_agrees_and_keeps_the_layout():
    model = build_model(backbone="resnet10_mini", method="adafuse_tsm", num_classes=5, num_segments=2, policy_hidden=8)
    table = profile(model, input_size=16)
    clips, labels = torch.randn(2, 2, 3, 16, 16), torch.tensor([1, 3])
    modules = [RecognitionModule(copy.deepcopy(model).train(), table=table, config=DEFAULTS, meta={},
                                 channels_last=nhwc) for nhwc in (False, True)]  # fmt: skip
    assert modules[1].model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    _assert_steps_agree(*(_one_step(m, clips, labels, seed=2) for m in modules), rel=1e-4)
    shift = TemporalShift(num_segments=2)
    x = torch.randn(4, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    out = shift(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, shift(x.contiguous()))


def test_fit_with_compile_off_channels_last_on_and_a_progress_bar(tmp_path):
    # imported here: the data pipeline needs PyAV, which a bare GPU machine running the other tests may lack
    from adafuse.data.synthetic import generate_synthetic
    from adafuse.engine.train import fit

    generate_synthetic(kind="temporal", out=tmp_path / "data", num_videos=16, size=32, frames=4, seed=0)
    config = load_config(None, [
        f"data.dataset={tmp_path / 'data' / 'dataset.yaml'}", f"trainer.out={tmp_path / 'run'}",
        "model.backbone=resnet10_mini", "model.num_segments=2", "model.policy_hidden=8", "data.input_size=32",
        "data.batch_size=2", "data.workers=0", "trainer.tensorboard=false", "optim.epochs=1",
        "trainer.limit_train_batches=2", "trainer.channels_last=true", "trainer.progress=true",
        "trainer.limit_val_batches=1",
    ])  # fmt: skip
    result = fit(config)
    assert result["module"].model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert result["module"].table.fusion  # moved to the training device at fit start, still the same table
    with pytest.raises(UserError, match="trainer.compile must be bool"):
        load_config(None, ["trainer.compile=fast"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_step_has_no_host_sync():
    model = build_model(backbone="resnet10_mini", method="adafuse_tsm", num_classes=5, num_segments=2,
                        policy_hidden=8).cuda()  # fmt: skip
    module = RecognitionModule(model, table=profile(model, input_size=32), config=DEFAULTS, meta={}).cuda()
    module.table = module.table.to("cuda")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clips, labels = torch.randn(2, 2, 3, 32, 32, device="cuda"), torch.tensor([1, 3], device="cuda")
    module._terms(clips, labels, efficiency_weight=LAMBDA)[0].backward()  # first call: one-time set-up may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.float16):
                loss, *_ = module._terms(clips, labels, efficiency_weight=LAMBDA)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
