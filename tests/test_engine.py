"""Training engine: the loss works, resume is exact, evaluation is repeatable, mistakes are one-line errors."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from adafuse.cli import main
from adafuse.data.synthetic import generate_synthetic
from adafuse.engine.config import load_config
from adafuse.engine.module import RecognitionModule, optimizer_groups
from adafuse.engine.train import fit, resolve_precision
from adafuse.flops import profile
from adafuse.models import build_model

TINY = [
    "model.backbone=resnet18",
    "model.num_segments=3",
    "model.policy_hidden=8",
    "data.input_size=32",
    "data.batch_size=4",
    "data.workers=0",
    "optim.lr=0.02",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.log_every_steps=1",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(kind="temporal", out=out, num_videos=32, size=32, frames=6, seed=0)
    return out / "dataset.yaml"


def tiny_config(dataset: Path, out: Path, *extra: str) -> dict:
    return load_config(None, [*TINY, f"data.dataset={dataset}", f"trainer.out={out}", *extra])


def _train_on_one_batch(weight: float, steps: int = 25) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=4, num_segments=3, policy_hidden=16)
    config = load_config(
        None, [f"loss.efficiency_weight={weight}", "optim.weight_decay=0", "optim.lr=0.01", "optim.policy_lr_scale=100"]
    )
    table = profile(model, input_size=32)
    module = RecognitionModule(model, table=table, config=config, meta={})
    logged = []
    module.log = lambda *a, **k: None  # no trainer attached
    module.log_dict = lambda logs, **k: logged.append(logs)
    optimizer = module.configure_optimizers()["optimizer"]
    x, y = torch.randn(8, 3, 3, 32, 32), torch.arange(8) % 4
    losses, costs = [], []
    for step in range(steps):
        model.train()
        loss = module.training_step((x, y), step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        costs.append(logged[-1]["train/gflops"].item() * 1e9 / table.dense_macs)  # the step's own policy cost
    return losses, costs


def test_loss_and_cost_decrease_and_lambda_lowers_cost():
    # 25 steps are short: λ must be large for the cost to move (the gradient per channel is its share of the cost)
    losses, costs = _train_on_one_batch(weight=10.0)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert mean(losses[-5:]) < 0.8 * mean(losses[:5])
    assert mean(costs[-5:]) < mean(costs[:5]) - 0.1  # cost is a share of the dense cost
    _, costs_light = _train_on_one_batch(weight=3.0)
    _, costs_heavy = _train_on_one_batch(weight=30.0)
    assert mean(costs_heavy[-5:]) < mean(costs_light[-5:]) - 0.2


def test_param_groups_decay_and_policy_scale():
    model = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=4, num_segments=2, policy_hidden=8)
    groups = optimizer_groups(model, weight_decay=5e-4, policy_lr_scale=10.0)
    owner = {
        id(p): (f"{m_name}.{n}", m) for m_name, m in model.named_modules() for n, p in m.named_parameters(recurse=False)
    }
    for group in groups:
        for p in group["params"]:
            name, module = owner[id(p)]
            conv_or_fc_weight = name.endswith("weight") and isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
            assert (group["weight_decay"] > 0) == conv_or_fc_weight, name
            assert (group["lr_scale"] == 10.0) == (".policy." in name), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


class _Interrupt(L.Callback):
    """Simulate Ctrl-C after a given number of optimizer steps."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_interrupted_and_resumed_training_is_bit_exact(dataset, tmp_path):
    extra = ("optim.epochs=2", "optim.lr_steps=[1]", "trainer.checkpoint_every_steps=1")
    full = fit(tiny_config(dataset, tmp_path / "full", *extra))
    cut = fit(tiny_config(dataset, tmp_path / "cut", *extra), callbacks=[_Interrupt(after=3)])  # epoch 0 has 6 steps
    assert cut["interrupted"]
    resumed = fit(tiny_config(dataset, tmp_path / "cut", *extra), resume=True)
    a = torch.load(full["last"], weights_only=False)
    b = torch.load(resumed["last"], weights_only=False)
    assert a["global_step"] == b["global_step"] == 12
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert full["validation"]["top1"] == resumed["validation"]["top1"]
    assert full["validation"]["gflops"] == resumed["validation"]["gflops"]
    assert (tmp_path / "cut" / "config.yaml").is_file() and (tmp_path / "cut" / "metrics.csv").is_file()


