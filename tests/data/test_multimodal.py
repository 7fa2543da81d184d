"""GenericMultiModalDataModule: one folder per modality, dict images, one geometry for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from geofm.data.collate import collate_samples
from geofm.data.datamodules.multimodal import GenericMultiModalDataModule
from geofm.data.raster import RasterError
from geofm.data.transforms import BatchAugmentation
from tests.data.fixtures import IMAGE_NODATA, make_image, write_tif

S2_BANDS = 12
S1_BANDS = 2
SIZE = 16
NAMES = ("a_1", "a_2", "a_10", "b_3")


@dataclass
class MultiModalFolder:
    """Generated folders: ``root/S2L2A``, ``root/S1GRD``, ``root/labels``, and what they hold."""

    root: Path
    s2: dict[str, np.ndarray] = field(default_factory=dict)
    s1: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def roots(self) -> dict[str, str]:
        return {"S2L2A": str(self.root / "S2L2A"), "S1GRD": str(self.root / "S1GRD")}


def make_multimodal_folder(
    root: Path, names: tuple[str, ...] = NAMES, num_classes: int = 3, size: int = SIZE, seed: int = 0
) -> MultiModalFolder:
    """S2L2A (12 bands) and S1GRD (2 bands, negative dB values) chips on one grid, with labels."""
    rng = np.random.default_rng(seed)
    folder = MultiModalFolder(root)
    for s, name in enumerate(names):
        origin = (440280.0 + 10_000 * s, 3159720.0)
        s2 = make_image(rng, s, S2_BANDS, size, nodata_pixels=2)
        s1 = -20.0 + rng.uniform(0, 5, (S1_BANDS, size, size)).astype(np.float32) - s
        label = rng.integers(0, num_classes, (size, size)).astype("uint8")
        write_tif(root / "S2L2A" / f"{name}_S2L2A.tif", s2, nodata=IMAGE_NODATA, origin=origin)
        write_tif(root / "S1GRD" / f"{name}_S1GRD.tif", s1.astype(np.float32), origin=origin)
        write_tif(root / "labels" / f"{name}_label.tif", label, origin=origin)
        folder.s2[name], folder.s1[name], folder.labels[name] = s2, s1.astype(np.float32), label
    return folder


def datamodule(folder: MultiModalFolder, **kwargs) -> GenericMultiModalDataModule:
    settings = dict(
        modalities=["S2L2A", "S1GRD"],
        batch_size=2,
        train_data_root=folder.roots,
        train_label_data_root=str(folder.root / "labels"),
        val_data_root=folder.roots,
        val_label_data_root=str(folder.root / "labels"),
        predict_data_root=folder.roots,
        image_grep={"S2L2A": "*_S2L2A.tif", "S1GRD": "*_S1GRD.tif"},
        label_grep="*_label.tif",
        num_classes=3,
    )
    settings.update(kwargs)
    return GenericMultiModalDataModule(**settings)


@pytest.fixture
def folder(tmp_path: Path) -> MultiModalFolder:
    return make_multimodal_folder(tmp_path)


def test_batches_are_dicts_of_raw_values(folder: MultiModalFolder):
    dm = datamodule(folder)
    dm.setup("fit")
    dataset = dm.train_dataset
    assert dataset.names == sorted(NAMES)  # common names pair the modalities
    sample = dataset[dataset.names.index("a_10")]
    assert list(sample["image"]) == ["S2L2A", "S1GRD"]
    s2, s1 = sample["image"]["S2L2A"], sample["image"]["S1GRD"]
    assert s2.shape == (S2_BANDS, SIZE, SIZE) and s1.shape == (S1_BANDS, SIZE, SIZE)
    written = folder.s2["a_10"]
    nodata = written == IMAGE_NODATA
    assert torch.isnan(s2[torch.from_numpy(nodata)]).all()
    np.testing.assert_array_equal(s2.numpy()[~nodata], written[~nodata])  # raw values
    np.testing.assert_array_equal(s1.numpy(), folder.s1["a_10"])
    np.testing.assert_array_equal(sample["mask"].numpy(), folder.labels["a_10"])
    assert sample["mask"].dtype == torch.int64
    # nodata_mask: the union over modalities (S1 has none here)
    np.testing.assert_array_equal(sample["nodata_mask"].numpy(), nodata.any(axis=0))
    # Grid, name and location come from the first modality.
    assert sample["filename"].endswith("a_10_S2L2A.tif")
    assert sample["transform"][2] == 440280.0 + 10_000 * NAMES.index("a_10")
    assert sample["location_coords"].shape == (2,)

    batch = next(iter(dm.train_dataloader()))
    assert batch["image"]["S2L2A"].shape == (2, S2_BANDS, SIZE, SIZE)
    assert batch["image"]["S1GRD"].shape == (2, S1_BANDS, SIZE, SIZE)
    assert batch["mask"].shape == (2, SIZE, SIZE)
    assert batch["nodata_mask"].shape == (2, SIZE, SIZE)
    assert len(batch["filename"]) == 2


def test_band_selection_and_settings_per_modality(folder: MultiModalFolder):
    dm = datamodule(
        folder,
        dataset_bands={"S1GRD": ["VV", "VH"]},
        output_bands={"S1GRD": ["VH"]},
        means={"S1GRD": [-20.0, -15.0]},  # per dataset band: reduced to VH
        stds={"S1GRD": [2.0, 3.0]},
        constant_scale={"S2L2A": 0.0001},
        no_data_replace=0.0,
    )
    settings = dm.preprocess_settings()
    assert list(settings) == ["S2L2A", "S1GRD"]
    assert settings["S1GRD"]["mean"] == [-15.0] and settings["S1GRD"]["std"] == [3.0]
    assert settings["S1GRD"]["bands"] == ["VH"]
    assert settings["S2L2A"]["constant_scale"] == 0.0001 and settings["S1GRD"]["constant_scale"] == 1.0
    assert settings["S2L2A"]["no_data_replace"] == settings["S1GRD"]["no_data_replace"] == 0.0
    dm.setup("fit")
    sample = dm.train_dataset[0]
    np.testing.assert_array_equal(sample["image"]["S1GRD"].numpy(), folder.s1["a_1"][1:2])


def test_settings_name_unknown_modalities(folder: MultiModalFolder):
    with pytest.raises(ValueError, match=r"means has keys \['S2L1C'\].*modalities \['S2L2A', 'S1GRD'\]"):
        datamodule(folder, means={"S2L1C": [1.0]}, stds={"S2L1C": [1.0]})
    with pytest.raises(ValueError, match="train_data_root must be a dict of folders by modality"):
        datamodule(folder, train_data_root=str(folder.root))
    with pytest.raises(ValueError, match=r"Modality 'S1GRD': .*VV"):
        datamodule(folder, dataset_bands={"S1GRD": ["HH", "HV"]}, output_bands={"S1GRD": ["VV"]})


def test_missing_modality_names_the_file(folder: MultiModalFolder):
    (folder.root / "S1GRD" / "a_2_S1GRD.tif").unlink()
    dm = datamodule(folder)
    with pytest.raises(FileNotFoundError, match=r"Modality 'S1GRD' has no file for 1 sample.*a_2_S2L2A\.tif.*S1GRD"):
        dm.setup("fit")


def test_allow_missing_modalities(folder: MultiModalFolder):
    (folder.root / "S2L2A" / "a_2_S2L2A.tif").unlink()
    dm = datamodule(folder, allow_missing_modalities=True, batch_size=1)
    dm.setup("fit")
    dataset = dm.train_dataset
    sample = dataset[dataset.names.index("a_2")]
    assert list(sample["image"]) == ["S1GRD"]  # the modality is absent, not filled
    assert sample["filename"].endswith("a_2_S1GRD.tif")  # the first modality it has
    assert list(dataset[dataset.names.index("a_1")]["image"]) == ["S2L2A", "S1GRD"]
    # batch_size 1 batches every sample
    assert len(list(dm.train_dataloader())) == len(NAMES)
    # larger batches that mix modalities are refused, naming the sample and what it lacks
    both = dataset[dataset.names.index("a_1")]
    with pytest.raises(ValueError, match=r"a_2_S1GRD\.tif' lacks \['S2L2A'\].*batch_size=1"):
        collate_samples([both, sample])


def test_modalities_must_share_the_grid(folder: MultiModalFolder):
    write_tif(folder.root / "S1GRD" / "a_1_S1GRD.tif", folder.s1["a_1"], origin=(0.0, 0.0))
    dm = datamodule(folder)
    dm.setup("fit")
    with pytest.raises(RasterError, match=r"a_1_S1GRD\.tif' \(modality 'S1GRD'\) is not on the grid"):
        dm.train_dataset[0]


def test_streaming_is_refused(folder: MultiModalFolder):
    dm = datamodule(folder)
    dm.setup("predict")
    assert "mask" not in dm.predict_dataset[0]
    with pytest.raises(NotImplementedError, match="--streaming"):
        dm.predict_dataset.image_files


def test_augmentation_moves_every_modality_and_the_masks_alike():
    gen = torch.Generator().manual_seed(0)
    s2 = torch.rand(3, S2_BANDS, 8, 8, generator=gen)
    s1 = torch.rand(3, S1_BANDS, 8, 8, generator=gen)
    mask = torch.randint(0, 3, (3, 8, 8), generator=gen)
    nodata = torch.rand(3, 8, 8, generator=gen) > 0.8
    batch = {
        "image": {"S2L2A": s2.clone(), "S1GRD": s1.clone()},
        "mask": mask.clone(),
        "nodata_mask": nodata.clone(),
    }
    import kornia.augmentation as K

    out = BatchAugmentation([K.RandomHorizontalFlip(p=0.5)])(batch)
    flipped = [bool(torch.equal(out["mask"][i], mask[i].flip(-1))) for i in range(3)]
    kept = [bool(torch.equal(out["mask"][i], mask[i])) for i in range(3)]
    assert all(f or k for f, k in zip(flipped, kept))
    for i in range(3):
        def expect(x):
            return x[i].flip(-1) if flipped[i] else x[i]

        torch.testing.assert_close(out["image"]["S2L2A"][i], expect(s2))
        torch.testing.assert_close(out["image"]["S1GRD"][i], expect(s1))
        assert torch.equal(out["nodata_mask"][i], expect(nodata))
    assert list(out["image"]) == ["S2L2A", "S1GRD"]

    # Always flipping: every modality and both masks are mirrored.
    batch = {"image": {"S2L2A": s2.clone(), "S1GRD": s1.clone()}, "mask": mask.clone()}
    out = BatchAugmentation([K.RandomHorizontalFlip(p=1.0)])(batch)
    torch.testing.assert_close(out["image"]["S2L2A"], s2.flip(-1))
    torch.testing.assert_close(out["image"]["S1GRD"], s1.flip(-1))
    assert torch.equal(out["mask"], mask.flip(-1))


def test_augmentation_refuses_modalities_of_other_sizes():
    batch = {"image": {"S2L2A": torch.rand(2, 3, 8, 8), "S1GRD": torch.rand(2, 2, 4, 4)}}
    import kornia.augmentation as K

    with pytest.raises(ValueError, match="one geometry to every modality"):
        BatchAugmentation([K.RandomHorizontalFlip(p=1.0)])(batch)


def test_short_name_resolves():
    import geofm.data
    from geofm.data.datamodules import GenericMultiModalDataModule as FromPackage

    assert geofm.data.GenericMultiModalDataModule is GenericMultiModalDataModule is FromPackage


def test_terramind_fits_and_predicts_on_two_modalities(tmp_path: Path):
    """End to end: dict batches from the folders reach TerraMind through one Preprocess per
    modality; a training step changes both modalities' patch embeddings; prediction maps cover
    the chip."""
    import lightning.pytorch as pl

    from geofm.tasks import SemanticSegmentationTask

    folder = make_multimodal_folder(tmp_path / "chips", size=64)  # 4x4 tokens of 16 pixels
    torch.manual_seed(0)
    means = {"S2L2A": [1000.0] * S2_BANDS, "S1GRD": [-18.0, -18.0]}
    stds = {"S2L2A": [500.0] * S2_BANDS, "S1GRD": [2.0, 2.0]}
    dm = datamodule(folder, means=means, stds=stds, predict_data_root=folder.roots)
    task = SemanticSegmentationTask(
        model_args=dict(
            backbone="terramind_v1_tiny", backbone_modalities=["S2L2A", "S1GRD"], decoder="UperNetDecoder",
            decoder_channels=16, num_classes=3,
            necks=[{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
                   {"name": "ReshapeTokensToImage", "remove_cls_token": False},
                   {"name": "LearnedInterpolateToPyramidal"}],
        ),
        lr=1e-2,
    )
    embeddings = {name: p.detach().clone() for name, p in task.model.encoder.named_parameters() if ".proj." in name}
    assert any("sen1grd" in name for name in embeddings) and any("sen2l2a" in name for name in embeddings)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=dm)
    moved = {name for name, p in task.model.encoder.named_parameters()
             if name in embeddings and not torch.equal(p.detach(), embeddings[name])}
    assert any("sen1grd" in name for name in moved) and any("sen2l2a" in name for name in moved)
    # The task took the datamodule's statistics per modality.
    torch.testing.assert_close(task.preprocess["S1GRD"].mean.flatten(), torch.tensor([-18.0, -18.0]))

    predictions = trainer.predict(task, datamodule=dm)
    maps = torch.cat([p["prediction"] for p in predictions])
    assert maps.shape == (len(NAMES), 64, 64)
    assert set(maps.unique().tolist()) <= {0, 1, 2}
