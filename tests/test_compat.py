"""TerraTorch configs and custom modules under geofm's command (issue 13)."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from geofm.cli import main as geofm
from geofm.compat.terratorch import TerratorchAliasError, resolve_class_path, terratorch_aliases
from tests.test_cli import folders, write_config  # noqa: F401 - the fixture is used by name

CUSTOM_BACKBONE = '''
import torch
from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY


class TinyEncoder(torch.nn.Module):
    def __init__(self, num_channels: int = 6):
        super().__init__()
        self.conv = torch.nn.Conv2d(num_channels, 8, 3, padding=1)
        self.out_channels = [8]

    def forward(self, x):
        return [self.conv(x)]


@TERRATORCH_BACKBONE_REGISTRY.register
def tt_tiny_encoder_TAG(num_channels: int = 6, pretrained: bool = False):
    return TinyEncoder(num_channels)
'''


def terratorch_config(tmp_path: Path, folders, **trainer) -> Path:  # noqa: F811
    """The test CLI config written the TerraTorch way: terratorch. paths, custom modules,
    TerraTorch's callbacks. Names are unique per test: registrations outlive a command."""
    tag = tmp_path.name.replace("-", "_")
    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    custom = tmp_path / f"custom_modules_{tag}"
    custom.mkdir(exist_ok=True)
    (custom / "__init__.py").write_text("from .tiny import TinyEncoder\n")
    (custom / "tiny.py").write_text(CUSTOM_BACKBONE.replace("TAG", tag))
    config["custom_modules_path"] = str(custom)
    config["model"]["class_path"] = "terratorch.tasks.SemanticSegmentationTask"
    config["model"]["init_args"]["model_args"] = {
        "backbone": f"tt_tiny_encoder_{tag}",
        "backbone_num_channels": 6,
        "decoder": "IdentityDecoder",
        "num_classes": 3,
    }
    config["data"]["class_path"] = "terratorch.datamodules.GenericNonGeoSegmentationDataModule"
    config["trainer"]["callbacks"] = [
        {"class_path": "LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
        {"class_path": "StateDictAwareModelCheckpoint", "init_args": {"filename": "{epoch}", "monitor": "val/loss"}},
        {
            "class_path": "terratorch.cli_tools.StateDictAwareModelCheckpoint",
            "init_args": {"filename": "{epoch}_state_dict", "save_weights_only": True, "monitor": "val/loss"},
        },
    ]
    config["trainer"].update(trainer)
    path = tmp_path / "terratorch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_terratorch_config_fits_with_fast_dev_run(tmp_path, folders, caplog):  # noqa: F811
    config = terratorch_config(tmp_path, folders, fast_dev_run=True)
    with caplog.at_level(logging.INFO, logger="geofm.compat.terratorch"):
        assert geofm(["fit", "-c", str(config)]) == 0
    aliases = [r.getMessage() for r in caplog.records if " read as " in r.getMessage()]
    assert "terratorch.tasks.SemanticSegmentationTask read as geofm.tasks.SemanticSegmentationTask" in aliases
    assert "terratorch.registry.TERRATORCH_BACKBONE_REGISTRY read as geofm.registry.GEOFM_BACKBONE_REGISTRY" in aliases
    assert len(aliases) == len(set(aliases))  # once per path
    # fast_dev_run writes no checkpoint at all.
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    # The aliases are gone once the command ends.
    from geofm.compat import terratorch as compat

    assert "terratorch" not in sys.modules and compat._finder not in sys.meta_path
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("terratorch.tasks")


def test_terratorch_checkpoints_one_last(tmp_path, folders):  # noqa: F811
    """Two StateDictAwareModelCheckpoints (full + weights-only) replace the default one, write to
    the run's checkpoints/, and only the full one writes last.ckpt, which resumes."""
    config = terratorch_config(tmp_path, folders, max_epochs=1)
    assert geofm(["fit", "-c", str(config)]) == 0
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch=0.ckpt", "epoch=0_state_dict.ckpt", "last.ckpt"], names
    assert geofm(["fit", "-c", str(config), "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0


def test_prefix_swapped_paths(tmp_path, folders):  # noqa: F811
    """`terratorch.` -> `geofm.` gives geofm.datamodules.X: read as geofm.data.datamodules.X."""
    from geofm.cli_lightning import run_lightning_cli

    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["model"]["class_path"] = "geofm.tasks.SemanticSegmentationTask"
    config["data"]["class_path"] = "geofm.datamodules.GenericNonGeoSegmentationDataModule"
    path = tmp_path / "swapped.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_lightning_cli(["-c", str(path), "--trainer.logger", "false"], run=False)
    assert type(cli.datamodule).__module__ == "geofm.data.datamodules.segmentation"
    import geofm

    assert "datamodules" not in vars(geofm)  # the alias does not outlive the command


def test_resolve_class_path_and_missing_names():
    assert resolve_class_path("terratorch.tasks.PixelwiseRegressionTask") == "geofm.tasks.PixelwiseRegressionTask"
    assert resolve_class_path("geofm.datasets.GenericNonGeoSegmentationDataset") == (
        "geofm.data.datasets.GenericNonGeoSegmentationDataset"
    )
    # TerraTorch's defining modules fall back to the package geofm has.
    assert resolve_class_path(
        "terratorch.datamodules.generic_pixel_wise_data_module.GenericNonGeoSegmentationDataModule"
    ) == "geofm.data.datamodules.GenericNonGeoSegmentationDataModule"
    assert resolve_class_path("torch.optim.AdamW") == "torch.optim.AdamW"
    assert resolve_class_path("terratorch.tasks.ObjectDetectionTask") == "geofm.tasks.ObjectDetectionTask"
    with pytest.raises(TerratorchAliasError, match=r"terratorch\.tasks\.WxCDownscalingTask: geofm has no "
                       r"WxCDownscalingTask \(looked in geofm\.tasks\)\. The closest geofm name is geofm\.\w+"):
        resolve_class_path("terratorch.tasks.WxCDownscalingTask")
    with pytest.raises(TerratorchAliasError, match="use geofm.models.EncoderDecoderFactory"):
        resolve_class_path("terratorch.models.PrithviModelFactory")


def test_missing_terratorch_class_is_one_line(tmp_path, folders, capsys):  # noqa: F811
    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["model"]["class_path"] = "terratorch.tasks.SemanticSegmentationTaskk"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert geofm(["fit", "-c", str(path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("geofm: error: model.class_path: terratorch.tasks.SemanticSegmentationTaskk: geofm has no")
    assert "geofm.tasks.SemanticSegmentationTask" in last


def test_registries_under_terratorch_names():
    from geofm.registry import GEOFM_BACKBONE_REGISTRY, GEOFM_DECODER_REGISTRY, GEOFM_NECK_REGISTRY

    with terratorch_aliases():
        registry = importlib.import_module("terratorch.registry")
        assert registry.TERRATORCH_BACKBONE_REGISTRY is GEOFM_BACKBONE_REGISTRY
        assert registry.TERRATORCH_DECODER_REGISTRY is GEOFM_DECODER_REGISTRY
        assert registry.TERRATORCH_NECK_REGISTRY is GEOFM_NECK_REGISTRY
        from terratorch.registry import BACKBONE_REGISTRY  # noqa: F401 - the combined one, too
        with pytest.raises(ImportError):
            from terratorch.registry import TERRATORCH_FULL_MODEL_REGISTRY  # noqa: F401
    assert "terratorch.registry" not in sys.modules


def test_custom_modules_path_relative_to_working_folder(tmp_path, folders, monkeypatch):  # noqa: F811
    """TerraTorch resolves custom_modules_path from the working folder; geofm also tries the
    config's folder first."""
    config = terratorch_config(tmp_path, folders, fast_dev_run=True)
    data = yaml.safe_load(config.read_text())
    data["custom_modules_path"] = Path(data["custom_modules_path"]).name
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    moved = elsewhere / "tt.yaml"
    moved.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert geofm(["fit", "-c", str(moved)]) == 0


def test_rich_progress_bar_without_rich_names_the_fix(tmp_path, folders, capsys, monkeypatch):  # noqa: F811
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "rich" else real(name, *a))
    config = write_config(tmp_path, folders)
    assert geofm(["fit", "-c", str(config), "--trainer.callbacks+=RichProgressBar"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        "geofm: error: trainer.callbacks[0]: RichProgressBar needs the 'rich' package, which is not "
        "installed: pip install rich (or remove RichProgressBar from the config)."
    )


def test_rich_progress_bar(tmp_path, folders):  # noqa: F811
    config = write_config(tmp_path, folders)
    assert geofm(["fit", "-c", str(config), "--trainer.callbacks+=RichProgressBar", "--trainer.fast_dev_run", "true",
                  "--trainer.enable_progress_bar", "true"]) == 0


def test_arrange_checkpoint_callbacks(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from geofm.callbacks import StateDictAwareModelCheckpoint, arrange_checkpoint_callbacks

    both = [ModelCheckpoint(save_last=True), ModelCheckpoint(save_last=True, dirpath=str(tmp_path / "x"))]
    arrange_checkpoint_callbacks(both, tmp_path / "checkpoints", fast_dev_run=False)
    assert [cb.save_last for cb in both] == [True, False]
    assert both[0].dirpath == str(tmp_path / "checkpoints") and both[1].dirpath == str(tmp_path / "x")
    # The full one writes last.ckpt, not the weights-only one listed first.
    pair = [StateDictAwareModelCheckpoint(save_weights_only=True), StateDictAwareModelCheckpoint()]
    arrange_checkpoint_callbacks(pair, tmp_path, fast_dev_run=False)
    assert [cb.save_last for cb in pair] == [None, True]
    assert pair[0].state_key != pair[1].state_key
    # An explicit `save_last: false` everywhere is respected.
    off = [ModelCheckpoint(save_last=False)]
    arrange_checkpoint_callbacks(off, tmp_path, fast_dev_run=False)
    assert off[0].save_last is False
    smoke = [ModelCheckpoint(save_last=True)]
    arrange_checkpoint_callbacks(smoke, tmp_path, fast_dev_run=True)
    assert smoke[0].save_last is False


def test_custom_module_without_cli_keeps_terratorch_unknown(tmp_path):
    module = tmp_path / "uses_tt.py"
    module.write_text(textwrap.dedent("import terratorch.registry\n"))
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("uses_tt")
    finally:
        sys.path.remove(str(tmp_path))