def test_eval_json_is_repeatable_and_complete(dataset, tmp_path, capsys):
    result = fit(tiny_config(dataset, tmp_path / "run", "optim.epochs=1", "trainer.limit_train_batches=2"))
    outputs = []
    for _ in range(2):
        assert main(["eval", "--checkpoint", result["best"], "--json", "--workers", "0"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1]
    r = outputs[0]
    assert r["videos"] == 8 and r["policy_mode"] == "deterministic"
    assert r["gflops"] <= r["gflops_dense"] and r["params"] > 11_000_000
    assert abs(r["policy"]["keep"] + r["policy"]["reuse"] + r["policy"]["skip"] - 1) < 1e-6
    assert len(r["blocks"]) == 8
    # per class and the confusion matrix agree with top-1 and the video count
    confusion = torch.tensor(r["confusion"])
    assert confusion.shape == (8, 8) and confusion.sum() == 8
    assert 100 * confusion.diag().sum() / 8 == pytest.approx(r["top1"])
    assert [c["class"] for c in r["per_class"]] == r["classes"] and sum(c["videos"] for c in r["per_class"]) == 8
    for i, c in enumerate(r["per_class"]):
        assert c["top1"] == pytest.approx(100 * confusion[i, i] / confusion[i].sum())
    # best.ckpt scored on the split it was chosen on: last.ckpt's validation beside it (one epoch: the same)
    assert r["last"]["checkpoint"] == result["last"] and r["last"]["top1"] == pytest.approx(r["top1"])
    report = tmp_path / "report.md"
    assert main(["eval", "--checkpoint", result["best"], "--report", str(report), "--workers", "0"]) == 0
    text = report.read_text()
    assert "| block | keep | reuse | skip | instance |" in text
    assert "## Per class" in text and "| true \\ predicted | 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 |" in text
    assert "is the epoch with the best top-1 on val, the split scored here, so its number is optimistic" in text


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_one_line_errors(dataset, tmp_path, capsys):
    assert "unknown config 'nope'" in _error(capsys, ["train", "--config", "nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet18\n  methd: tsn\n")
    assert f"{bad}:3: unknown key 'model.methd'" in _error(capsys, ["train", "--config", str(bad)])
    bad.write_text("model:\n  method: tsx\n")
    err = _error(capsys, ["train", "--config", str(bad), f"data.dataset={dataset}", f"trainer.out={tmp_path}/r"])
    assert "unknown method 'tsx'" in err
    assert "optim.lr must be float" in _error(capsys, ["train", "--config", "demo", "optim.lr=fast"])
    assert "unknown key 'optim.rate'" in _error(capsys, ["train", "--config", "demo", "optim.rate=1"])
    # a checkpoint of another architecture, and one trained for another class count
    ckpt = tmp_path / "other.ckpt"
    other = build_model(backbone="resnet18", method="tsn", num_classes=8, num_segments=3)
    meta = {"config": other.config.to_dict()}
    torch.save({"state_dict": {"model.head.weight": torch.zeros(3, 3)}, "adafuse": meta}, ckpt)
    assert "weights do not fit tsn / resnet18" in _error(capsys, ["eval", "--checkpoint", str(ckpt)])
    from adafuse.checkpoint import save_model

    save_model(ckpt, build_model(backbone="resnet18", method="tsn", num_classes=5, num_segments=3, input_size=32))
    err = _error(capsys, ["eval", "--checkpoint", str(ckpt), "--data", str(dataset)])
    assert "has 8 classes but checkpoint" in err and "was trained for 5" in err
    # the same classes in another order (as `prepare lists --source tree` sorts them): refused, not 12% silently
    from adafuse.data.spec import load_dataset_yaml

    names = list(load_dataset_yaml(dataset).class_names)
    save_model(ckpt, build_model(backbone="resnet18", method="tsn", num_classes=8, num_segments=3, input_size=32,
                                 classes=sorted(names, reverse=True)))
    err = _error(capsys, ["eval", "--checkpoint", str(ckpt), "--data", str(dataset)])
    assert err == (f"adafuse eval: error: {dataset}: class 0 is {names[0]!r} but checkpoint {ckpt} has "
                   f"{sorted(names, reverse=True)[0]!r} there (the same names in another order: list them in the "
                   "checkpoint's order)")
    (tmp_path / "junk.ckpt").write_text("junk")
    assert "not readable" in _error(capsys, ["eval", "--checkpoint", str(tmp_path / "junk.ckpt")])


@pytest.mark.slow
def test_ddp_two_processes_match_single_process_on_the_global_batch(dataset, tmp_path):
    # BatchNorm frozen: per-process batch statistics would otherwise (rightly) differ from the global batch's,
    # and SyncBatchNorm needs a GPU. Dropout off, TSM (no random policy): the gradients must agree.
    common = ("model.method=tsm", "model.dropout=0", "optim.freeze_bn=true", "optim.lr=0.5", "trainer.max_steps=1",
              "optim.epochs=1", "trainer.limit_val_batches=0", "trainer.accelerator=cpu")
    single = fit(tiny_config(dataset, tmp_path / "single", *common, "data.batch_size=4"))
    ddp = fit(tiny_config(dataset, tmp_path / "ddp", *common, "data.batch_size=2", "trainer.devices=2",
                          "trainer.strategy=ddp_spawn"))
    a = torch.load(single["last"], weights_only=False)["state_dict"]
    b = torch.load(ddp["last"], weights_only=False)["state_dict"]
    init = build_model(backbone="resnet18", method="tsm", num_classes=8, num_segments=3)
    moved = 0
    for key, value in a.items():
        assert torch.allclose(value, b[key], atol=1e-6, rtol=1e-4), key
        moved += not torch.equal(value, init.state_dict()[key.removeprefix("model.")])
    assert moved > 20  # the step changed the weights (same init from the seed)


def test_auto_precision_follows_the_accelerator_not_the_machine(monkeypatch):
    # On a GPU machine a CPU run must stay fp32: Lightning turns "16-mixed" on a CPU into bf16 (seen on the H200).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("auto", "auto") == resolve_precision("auto", "gpu") == "16-mixed"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # an explicit choice is kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"
