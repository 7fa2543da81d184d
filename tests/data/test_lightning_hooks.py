"""The datamodule inside a Lightning Trainer: augmentation per split in on_after_batch_transfer."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from geofm.data import GenericNonGeoSegmentationDataModule
from tests.data.fixtures import make_pixel_folder


class Recorder(pl.LightningModule):
    """Records what reaches each step; checks the module hook runs after the datamodule's."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[str, list[dict]] = {"train": [], "val": [], "test": [], "predict": []}
        self.hook_calls = 0

    def on_after_batch_transfer(self, batch, dataloader_idx):
        self.hook_calls += 1
        batch["module_saw_shape"] = tuple(batch["image"].shape)
        return batch

    def _record(self, split, batch):
        self.seen[split].append({k: v for k, v in batch.items()})
        return (self.weight * batch["image"].mean()).sum()

    def training_step(self, batch, batch_idx):
        return self._record("train", batch)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def test_step(self, batch, batch_idx):
        self._record("test", batch)

    def predict_step(self, batch, batch_idx):
        return self._record("predict", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You have overridden `on_after_batch_transfer`")
def test_trainer_applies_split_augmentation(tmp_path):
    folder = make_pixel_folder(tmp_path, names=("p", "q"), size=32)
    roots = dict(
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        no_data_replace=0,
        batch_size=2,
    )
    for split in ("train", "val", "test"):
        roots[f"{split}_data_root"] = folder.image_root
        roots[f"{split}_label_data_root"] = folder.label_root
    dm = GenericNonGeoSegmentationDataModule(
        predict_data_root=folder.image_root,
        train_transform=[
            {"class_path": "kornia.augmentation.RandomCrop", "init_args": {"size": [16, 16]}}
        ],
        val_transform=[
            {"class_path": "kornia.augmentation.CenterCrop", "init_args": {"size": [8, 8]}}
        ],
        **roots,
    )
    model = Recorder()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.predict(model, datamodule=dm)
    train, val = model.seen["train"][0], model.seen["val"][0]
    assert train["image"].shape == (2, 6, 16, 16) and train["mask"].shape == (2, 16, 16)
    assert train["module_saw_shape"] == (2, 6, 16, 16)  # datamodule hook ran first
    assert model.hook_calls == sum(len(v) for v in model.seen.values())  # once per batch
    assert val["image"].shape == (2, 6, 8, 8) and val["mask"].shape == (2, 8, 8)
    assert model.seen["test"][0]["image"].shape == (2, 6, 32, 32)  # no test_transform
    predicted = model.seen["predict"][0]
    assert predicted["image"].shape == (2, 6, 32, 32) and len(predicted["transform"]) == 2
