"""``EmbeddingTask``: embeddings of any backbone, for prediction only.

The task holds an :class:`~geofm.models.embedder.Embedder` (a backbone from the registry,
optional necks, one feature level, a pooling) and the task's
:class:`~geofm.models.preprocess.Preprocess`, completed like every task's: the datamodule's
settings, else the task's ``means``/``stds``, else the backbone's pretraining statistics.
Its :class:`~geofm.inference.predictor.Predictor` is the one function that chips
(``predict_step``, ``geofm embed``) and streamed scenes
(:func:`~geofm.inference.embedding_scenes.embed_scene`) call.

A fine-tuned geofm checkpoint of another task (``ckpt_path``) gives its encoder and its
preprocessing; its necks, decoder and head are left out.

``fit``, ``validate`` and ``test`` raise: there is nothing to train or score.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.inference.predictor import Predictor
from geofm.models.embedder import POOLINGS, Pooling, build_embedder
from geofm.tasks.base import _DATA_KEYS, BaseTask

__all__ = ["EMBEDDING_OUTPUTS", "EmbeddingOutput", "EmbeddingTask"]

log = logging.getLogger(__name__)

EmbeddingOutput = Literal["pooled", "grid", "both"]
EMBEDDING_OUTPUTS: tuple[str, ...] = ("pooled", "grid", "both")

# Keys of another task's model_args that belong to its decoder and head, not its encoder.
_ENCODER_KEYS = ("backbone",)


def _checkpoint_parts(
    path: str | Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """The backbone arguments, encoder weights and preprocessing state of a task checkpoint.

    Raises:
        CheckpointError: the file is no geofm task checkpoint (no ``model_args.backbone``, no
            ``model.encoder.*`` weights); names the file.
    """
    from geofm.checkpoint_io import load_checkpoint_file
    from geofm.errors import CheckpointError

    checkpoint = load_checkpoint_file(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    args = dict(hparams.get("model_args") or {})
    state = checkpoint.get("state_dict") or {}
    def part(prefix: str) -> dict[str, Any]:
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    encoder = part("model.encoder.")
    if "backbone" not in args or not encoder:
        raise CheckpointError(
            f"ckpt_path '{path}' is not a geofm task checkpoint with a backbone (model_args "
            f"keys {sorted(args)}, {len(encoder)} model.encoder.* weights): give a checkpoint "
            "written by geofm fit, or model_args.backbone_ckpt_path for plain backbone weights."
        )
    backbone_args = {
        k: v
        for k, v in args.items()
        if (k in _ENCODER_KEYS or k.startswith("backbone_"))
        # The weights come from the checkpoint: never look for pretrained files.
        and k not in ("backbone_pretrained", "backbone_ckpt_path")
    }
    return backbone_args, encoder, part("preprocess.")


class EmbeddingTask(BaseTask):
    """Per-image pooled embeddings and per-patch embedding grids of a backbone.

    Args:
        model_args: ``backbone`` (a registry name), ``backbone_*`` arguments
            (``backbone_pretrained``, ``backbone_ckpt_path``, ``backbone_bands``...) and
            optional ``necks``; no decoder or head. With ``ckpt_path``: only ``necks``.
        layer: Feature level, an index into the backbone's (necked) feature list; the last
            by default. For Prithvi ViT, ``backbone_out_indices`` chooses blocks.
        pooling: ``"mean"`` or ``"max"`` over the feature grid, or ``"cls"``: a ViT's class
            token.
        output: ``"pooled"`` (one vector per image), ``"grid"`` (the ``(D, h, w)`` patch
            grid) or ``"both"``.
        ckpt_path: A geofm checkpoint of another task (segmentation, regression,
            classification): its encoder weights and preprocessing are used.
        means: Per-band means (override the datamodule's and the backbone's statistics); not
            with ``ckpt_path``, whose preprocessing holds the statistics it was trained with.
        stds: Per-band standard deviations, with ``means``.
    """

    model_task = "embedding"
    #: Weights come from the backbone (pretrained, ``backbone_ckpt_path``) or ``ckpt_path``:
    #: ``geofm predict`` needs no ``--ckpt_path``.
    needs_checkpoint = False
    plot_mode = "none"
    loss_kind = "none"
    needs_num_classes = False
    prediction_kind = "values"

    def __init__(
        self,
        model_args: dict[str, Any] | None = None,
        layer: int = -1,
        pooling: Pooling = "mean",
        output: EmbeddingOutput = "pooled",
        ckpt_path: str | None = None,
        means: list[float] | None = None,
        stds: list[float] | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(
                f"model.init_args.pooling={pooling!r}; choose one of {list(POOLINGS)}."
            )
        if output not in EMBEDDING_OUTPUTS:
            raise ValueError(
                f"model.init_args.output={output!r}; choose one of {list(EMBEDDING_OUTPUTS)}."
            )
        self._checkpoint_state: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
        model_args = dict(model_args or {})
        if ckpt_path is not None and (means is not None or stds is not None):
            # The checkpoint's preprocessing replaces the statistics: they would be ignored.
            raise ValueError(
                "model.init_args.ckpt_path brings its own preprocessing (the statistics it was "
                "trained with); model.init_args.means/stds would be ignored: drop them (or "
                "drop ckpt_path)."
            )
        if ckpt_path is not None:
            extra = sorted(set(model_args) - {"necks"})
            if extra:
                raise ValueError(
                    f"model.init_args.ckpt_path gives the backbone; model_args {extra} would be "
                    "ignored: keep only model_args.necks (or drop ckpt_path)."
                )
            backbone_args, encoder_state, preprocess_state = _checkpoint_parts(ckpt_path)
            model_args = {**backbone_args, **model_args}
            self._checkpoint_state = (encoder_state, preprocess_state)
        elif "backbone" not in model_args:
            raise ValueError(
                "EmbeddingTask needs model_args.backbone (e.g. prithvi_eo_v2_300 or "
                "timm_resnet50) or ckpt_path (a geofm checkpoint of another task)."
            )
        super().__init__(
            model_factory="EncoderDecoderFactory", model_args=model_args, means=means, stds=stds
        )
        if self._checkpoint_state is not None:
            encoder_state, preprocess_state = self._checkpoint_state
            self.model.encoder.load_state_dict(encoder_state)
            if preprocess_state:
                self.preprocess.load_state_dict(preprocess_state)
            log.info("Encoder and preprocessing from %s.", ckpt_path)
        self.predictor = Predictor(self.model, self.preprocess, "values")

    # ------------------------------------------------------------------ configuration
    def configure_models(self, model: nn.Module | None = None) -> None:
        """Build the :class:`~geofm.models.embedder.Embedder` from ``model_args``."""
        args = dict(self.hparams.model_args)
        self.model = build_embedder(
            args.pop("backbone"),
            necks=args.pop("necks", None),
            layer=self.hparams.layer,
            pooling=self.hparams.pooling,
            **args,
        )

    def configure_preprocess(self, datamodule: Any = None, stage: str | None = None) -> None:
        """As every task; a checkpoint's preprocessing then replaces what that gave."""
        super().configure_preprocess(datamodule, stage)
        if self._checkpoint_state is not None and self._checkpoint_state[1]:
            self.preprocess.load_state_dict(self._checkpoint_state[1])
            self._expected_bands = None

    def configure_losses(self, loss: nn.Module | None = None) -> None:
        self.criterion = None

    def configure_metrics(self) -> None:
        pass

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({})

    def setup(self, stage: str) -> None:
        if stage != "predict":
            raise ValueError(
                f"EmbeddingTask predicts only: '{stage}' has nothing to train or score. Run "
                "geofm embed -c CONFIG (or geofm predict) instead."
            )
        # The datamodule's preprocessing settings, then the backbone's statistics if none.
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        self.configure_preprocess(datamodule, stage)

    def configure_optimizers(self) -> Any:
        raise ValueError("EmbeddingTask predicts only; it has nothing to optimise.")

    # ------------------------------------------------------------------ prediction
    @property
    def output_kind(self) -> EmbeddingOutput:
        return self.hparams.output

    def embed(self, image: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"output": (B, D, h, w), "pooled": (B, D)}`` for raw ``image`` ``(B, C, H, W)``."""
        return self.predictor.outputs(image, **extra)

    def predict_step(
        self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """``embedding`` ``(B, D)`` and/or ``grid`` ``(B, D, h, w)`` (by ``output``), plus every
        batch key other than inputs and targets (``filename``, ``crs``, ``transform``...)."""
        self._check_batch(batch)
        out = self.embed(batch["image"], **self._model_inputs(batch))
        result: dict[str, Any] = {}
        if self.output_kind in ("pooled", "both"):
            result["embedding"] = out["pooled"]
        if self.output_kind in ("grid", "both"):
            result["grid"] = out["output"]
        result.update({key: value for key, value in batch.items() if key not in _DATA_KEYS})
        return result

    def embed_files(
        self,
        datamodule: Any,
        output_dir: str | Path,
        *,
        input: str | Path | None = None,
        bands: list[int] | None = None,
        scenes: bool = False,
        device: str | torch.device | None = None,
        **settings: Any,
    ) -> list[Path]:
        """Embed the datamodule's predict files (or ``input``) as chips or streamed scenes.

        Args:
            datamodule: A geofm datamodule (its predict files, band selection, statistics and
                ``date_pattern``), or ``None``.
            output_dir: Where the outputs go.
            input: A folder or file instead of the datamodule's ``predict_data_root``.
            bands: 1-based bands to read when there is no datamodule.
            scenes: Stream whole scenes tile by tile
                (:func:`~geofm.inference.embedding_scenes.embed_scenes`) instead of embedding
                each file whole (:func:`~geofm.inference.embedding.embed_chips`).
            device: Where the model runs (the first GPU when available by default).
            **settings: Settings of ``embed_chips`` or ``embed_scene`` (``batch_size``,
                ``resume``, ``tile_size``, ``overlap``, ``patch_rows``...).

        Returns:
            The files written (or found finished with ``resume``).

        Raises:
            ValueError: ``bands`` with a datamodule (which selects bands), or nothing to embed.
        """
        from geofm.inference.embedding import embed_chips, file_inputs
        from geofm.inference.embedding_scenes import embed_scenes

        if bands is not None and datamodule is not None:
            raise ValueError(
                "bands select the files' bands when there is no datamodule; the datamodule "
                "selects them (data.init_args.dataset_bands/output_bands)."
            )
        files: Any = input
        if datamodule is not None:
            if input is None:
                datamodule.setup("predict")
                dataset = datamodule.predict_dataset
                files = list(dataset.image_files) if dataset is not None else None
                indexes = dataset.selection.indexes if dataset is not None else None
            else:
                indexes = datamodule.predict_selection.indexes
            bands = list(indexes) if indexes is not None else None
        if not files:
            raise ValueError(
                "Nothing to embed: give an input folder or file (--input) or "
                "data.init_args.predict_data_root."
            )
        self.configure_preprocess(datamodule, stage="predict")
        date_pattern = getattr(datamodule, "date_pattern", None)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        inputs = file_inputs(self.predictor.extra_inputs, date_pattern)
        common = {
            "output": self.output_kind,
            "bands": bands,
            "device": device,
            "date_pattern": date_pattern,
            **settings,
        }
        if scenes:
            results = embed_scenes(self, files, output_dir, scene_inputs=inputs, **common)
            return [path for result in results for path in result.values()]
        return embed_chips(self, files, output_dir, chip_inputs=inputs, **common)

    def stream_scenes(
        self,
        datamodule: Any,
        ckpt_path: str | None,
        output_dir: str | Path,
        settings: dict[str, Any],
        device: str | torch.device | None = None,
    ) -> list[Path]:
        """``geofm predict --streaming``: the datamodule's predict files as streamed scenes.

        Raises:
            ValueError: a ``--ckpt_path`` (the embedding model's weights come from its backbone
                or ``model.init_args.ckpt_path``).
        """
        if ckpt_path:
            raise ValueError(
                f"--ckpt_path {ckpt_path}: EmbeddingTask takes a fine-tuned checkpoint as "
                "model.init_args.ckpt_path (its encoder and preprocessing)."
            )
        # Under torchrun each process takes its share of the scenes, as predictions do.
        share = {
            "rank": int(os.environ.get("RANK", 0)),
            "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        }
        return self.embed_files(
            datamodule, output_dir, scenes=True, device=device, **share, **settings
        )

    def prediction_writer(self, output_dir: str | Path) -> Any:
        """The callback ``geofm predict --predict_output_dir`` writes this task's outputs with."""
        from geofm.inference.embedding_writer import EmbeddingPredictionWriter

        return EmbeddingPredictionWriter(output_dir)

    # Nothing to score: the abstract hooks of training tasks.
    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        raise ValueError("EmbeddingTask has no target.")

    def metric_inputs(
        self, prediction: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise ValueError("EmbeddingTask has no metrics.")

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction

    def prediction_outputs(
        self, logits: torch.Tensor, probabilities: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        raise ValueError("EmbeddingTask predicts through predict_step.")

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        raise ValueError("EmbeddingTask predicts only; it cannot be trained.")
