"""Strict ImageNet weight loading from files the tests write (nothing is downloaded)."""

import pytest
import torch
import torchvision

from adafuse.errors import UserError
from adafuse.models import build_model, load_pretrained


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return path


def test_torchvision_resnet50_loads_with_only_policy_and_head_missing(resnet50_file):
    model = build_model(backbone="resnet50", method="adafuse_tsm", num_classes=7, num_segments=2, policy_hidden=8)
    report = load_pretrained(model, str(resnet50_file))
    file_state = torch.load(resnet50_file)
    assert report.dropped == ["fc.bias", "fc.weight"]
    assert report.loaded == len(file_state) - 2
    assert report.missing and all(".fusion." in k or k.startswith("head.") for k in report.missing)
    assert {"head.weight", "head.bias"} <= set(report.missing)
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in file_state.items() if not k.startswith("fc."))


def test_checkpoint_with_module_prefix_and_nesting(tmp_path):
    state = {f"module.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state}, path)
    model = build_model(backbone="resnet18", method="tsn", num_classes=3, num_segments=2)
    assert load_pretrained(model, str(path)).missing == ["head.bias", "head.weight"]


def test_mismatched_files_are_errors(tmp_path, resnet50_file):
    r18 = build_model(backbone="resnet18", method="adafuse_tsn", num_classes=3, num_segments=2, policy_hidden=8)
    with pytest.raises(UserError, match=r"resnet50\.pth: 198 keys do not belong to resnet18"):
        load_pretrained(r18, str(resnet50_file))
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    expected = r"shape\.pth: layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\), resnet18 needs"
    with pytest.raises(UserError, match=expected):
        load_pretrained(r18, str(tmp_path / "shape.pth"))
    state = torchvision.models.resnet18().state_dict()
    del state["layer2.0.bn1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"partial\.pth: 1 resnet18 weights are missing .*layer2\.0\.bn1\.weight"):
        load_pretrained(r18, str(tmp_path / "partial.pth"))
    state = torchvision.models.resnet18().state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(UserError, match=r"extra\.pth: 1 keys do not belong to resnet18 \(e\.g\. extra\.weight\)"):
        load_pretrained(r18, str(tmp_path / "extra.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pth: not a readable PyTorch checkpoint"):
        load_pretrained(r18, str(tmp_path / "junk.pth"))
    with pytest.raises(UserError, match="no such file"):
        load_pretrained(r18, str(tmp_path / "missing.pth"))
    with pytest.raises(UserError, match="neither a file nor a torchvision weights name"):
        load_pretrained(r18, "IMAGENET9K_V9")
