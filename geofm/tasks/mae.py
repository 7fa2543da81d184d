"""``MAEPretrainingTask``: continued masked-autoencoder pretraining of a Prithvi ViT.

The model is a :class:`~geofm.models.mae.model.PrithviMAE` built by ``PrithviMAEFactory`` from
``model_args`` (``backbone: prithvi_eo_v2_300``, ``backbone_pretrained``/``backbone_ckpt_path``,
``backbone_bands``, ``backbone_num_frames``, ``decoder_embed_dim``/``decoder_depth``/
``decoder_num_heads``); official weights load into encoder and decoder.

Each step: the raw image goes through the task's :class:`~geofm.models.preprocess.Preprocess`
(by default the backbone's pretraining statistics), a random ``mask_ratio`` of its patch tokens
is masked, and the loss is the mean squared error between the decoder's prediction and the
(per-patch normalised, with ``norm_pix_loss``) input values, on masked patches only. Nodata
pixels (NaN in the raw image, or ``nodata_mask``) count in no loss. Validation and test mask
with a noise seeded by the batch index, so their losses compare across epochs.

The checkpoint (``model.encoder.*`` + ``model.decoder.*``) resumes training, and loads as it is
into any ``prithvi_eo_*`` backbone for fine-tuning: ``backbone_ckpt_path: .../last.ckpt`` (the
encoder is found by its patch embedding, the decoder ignored). ``task.model.state_dict()`` is
the official V2 layout (``encoder.*`` + ``decoder.*``), for tools that read official files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.models.mae.loss import masked_patch_loss, patch_target
from geofm.models.mae.model import MAEOutput, PrithviMAE, kept_tokens, patchify, unpatchify
from geofm.tasks import plotting
from geofm.tasks.base import BaseTask

__all__ = ["MAEPretrainingTask"]

log = logging.getLogger(__name__)


class MAEPretrainingTask(BaseTask):
    """Masked-autoencoder pretraining on unlabelled images (e.g. ``GenericUnlabeledDataModule``).

    Logs ``train/loss`` and ``val/loss`` (the reconstruction loss) and, with ``plot_on_val``,
    ``val/reconstruction_<i>`` figures (input | masked | reconstruction) to loggers that take
    figures (TensorBoard).

    Args:
        model_args: ``PrithviMAEFactory`` arguments: ``backbone`` (a Prithvi ViT variant),
            ``backbone_<arg>`` for the encoder, ``decoder_embed_dim``, ``decoder_depth``,
            ``decoder_num_heads`` (default: the official 512, 8, 16).
        model: A ready :class:`~geofm.models.mae.model.PrithviMAE` instead of ``model_args``.
        model_factory: Name of the model factory (``PrithviMAEFactory``).
        mask_ratio: Share of patch tokens masked, in ``(0, 1)`` (official: 0.75).
        norm_pix_loss: Predict each patch normalised by its own mean and variance (the official
            pretraining's target); ``false`` predicts the normalised input values.
        optimizer: A ``torch.optim`` class name or class path.
        lr: Learning rate.
        optimizer_hparams: Other optimizer arguments (``{"weight_decay": 0.05}``).
        param_groups: Per-group options by fnmatch pattern on parameter names
            (``[{"pattern": "encoder.*", "lr": 1e-5}]``).
        lr_overrides: TerraTorch's ``{name substring: lr}``.
        scheduler: A ``torch.optim.lr_scheduler`` class name or class path.
        scheduler_hparams: Its arguments plus ``interval``, ``warmup_epochs``... (see
            :func:`geofm.tasks.optim.build_scheduler`).
        means: Per-band means (default: the datamodule's, else the backbone's pretraining ones).
        stds: Per-band standard deviations, with ``means``.
        plot_on_val: Every ``plot_on_val`` epochs (``true``: every epoch; 0: never), log a
            reconstruction figure of the first sample of each of the first 10 validation batches.
        rgb_indices: Bands shown as red, green, blue (else the datamodule's, else the first three).
    """

    model_task = "mae"
    plot_mode = "reconstruction"
    loss_kind = "mae"
    needs_num_classes = False
    prediction_kind = "values"

    def __init__(
        self,
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        model_factory: str = "PrithviMAEFactory",
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        optimizer: str = "AdamW",
        lr: float = 1.5e-4,
        optimizer_hparams: dict[str, Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        lr_overrides: dict[str, float] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
        means: list[float] | None = None,
        stds: list[float] | None = None,
        plot_on_val: bool | int = 0,
        rgb_indices: list[int] | None = None,
    ) -> None:
        try:
            kept_tokens(2, mask_ratio)
        except ValueError as err:
            raise ValueError(f"model.init_args.{err}") from None
        super().__init__(
            model_factory=model_factory,
            model_args=model_args,
            model=model,
            optimizer=optimizer,
            lr=lr,
            optimizer_hparams=optimizer_hparams,
            param_groups=param_groups,
            lr_overrides=lr_overrides,
            scheduler=scheduler,
            scheduler_hparams=scheduler_hparams,
            means=means,
            stds=stds,
            plot_on_val=plot_on_val,
            rgb_indices=rgb_indices,
        )

    # ------------------------------------------------------------------ configuration
    def configure_models(self, model: nn.Module | None = None) -> None:
        """Build the MAE (or take ``model``), and give it the task's ``mask_ratio``.

        Raises:
            TypeError: when the model is not a :class:`PrithviMAE`.
        """
        super().configure_models(model)
        if not isinstance(self.model, PrithviMAE):
            raise TypeError(
                f"MAEPretrainingTask trains a PrithviMAE, got {type(self.model).__name__}; use "
                "model_factory: PrithviMAEFactory with model_args.backbone: prithvi_eo_*."
            )
        self.model.mask_ratio = float(self.hparams.mask_ratio)

    def configure_losses(self, loss: nn.Module | None = None) -> None:
        """The loss is :func:`~geofm.models.mae.loss.masked_patch_loss`, computed in the step."""
        self.criterion = None

    def build_metrics(self) -> MetricCollection:
        """No metrics besides the loss."""
        return MetricCollection({})

    # ------------------------------------------------------------------ steps
    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The normalised image ``(B, C, T, H, W)``: what the MAE reconstructs."""
        return _frames(self.preprocess(batch["image"]))

    def metric_inputs(
        self, prediction: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction, target

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction

    def prediction_outputs(
        self, logits: torch.Tensor, probabilities: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError(self._no_predict())

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> Any:
        raise NotImplementedError(self._no_predict())

    @staticmethod
    def _no_predict() -> str:
        return (
            "MAEPretrainingTask does not predict: fine-tune the pretrained encoder instead "
            "(model_args.backbone_ckpt_path: <this run's checkpoint> in a segmentation, "
            "regression or classification config)."
        )

    def _valid(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """``(B, C, T, H, W)`` bool: True where the raw value counts in the loss."""
        image = batch["image"]
        valid = torch.isfinite(image)
        nodata = batch.get("nodata_mask")
        if isinstance(nodata, torch.Tensor) and nodata.shape == (image.shape[0], *image.shape[-2:]):
            extra = (None,) * (image.ndim - 3)  # broadcast over bands (and frames)
            valid = valid & ~nodata[(slice(None), *extra)].bool()
        return _frames(valid)

    def _noise(self, image: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Masking noise seeded by the batch index (validation and test)."""
        patch = self.model.patch_size
        frames = image.shape[2] if image.ndim == 5 else 1
        count = 1
        for size, side in zip((frames, *image.shape[-2:]), patch, strict=True):
            count *= size // side
        generator = torch.Generator().manual_seed(int(batch_idx))
        return torch.rand(image.shape[0], count, generator=generator).to(image.device)

    def _mae_step(
        self, batch: Mapping[str, Any], stage: str, batch_idx: int
    ) -> tuple[torch.Tensor, MAEOutput, torch.Tensor]:
        """Loss, model output and normalised ``(B, C, T, H, W)`` input of one step."""
        self._check_batch(batch)
        image = batch["image"]
        if isinstance(image, Mapping):
            raise ValueError("MAEPretrainingTask takes one image tensor, not a dict of modalities.")
        inputs = self.preprocess(image)
        noise = None if stage == "train" else self._noise(image, batch_idx)
        output = self.model(
            inputs, mask_ratio=self.hparams.mask_ratio, noise=noise, **self._model_inputs(batch)
        )
        frames = _frames(inputs)
        patches = patchify(frames, self.model.patch_size)
        valid = patchify(self._valid(batch), self.model.patch_size)
        loss = masked_patch_loss(
            output.output, patches, output.mask, valid, bool(self.hparams.norm_pix_loss)
        )
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=image.shape[0],
        )
        return loss, output, frames

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._mae_step(batch, "train", batch_idx)[0]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        _, output, inputs = self._mae_step(batch, "val", batch_idx)
        if self._plots_batch(batch_idx):
            self._plot_reconstruction(batch, inputs, output, batch_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._mae_step(batch, "test", batch_idx)

    # ------------------------------------------------------------------ plots
    def reconstruct(
        self, inputs: torch.Tensor, output: MAEOutput, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and mask in image form, for figures.

        Args:
            inputs: Normalised ``(B, C, T, H, W)``.
            output: The model's output on ``inputs``.
            valid: ``(B, C, T, H, W)`` bool, False at nodata (default: all valid).

        Returns:
            ``(reconstruction, masked)``: ``(B, C, T', H', W')`` (the input cropped to whole
            patches, masked patches replaced by the prediction in input units) and
            ``(B, T', H', W')`` bool, True on masked patches.
        """
        patch = self.model.patch_size
        patches = patchify(inputs, patch)
        if valid is None:
            valid = torch.ones_like(inputs, dtype=torch.bool)
        valid_p = patchify(valid, patch)
        _, mean, std = patch_target(patches, valid_p, bool(self.hparams.norm_pix_loss))
        predicted = output.output.detach().to(patches) * std + mean
        mask = output.mask.detach().bool()[..., None]
        mixed = torch.where(mask, predicted, patches)
        channels = inputs.shape[1]
        reconstruction = unpatchify(mixed, patch, output.grid, channels)
        masked = unpatchify(mask.expand_as(patches).to(patches), patch, output.grid, channels)
        return reconstruction, masked[:, 0].bool()

    @torch.no_grad()
    def reconstruct_batch(
        self, batch: Mapping[str, Any], batch_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask a raw batch as validation does (noise seeded by ``batch_idx``) and reconstruct.

        Returns:
            ``(inputs, reconstruction, masked)``: the normalised input ``(B, C, T, H, W)``, and
            what :meth:`reconstruct` returns (cropped to whole patches).
        """
        image = batch["image"]
        inputs = self.preprocess(image)
        output = self.model(
            inputs, mask_ratio=self.hparams.mask_ratio, noise=self._noise(image, batch_idx),
            **self._model_inputs(batch),
        )
        frames = _frames(inputs)
        return (frames, *self.reconstruct(frames, output, self._valid(batch)))

    def _plot_reconstruction(
        self, batch: Mapping[str, Any], inputs: torch.Tensor, output: MAEOutput, batch_idx: int
    ) -> None:
        writers = self._figure_writers()
        if not writers:
            return
        valid = self._valid(batch)[:1]
        reconstruction, masked = self.reconstruct(inputs[:1], _first(output), valid)
        shape = reconstruction.shape[-3:]
        image = inputs[0, :, : shape[0], : shape[1], : shape[2]]
        figure = plotting.plot_reconstruction(image, masked[0], reconstruction[0], self.rgb_indices)
        for writer in writers:
            tag = f"val/reconstruction_{batch_idx}"
            writer.add_figure(tag, figure, global_step=self.global_step)


def _frames(image: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as ``(B, C, 1, H, W)``; ``(B, C, T, H, W)`` unchanged."""
    return image.unsqueeze(2) if image.ndim == 4 else image


def _first(output: MAEOutput) -> MAEOutput:
    """The first sample of ``output``."""
    return MAEOutput(output.output[:1], output.mask[:1], output.grid)
