"""``BaseTask``: what every geofm LightningModule shares.

A task is built the TorchGeo way: ``__init__`` saves its arguments as hyperparameters, then
calls ``configure_models``, ``configure_losses`` and ``configure_metrics``, which read only
``self.hparams`` (and the arguments given to them), so subclasses set nothing later that these
hooks depend on. One ``MetricCollection`` is cloned per stage with the prefixes ``train/``,
``val/`` and ``test/``; the three steps share one ``_step``.

Preprocessing. The task owns one :class:`~geofm.models.preprocess.Preprocess` (constant scale,
nodata fill, means and stds), saved in its state dict, applied to raw ``batch["image"]`` on the
task's device at the start of every step and by every prediction route. Its statistics come
from the task's ``means``/``stds``, else the datamodule's (read in ``setup``), else the
backbone's pretraining statistics. It runs in the step, not in ``on_after_batch_transfer``:
Lightning (2.x) runs only *one* ``on_after_batch_transfer``, the datamodule's when it defines
one, so normalising there would silently be skipped by a datamodule that augments there.

Prediction. Validation, test and ``predict_step`` go through one
:class:`~geofm.inference.predictor.Predictor` (preprocess, model, softmax), tiled by
:func:`~geofm.inference.tiled_forward` when ``tiled_inference`` is set (or, TerraTorch's way,
``tiled_inference_parameters``: predict only, plus validation and test when
``tiled_inference_on_validation``/``tiled_inference_on_testing``); streamed scenes use the
same predictor (:func:`geofm.inference.task_scenes.predict_task_scenes`).

TerraTorch's names. ``tiled_inference_parameters``, ``lr_overrides``, ``aux_heads`` and a
boolean ``plot_on_val`` do what they do in TerraTorch (see :mod:`geofm.tasks.terratorch_args`).

Checks. Every step checks the batch before the model: its band count against every setting
that fixes one, its time axis against the backbone's ``num_frames``, and class targets against
``num_classes``/``ignore_index`` (naming the batch's files). Loading a checkpoint compares the
band names it was trained on with those the datamodule gives in this stage (its predict bands
at predict time). A BatchNorm that sees one value per channel in training is reported as
images too small for the model.

Multimodal models. When the model's backbone declares ``modalities`` (TerraMind), the task's
preprocessing is a :class:`~geofm.models.preprocess.MultiModalPreprocess` (one
``Preprocess`` per modality, state-dict keys ``preprocess.<modality>.*``) and ``image`` may be
a dict ``{modality: (B, C_m, H, W)}``. The model decides, not the datamodule: the
preprocessing must exist when the task is built, so that a checkpoint's state dict loads
before any datamodule is seen. Statistics come per modality from the task's ``means``/``stds``
dicts, else the datamodule's :meth:`preprocess_settings` (``{modality: settings}``; a
single-modality datamodule's settings go to the model's first modality, which also takes a
bare tensor image), else the backbone's ``pretrained_stats[modality]``. Tiled inference and
streaming do not take dict images and say so.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MetricCollection

from geofm.data.band_selection import band_key
from geofm.inference.predictor import Predictor, activate, probabilities_to_logits
from geofm.models.model import ModelOutput
from geofm.models.preprocess import MultiModalPreprocess, Preprocess, modality_key
from geofm.registry import MODEL_FACTORY_REGISTRY
from geofm.tasks import plotting
from geofm.tasks.losses import build_loss
from geofm.tasks.metrics import write_metrics_csv
from geofm.tasks.optim import build_optimizer, build_scheduler
from geofm.tasks.terratorch_args import (
    TERRATORCH_PLOT_BATCHES,
    aux_decoders_from_aux_heads,
    param_groups_from_lr_overrides,
    tiled_from_terratorch,
)

if TYPE_CHECKING:
    from geofm.models.peft import LoraSettings

__all__ = ["BaseTask", "STAGES", "check_class_targets"]

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")

# Keys of a batch that are inputs or targets; everything else is passed through to predictions.
_DATA_KEYS = ("image", "mask", "label", "temporal_coords", "location_coords")

_FREEZE = (
    ("freeze_backbone", "freeze_encoder"),
    ("freeze_decoder", "freeze_decoder"),
    ("freeze_head", "freeze_head"),
)


def _tiled_forward_function() -> Any:
    """``geofm.inference.tiled_forward``, or a clear error when that module is not there."""
    try:
        from geofm.inference import tiled_forward
    except ImportError as err:
        raise NotImplementedError(
            "tiled_inference needs geofm.inference.tiled_forward, which this installation does "
            f"not provide ({err}). Remove tiled_inference to predict whole images."
        ) from err
    return tiled_forward


def model_modalities(model: nn.Module) -> tuple[str, ...] | None:
    """The modalities a model (or its backbone, ``model.encoder``) declares, when it does."""
    for owner in (getattr(model, "encoder", None), model):
        declared = getattr(owner, "modalities", None)
        if declared:
            return tuple(str(m) for m in declared)
    return None


def _per_modality(settings: Mapping[str, Any]) -> bool:
    """Whether datamodule settings are ``{modality: settings}`` rather than one modality's."""
    return bool(settings) and all(isinstance(v, Mapping) for v in settings.values())


def _first_tensor(image: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``image``, or the first modality's tensor of a dict image (for sizes in messages)."""
    return next(iter(image.values())) if isinstance(image, Mapping) else image


def _datamodule_preprocess_settings(datamodule: Any) -> dict[str, Any]:
    """What a datamodule says about preprocessing: geofm's describe it all, others (TorchGeo)
    may have ``means``/``stds``/``constant_scale`` attributes."""
    describe = getattr(datamodule, "preprocess_settings", None)
    if callable(describe):
        return {k: v for k, v in describe().items() if v is not None}
    settings = {
        "mean": getattr(datamodule, "means", None),
        "std": getattr(datamodule, "stds", None),
        "constant_scale": getattr(datamodule, "constant_scale", None),
    }
    return {k: v for k, v in settings.items() if v is not None}


def _datamodule_input_bands(
    datamodule: Any, stage: str | None, settings: Mapping[str, Any]
) -> list[str] | None:
    """Names of the bands ``datamodule`` gives the model in ``stage``, in order, when known.

    At predict time a geofm datamodule reads ``predict_output_bands`` (its
    ``predict_selection``), which may differ from the training ``output_bands``.
    """
    if stage == "predict" and hasattr(datamodule, "predict_selection"):
        names = getattr(datamodule.predict_selection, "names", None)
        return list(names) if names is not None else None
    bands = settings.get("bands")
    return [str(b) for b in bands] if bands is not None else None


# ``band_<n>`` is the name a selection gives an unnamed band: a file position, not a band.
_PLACEHOLDER_BAND = re.compile(r"band_\d+")


def _same_bands(trained: Sequence[str], given: Sequence[str]) -> bool:
    """Whether two band lists agree, position by position, where both name a band."""
    if len(trained) != len(given):
        return False
    return all(
        band_key(a) == band_key(b)
        for a, b in zip(trained, given, strict=True)
        if not (_PLACEHOLDER_BAND.fullmatch(a) or _PLACEHOLDER_BAND.fullmatch(b))
    )


def _few(values: Sequence[Any], count: int = 5) -> str:
    """The first ``count`` of ``values`` for a message, with how many more."""
    shown = ", ".join(repr(v) if isinstance(v, str) else f"{v:g}" for v in values[:count])
    more = f" and {len(values) - count} more" if len(values) > count else ""
    return f"{shown}{more}"


def check_class_targets(
    target: torch.Tensor,
    num_classes: int,
    ignore_index: int | float | None,
    batch: Mapping[str, Any],
) -> None:
    """Raise when class targets leave ``[0, num_classes)`` (``ignore_index`` apart).

    Out-of-range targets fail deep inside a loss on GPUs (a device assert naming no file) and
    pass silently through some losses on CPU, so the step checks them first. One reduction on
    the device and one synchronisation per step; the details are computed only on failure.

    Args:
        target: Class indices, ``(B, H, W)`` or ``(B,)``.
        num_classes: The task's number of classes.
        ignore_index: The value that marks ignored targets, if any.
        batch: The batch, whose ``filename`` list names the samples in the message.

    Raises:
        ValueError: naming the files that hold the bad values, the values, ``num_classes`` and
            ``ignore_index``.
    """
    bad = (target < 0) | (target >= num_classes)
    if ignore_index is not None:
        bad &= target != ignore_index
    if not bool(bad.any()):
        return
    values = torch.unique(target[bad]).cpu().tolist()
    rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().cpu().tolist()
    names = batch.get("filename")
    if isinstance(names, Sequence) and not isinstance(names, str) and len(names) == bad.shape[0]:
        where = f"in {_few([str(names[i]) for i in rows])}"
    else:
        where = f"in samples {rows} of the batch (its 'filename' list names no files)"
    ignored = f"ignore_index={ignore_index}" if ignore_index is not None else "no ignore_index"
    raise ValueError(
        f"Target values {_few(values)} {where} are outside [0, {num_classes}) for "
        f"num_classes={num_classes} ({ignored}). Raise num_classes if they are classes; if they "
        "mark unlabelled pixels, set the task's ignore_index to that value (for geofm "
        "datamodules also data.init_args.no_label_replace, or tag the label files' nodata "
        "value); else fix those label files."
    )


class BaseTask(LightningModule, ABC):
    """Shared machinery of the geofm tasks.

    Args:
        model_factory: Name of a factory in ``MODEL_FACTORY_REGISTRY``.
        model_args: Keyword arguments of the factory's ``build_model`` (``backbone``,
            ``decoder``, ``backbone_in_chans``, ``necks``, ``aux_decoders``...), without
            ``task``.
        model: A ready model (a :class:`~geofm.models.model.Model` or any module returning a
            :class:`~geofm.models.model.ModelOutput`); replaces ``model_factory``/``model_args``.
        loss: A loss name, a list of names, a dict of name -> weight, or an ``nn.Module``
            (see :mod:`geofm.tasks.losses`).
        aux_loss: Weight of each auxiliary head's loss by head name (``{"aux": 0.4}``), added
            to the training loss. Validation and test losses use the main output only.
        aux_heads: TerraTorch's auxiliary heads, ``[{name, decoder, decoder_args}]`` (or
            ``AuxiliaryHead`` objects): built by the model factory as its ``aux_decoders`` on
            the same features (``decoder_args`` holds ``decoder_*`` and ``head_*`` keys); weigh
            their losses with ``aux_loss``. Not with a ready ``model`` nor with
            ``model_args.aux_decoders``.
        ignore_index: Target value that losses and metrics skip.
        class_weights: One loss weight per class.
        num_classes: Number of classes (else ``model_args.num_classes`` or
            ``len(class_names)``).
        class_names: Names used in per-class metrics and plots.
        optimizer: A ``torch.optim`` class name (``"AdamW"``) or a class path.
        lr: Learning rate.
        optimizer_hparams: Other optimizer arguments (``{"weight_decay": 0.05}``).
        param_groups: Per-group options by fnmatch pattern on parameter names inside the
            model: ``[{"pattern": "encoder.*", "lr": 1e-5}]`` (first match wins).
        lr_overrides: TerraTorch's ``{name substring: lr}``: every trainable parameter whose
            name (``model.encoder...``, as TerraTorch names them) contains the key gets that
            learning rate (the first key wins); others keep ``lr``. Not with ``param_groups``.
        scheduler: A ``torch.optim.lr_scheduler`` class name or a class path.
        scheduler_hparams: The scheduler's arguments plus ``interval`` (``"epoch"`` or
            ``"step"``), ``monitor``, ``warmup_epochs``/``warmup_steps`` and
            ``warmup_start_factor`` (see :func:`geofm.tasks.optim.build_scheduler`).
        freeze_backbone: Freeze the encoder (no gradients, norm statistics fixed).
        freeze_decoder: Freeze the necks and decoder.
        freeze_head: Freeze the head.
        means: Per-band means (in ``constant_scale``-d units); override the datamodule's
            ``means`` and the backbone's pretraining statistics. For multimodal models a dict
            ``{modality: [...]}``.
        stds: Per-band standard deviations, given with ``means`` (a dict for multimodal models).
        tiled_inference: Keyword arguments of ``geofm.inference.tiled_forward``
            (``{"tile_size": 224, "overlap": 32}``), used in validation, test and predict.
        plot_on_val: As in TerraTorch: every ``plot_on_val`` epochs (``true``: every epoch;
            ``0``/``false``: never), log an image | label | prediction figure of the first
            sample of each of the first 10 validation batches, to loggers that accept figures
            (TensorBoard). TerraTorch's default is 10; geofm's is 0.
        rgb_indices: The three bands shown as red, green, blue in plots (else the
            datamodule's ``rgb_indices``, else the first three).
        tiled_inference_parameters: TerraTorch's tiling settings (``h_crop``, ``w_crop``,
            ``h_stride``, ``w_stride``, ``crop``, ``stride``, ``delta``, ``batch_size``,
            ``blend_overlaps``, ``average_patches``, ``padding``): mapped onto
            ``tiled_inference`` (see :func:`geofm.tasks.terratorch_args.tiled_from_terratorch`)
            and, as in TerraTorch, used by ``predict`` and, when the flags below are set, by
            validation and test. Not with ``tiled_inference``.
        tiled_inference_on_validation: Validate on tiles (with ``tiled_inference_parameters``).
        tiled_inference_on_testing: Test on tiles (with ``tiled_inference_parameters``).
        path_to_record_metrics: TerraTorch's setting: a folder where each test run also writes
            its metrics as ``metrics.csv`` (columns ``Metric``, ``Value``; the epoch's values
            over the whole test set, which TerraTorch's file gives only for its last batch).
        peft: LoRA on the backbone (needs ``pip install 'geofm[peft]'``): ``{method: lora, r: 8,
            alpha: 16, dropout: 0.0, bias: none, target_modules: [qkv, proj]}``
            (``target_modules``: module-name suffixes or one regular expression); TerraTorch's
            ``model_args.peft_config`` is read the same way. The backbone's base weights are
            frozen; checkpoints keep the trained part and a reference to the base weight file
            (see :mod:`geofm.models.peft` and :mod:`geofm.tasks.peft_checkpoint`).
    """

    #: ``task`` argument of the model factory
    model_task: ClassVar[str]
    #: kind of :func:`geofm.tasks.plotting.plot_sample` figure
    plot_mode: ClassVar[str]
    #: ``kind`` argument of :func:`geofm.tasks.losses.build_loss`
    loss_kind: ClassVar[str]
    #: whether the task needs ``num_classes``
    needs_num_classes: ClassVar[bool] = True
    #: what the predictor returns: probabilities (classes) or values (regression)
    prediction_kind: ClassVar[str] = "probabilities"

    def __init__(
        self,
        model_factory: str = "EncoderDecoderFactory",
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        loss: str | list[str] | dict[str, float] | nn.Module = "ce",
        aux_loss: dict[str, float] | None = None,
        ignore_index: int | float | None = None,
        class_weights: list[float] | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        optimizer: str = "AdamW",
        lr: float = 1e-3,
        optimizer_hparams: dict[str, Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        scheduler: str | None = None,
        scheduler_hparams: dict[str, Any] | None = None,
        freeze_backbone: bool = False,
        freeze_decoder: bool = False,
        freeze_head: bool = False,
        means: list[float] | dict[str, list[float]] | None = None,
        stds: list[float] | dict[str, list[float]] | None = None,
        tiled_inference: dict[str, Any] | None = None,
        plot_on_val: bool | int = 0,
        rgb_indices: list[int] | None = None,
        tiled_inference_parameters: dict[str, Any] | None = None,
        tiled_inference_on_validation: bool = False,
        tiled_inference_on_testing: bool = False,
        aux_heads: list[dict[str, Any]] | None = None,
        lr_overrides: dict[str, float] | None = None,
        path_to_record_metrics: str | None = None,
        peft: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Modules are not hyperparameters: they are neither YAML nor needed to rebuild.
        self.save_hyperparameters(ignore=["model"] + (["loss"] if isinstance(loss, nn.Module) else []))
        if model is None and not model_args:
            raise ValueError(
                f"{type(self).__name__} needs model_args (e.g. {{'backbone': 'timm_resnet18', "
                "'decoder': 'smp_Unet'}) for the model factory, or a ready model."
            )
        if tiled_inference is not None and not isinstance(tiled_inference, Mapping):
            raise TypeError(
                f"tiled_inference must be a dict of tiled_forward arguments such as "
                f"{{'tile_size': 224, 'overlap': 32}}, got {tiled_inference!r}."
            )
        self._tiled, self._tiled_stages = self._tiling(
            tiled_inference,
            tiled_inference_parameters,
            tiled_inference_on_validation,
            tiled_inference_on_testing,
        )
        if isinstance(plot_on_val, bool):
            plot_on_val = int(plot_on_val)  # TerraTorch's true: every epoch
        if not isinstance(plot_on_val, int) or plot_on_val < 0:
            raise ValueError(
                f"model.init_args.plot_on_val={plot_on_val!r} must be true/false or a number of "
                "epochs between plots (0: never)."
            )
        if lr_overrides and param_groups:
            raise ValueError(
                "model.init_args.lr_overrides and param_groups both set learning rates by "
                "parameter name; keep one (lr_overrides {'encoder': 1e-5} is param_groups "
                "[{pattern: '*encoder*', lr: 1e-5}])."
            )
        if aux_heads:
            if model is not None:
                raise ValueError(
                    "model.init_args.aux_heads is built by the model factory, but a ready model "
                    "was given: add the heads to that model (its auxiliary_heads outputs) instead."
                )
            if (model_args or {}).get("aux_decoders"):
                raise ValueError(
                    "model.init_args.aux_heads and model_args.aux_decoders both give auxiliary "
                    "heads; keep one (aux_heads is TerraTorch's name for aux_decoders)."
                )
            # Plain dicts in the hyper-parameters: checkpoints load with weights_only=True.
            self.hparams["aux_heads"] = aux_decoders_from_aux_heads(aux_heads)
        self.num_classes = self._resolve_num_classes() if self.needs_num_classes else None
        self._expected_bands: list[tuple[int, str]] | None = None
        #: Band names the datamodule gives in the current stage (checked against checkpoints);
        #: by modality for multimodal models.
        self._input_bands: list[str] | dict[str, list[str] | None] | None = None
        self._missing_inputs_logged: set[str] = set()
        self.rgb_indices = rgb_indices
        self._updated_stages: set[str] = set()
        self._plot_skipped_logged = False
        self._rgb_modality: str | None = None
        self._pretrained_logged: set[str] = set()
        #: LoRA settings (``peft`` / ``model_args.peft_config``), ``None`` without LoRA.
        self.lora = self._lora_settings()
        self.configure_models(model)
        # After the model: a backbone that declares modalities gets one Preprocess per modality.
        self.preprocess = self._build_preprocess(means, stds)
        self.configure_losses(loss if isinstance(loss, nn.Module) else None)
        self.configure_metrics()
        # Holds references, not copies: the one prediction function of every route.
        self.predictor = Predictor(self.model, self.preprocess, self.prediction_kind)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _tiling(
        tiled_inference: Mapping[str, Any] | None,
        terratorch: Mapping[str, Any] | None,
        on_validation: bool,
        on_testing: bool,
    ) -> tuple[dict[str, Any] | None, frozenset[str]]:
        """The ``tiled_forward`` arguments and the stages that tile.

        geofm's ``tiled_inference`` tiles validation, test and predict; TerraTorch's
        ``tiled_inference_parameters`` tiles predict, plus validation and test when its flags
        ask.

        Raises:
            ValueError: both settings, or a flag without ``tiled_inference_parameters``.
        """
        flags = [n for n, on in (("tiled_inference_on_validation", on_validation),
                                 ("tiled_inference_on_testing", on_testing)) if on]
        if terratorch is not None:
            if tiled_inference:
                raise ValueError(
                    "model.init_args.tiled_inference_parameters and tiled_inference both set "
                    "tiling; keep one (tiled_inference_parameters is TerraTorch's form)."
                )
            stages = {"predict"}
            stages |= {"val"} if on_validation else set()
            stages |= {"test"} if on_testing else set()
            return tiled_from_terratorch(terratorch), frozenset(stages)
        if flags:
            raise ValueError(
                f"model.init_args.{flags[0]} applies to tiled_inference_parameters (TerraTorch's "
                "tiling), which is not set; geofm's tiled_inference already tiles validation, "
                f"test and predict. Remove {flags[0]}."
            )
        options = dict(tiled_inference) if tiled_inference else None
        return options, frozenset(("val", "test", "predict"))

    def _resolve_num_classes(self) -> int:
        given = self.hparams.num_classes
        from_args = (self.hparams.model_args or {}).get("num_classes")
        names = self.hparams.class_names
        if given is not None and from_args is not None and given != from_args:
            raise ValueError(f"num_classes={given} but model_args.num_classes={from_args}; keep one.")
        num_classes = given if given is not None else from_args
        if num_classes is None and names:
            num_classes = len(names)
        if num_classes is None:
            raise ValueError(
                f"{type(self).__name__} needs num_classes (or model_args.num_classes, or class_names)."
            )
        if names is not None and len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names but num_classes={num_classes}.")
        return int(num_classes)

    def configure_models(self, model: nn.Module | None = None) -> None:
        """Build ``self.model`` with the model factory (or take ``model``), then freeze parts."""
        if model is None:
            # TerraTorch's LoRA setting is the task's (applied below), not the factory's.
            args = {k: v for k, v in self.hparams.model_args.items() if k != "peft_config"}
            if self.needs_num_classes:
                args.setdefault("num_classes", self.num_classes)
            if self.hparams.get("aux_heads"):
                args["aux_decoders"] = self.hparams.aux_heads
            factory = MODEL_FACTORY_REGISTRY.build(self.hparams.model_factory)
            model = factory.build_model(self.model_task, **args)
        self.model = model
        if self.lora is not None:
            from geofm.models.peft import apply_lora

            if self.hparams.freeze_backbone:
                raise ValueError(
                    "model.init_args.freeze_backbone: true would freeze the LoRA weights too; "
                    "with peft the backbone's base weights are frozen already. Remove one."
                )
            apply_lora(self.model, self.lora)
        for flag, method in _FREEZE:
            if self.hparams.get(flag):  # tasks without freeze flags (MAE) lack them
                freeze = getattr(self.model, method, None)
                if freeze is None:
                    raise TypeError(
                        f"{flag}=True but {type(self.model).__name__} has no {method}(); use a "
                        "geofm Model or freeze the parameters yourself."
                    )
                freeze()

    def _lora_settings(self) -> LoraSettings | None:
        """The task's ``peft`` or TerraTorch's ``model_args.peft_config``, read as LoRA
        settings (``None`` when neither is set)."""
        ours = self.hparams.get("peft")
        theirs = (self.hparams.model_args or {}).get("peft_config")
        if ours and theirs:
            raise ValueError(
                "model.init_args.peft and model_args.peft_config both set LoRA; keep one "
                "(peft_config is TerraTorch's form)."
            )
        if not ours and not theirs:
            return None
        from geofm.models.peft import lora_settings

        if ours:
            return lora_settings(ours, "model.init_args.peft")
        return lora_settings(theirs, "model.init_args.model_args.peft_config")

    def on_fit_start(self) -> None:
        """With LoRA: print the trainable parameter count and fraction, and where the base
        weights of checkpoints come from."""
        if self.lora is None:
            return
        from lightning.pytorch.utilities import rank_zero_info

        from geofm.models.peft import parameter_summary
        from geofm.tasks.peft_checkpoint import base_weights_file

        self.peft_summary = parameter_summary(self.model)
        rank_zero_info(self.peft_summary.describe())
        base = base_weights_file(self.hparams.model_args, getattr(self.model, "encoder", None))
        if base is None:
            rank_zero_info(
                "LoRA: the backbone's base weights come from no weight file (random or "
                "non-local initialisation), so checkpoints keep them too; set "
                "model_args.backbone_ckpt_path to store only the trained part."
            )
        else:
            rank_zero_info(
                f"LoRA: checkpoints keep the trained part and refer to the base weights '{base}'."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """With LoRA: leave the base weights out, keeping a reference to their file."""
        if self.lora is not None:
            from geofm.tasks.peft_checkpoint import trim_checkpoint

            trim_checkpoint(self, checkpoint, self.lora.as_dict())

    def _build_preprocess(self, means: Any, stds: Any) -> Preprocess | MultiModalPreprocess:
        """The task's preprocessing for ``self.model``, with the task's own ``means``/``stds``.

        Raises:
            ValueError: statistics by modality for a model without modalities, or a flat list
                for a model of several modalities, or a dict naming a modality the model lacks.
        """
        modalities = model_modalities(self.model)
        if modalities is None:
            preprocess = Preprocess()
            if isinstance(means, Mapping) or isinstance(stds, Mapping):
                raise ValueError(
                    "means/stds are given by modality but the model declares no modalities; give "
                    "per-band lists, or use a multimodal backbone (e.g. TerraMind)."
                )
            if means is not None or stds is not None:
                preprocess.configure(mean=means, std=stds, source="the task's means/stds")
            return preprocess
        multi = MultiModalPreprocess(modalities)
        if means is None and stds is None:
            return multi
        if len(modalities) == 1 and not isinstance(means, Mapping) and not isinstance(stds, Mapping):
            means, stds = {modalities[0]: means}, {modalities[0]: stds}  # one modality: plain lists
        if not isinstance(means, Mapping) or not isinstance(stds, Mapping):
            raise ValueError(
                f"The model takes modalities {list(modalities)}: give the task's means and stds "
                f"as dicts by modality ({{{modalities[0]}: [...]}}), got means={means!r}."
            )
        for name in dict.fromkeys([*means, *stds]):
            multi.modality(name).configure(
                mean=means.get(name), std=stds.get(name), source=f"the task's means/stds['{name}']"
            )
        return multi

    def configure_losses(self, loss: nn.Module | None = None) -> None:
        """Set ``self.criterion``, called as ``criterion(prediction, target)``.

        Built by :func:`~geofm.tasks.losses.build_loss` for ``loss_kind`` from ``loss`` (a
        ready module) or the ``loss`` hyperparameter, with ``ignore_index`` and
        ``class_weights``.
        """
        self.criterion = build_loss(
            self.loss_kind,
            loss if loss is not None else self.hparams.loss,
            ignore_index=self.hparams.ignore_index,
            class_weights=self.hparams.class_weights,
            num_classes=self.num_classes,
        )

    @abstractmethod
    def build_metrics(self) -> MetricCollection:
        """The metrics of one stage, without prefix."""

    def configure_metrics(self) -> None:
        """One metric collection per stage, logged as ``train/...``, ``val/...``, ``test/...``."""
        metrics = self.build_metrics()
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def configure_optimizers(self) -> Any:
        """The optimizer (and scheduler) of ``optimizer``, ``lr``, ``param_groups``, ``scheduler``."""
        named = [(name.removeprefix("model."), p) for name, p in self.named_parameters()]
        groups = self.hparams.param_groups
        if self.hparams.get("lr_overrides"):
            trainable = [name for name, p in named if p.requires_grad]
            groups = param_groups_from_lr_overrides(self.hparams.lr_overrides, trainable)
        optimizer = build_optimizer(
            named,
            self.hparams.optimizer,
            self.hparams.lr,
            self.hparams.optimizer_hparams,
            groups,
        )
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self.hparams.scheduler_hparams)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ preprocessing
    def setup(self, stage: str) -> None:
        """Complete the preprocessing from the datamodule, then from the backbone.

        The datamodule gives ``constant_scale``, ``no_data_replace`` and band names; its
        ``means``/``stds`` apply unless the task was given its own. Without either, a backbone
        that declares pretraining statistics for its input bands (``pretrained_stats``)
        provides them (logged). A checkpoint loaded afterwards replaces all of it with what
        the model was trained with.
        """
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        self.configure_preprocess(datamodule, stage)
        # Plots show the datamodule's RGB bands unless the task names its own.
        self.rgb_indices = self.hparams.rgb_indices or getattr(datamodule, "rgb_indices", None)
        self._rgb_modality = getattr(datamodule, "rgb_modality", None)
        if self._tiled:
            _tiled_forward_function()

    def configure_preprocess(self, datamodule: Any = None, stage: str | None = None) -> None:
        """Take ``datamodule``'s preprocessing settings, then the backbone's statistics if none.

        Args:
            datamodule: Where the settings come from (``None``: only the backbone's).
            stage: Lightning's stage (``"fit"``, ``"predict"``...): at ``"predict"`` the bands
                a checkpoint is checked against are the datamodule's predict bands.
        """
        self._input_bands = None
        if isinstance(self.preprocess, MultiModalPreprocess):
            self._configure_multimodal_preprocess(datamodule, stage)
            self._expected_bands = None
            return
        if datamodule is not None:
            settings = _datamodule_preprocess_settings(datamodule)
            if _per_modality(settings):
                raise ValueError(
                    f"{type(datamodule).__name__} gives modalities {list(settings)} but the model "
                    "declares none: use a multimodal backbone (one that declares modalities, e.g. "
                    "TerraMind) or a single-modality datamodule."
                )
            self._input_bands = _datamodule_input_bands(datamodule, stage, settings)
            if self.hparams.means is not None:  # the task's own statistics win
                settings.pop("mean", None)
                settings.pop("std", None)
            source = f"{type(datamodule).__name__}.means/stds"
            self.preprocess.configure(**settings, source=source)
        if not self.preprocess.has_statistics:
            self._use_pretrained_statistics()
        self._expected_bands = None

    def _configure_multimodal_preprocess(self, datamodule: Any, stage: str | None) -> None:
        """Per-modality settings from ``datamodule``, then the backbone's per-modality stats.

        Raises:
            ValueError: the datamodule names a modality the model does not take.
        """
        preprocess = self.preprocess
        assert isinstance(preprocess, MultiModalPreprocess)
        if datamodule is not None:
            settings = _datamodule_preprocess_settings(datamodule)
            input_bands = getattr(datamodule, "input_bands", None)
            if _per_modality(settings):
                by_modality = {m: dict(v) for m, v in settings.items()}
                bands = input_bands(stage) if callable(input_bands) else {}
            else:  # a single-modality datamodule feeds the model's first modality
                by_modality = {preprocess.first: settings}
                bands = {preprocess.first: _datamodule_input_bands(datamodule, stage, settings)}
            own = self.hparams.means if isinstance(self.hparams.means, Mapping) else {}
            self._input_bands = {}
            for name, values in by_modality.items():
                resolved = preprocess.resolve(name)
                if resolved is None:
                    raise ValueError(
                        f"{type(datamodule).__name__} gives modality '{name}' but the model takes "
                        f"modalities {list(preprocess.keys())}. Rename it in data.init_args "
                        "(modalities and the keys of *_data_root) or build the backbone with it."
                    )
                values = {k: v for k, v in values.items() if v is not None}
                if resolved in {preprocess.resolve(m) for m in own}:
                    values.pop("mean", None)  # the task's own statistics win
                    values.pop("std", None)
                source = f"{type(datamodule).__name__}.means/stds['{name}']"
                preprocess[resolved].configure(**values, source=source)
                self._input_bands[resolved] = bands.get(name)
        self._use_pretrained_statistics()

    def _use_pretrained_statistics(self) -> None:
        if isinstance(self.preprocess, MultiModalPreprocess):
            self._use_pretrained_modality_statistics(self.preprocess)
            return
        encoder = getattr(self.model, "encoder", None)
        stats = getattr(encoder, "pretrained_stats", None)
        if not stats:
            return
        self.preprocess.configure(
            mean=stats["mean"], std=stats["std"], source="the backbone's pretraining statistics"
        )
        log.info(
            "No means/stds given: normalising with %s's pretraining statistics for bands %s "
            "(means %s, stds %s). Set data.init_args.means/stds to use your own.",
            type(encoder).__name__,
            stats.get("bands"),
            [round(float(v), 4) for v in stats["mean"]],
            [round(float(v), 4) for v in stats["std"]],
        )

    def _use_pretrained_modality_statistics(self, preprocess: MultiModalPreprocess) -> None:
        """``pretrained_stats[modality]`` of the backbone for each modality still without
        statistics (logged once per modality)."""
        owner = getattr(self.model, "encoder", None)
        if getattr(owner, "pretrained_stats", None) is None:
            owner = self.model
        stats = getattr(owner, "pretrained_stats", None)
        if not isinstance(stats, Mapping):
            return
        by_key = {modality_key(str(k)): v for k, v in stats.items()}
        for name, module in preprocess.items():
            entry = by_key.get(modality_key(name))
            if module.has_statistics or not entry:
                continue
            module.configure(
                mean=entry["mean"],
                std=entry["std"],
                source=f"the backbone's pretraining statistics of '{name}'",
            )
            if name not in self._pretrained_logged:
                self._pretrained_logged.add(name)
                log.info(
                    "No means/stds for modality '%s': normalising with %s's pretraining "
                    "statistics for bands %s (means %s, stds %s). Set data.init_args.means/stds"
                    "['%s'] to use your own.",
                    name,
                    type(owner).__name__,
                    entry.get("bands"),
                    [round(float(v), 4) for v in entry["mean"]],
                    [round(float(v), 4) for v in entry["std"]],
                    name,
                )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Check the checkpoint's bands against the data's, and complete old checkpoints
        (LoRA checkpoints: with the base weights they refer to)."""
        from geofm.tasks.peft_checkpoint import restore_checkpoint

        restore_checkpoint(self, checkpoint)
        state = checkpoint.get("state_dict", {})
        if isinstance(self.preprocess, MultiModalPreprocess):
            given = self._input_bands if isinstance(self._input_bands, Mapping) else {}
            for name in self.preprocess.keys():
                saved = state.get(f"preprocess.{name}._extra_state")
                trained = saved.get("bands") if isinstance(saved, Mapping) else None
                self._check_checkpoint_bands(trained, given.get(name), modality=name)
            self._expected_bands = None
            return
        saved = state.get("preprocess._extra_state")
        self._check_checkpoint_bands(saved.get("bands") if isinstance(saved, Mapping) else None)
        # Checkpoints of geofm 0.1 kept the statistics beside the state dict.
        legacy = checkpoint.get("geofm_normalization")
        if "preprocess.mean" not in state:
            means = legacy["means"] if legacy else []
            stds = legacy["stds"] if legacy else []
            state["preprocess.mean"] = torch.tensor(means, dtype=torch.float32)
            state["preprocess.std"] = torch.tensor(stds, dtype=torch.float32)
            state.setdefault("preprocess._extra_state", self.preprocess.get_extra_state())
        self._expected_bands = None

    def _check_checkpoint_bands(
        self,
        trained: Sequence[str] | None,
        given: Sequence[str] | None = None,
        modality: str | None = None,
    ) -> None:
        """Refuse a checkpoint trained on other bands (or another order) than the data gives.

        Lightning calls ``on_load_checkpoint`` after ``setup``, so ``self._input_bands`` holds
        the datamodule's bands of this run; the checkpoint's preprocessing replaces the
        statistics afterwards, which would hide a reordering (same count, other bands).
        Positions where either list has only a file position (``band_<n>``) are not compared.

        Args:
            trained: The checkpoint's band names.
            given: The data's band names (default: those of this stage's datamodule).
            modality: The modality compared, for multimodal models.

        Raises:
            ValueError: naming both lists and the setting that fixes it.
        """
        if given is None and modality is None:
            given = self._input_bands  # type: ignore[assignment]
        if not trained or not given or _same_bands(trained, given):
            return
        what = f"bands of modality '{modality}'" if modality is not None else "bands"
        key = f"['{modality}']" if modality is not None else ""
        raise ValueError(
            f"The checkpoint was trained on {what} {list(trained)} (in this order) but the data "
            f"gives {list(given)}. Set data.init_args.predict_output_bands{key} (or "
            f"output_bands{key}) to the trained order {list(trained)}, so that each band reaches "
            "the weights that learnt it."
        )

    def _expected_band_counts(self) -> list[tuple[int, str]]:
        """``(bands, what says so)`` for every setting that fixes the number of input bands."""
        args = self.hparams.model_args or {}
        expected = []
        if args.get("backbone_in_chans") is not None:
            count = int(args["backbone_in_chans"])
            expected.append((count, f"model_args.backbone_in_chans={count}"))
        elif isinstance(args.get("backbone_bands"), (list, tuple)):  # a dict: per modality
            count = len(args["backbone_bands"])
            expected.append((count, f"model_args.backbone_bands lists {count} bands"))
        else:
            root = getattr(self.model, "encoder", self.model)
            first = next((m for n, m in root.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
            if first is not None:
                expected.append(
                    (
                        first.in_channels,
                        f"the model's first layer takes {first.in_channels} bands (set "
                        "model_args.backbone_in_chans to the batch's band count)",
                    )
                )
        preprocess = self.preprocess
        if isinstance(preprocess, MultiModalPreprocess):  # a bare tensor is the first modality
            preprocess = preprocess[preprocess.first]
        if preprocess.has_statistics:
            count = preprocess.mean.numel()
            expected.append((count, f"{preprocess.source} has {count} values per band list"))
        return expected

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        """A dict batch whose image has the band count every setting expects."""
        if not isinstance(batch, Mapping) or "image" not in batch:
            raise TypeError(
                f"{type(self).__name__} expects dict batches with an 'image' key (TorchGeo "
                f"convention), got {type(batch).__name__}"
                + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
                + "."
            )
        image = batch["image"]
        if isinstance(image, Mapping):
            self._check_modalities(image)
            return
        if self._expected_bands is None:
            self._expected_bands = self._expected_band_counts()
        bands = image.shape[1]
        for count, what in self._expected_bands:
            if count != bands:
                raise ValueError(
                    f"{what} but the batch has {bands} bands (image shape {tuple(image.shape)})."
                )
        self._check_frames(image)

    def _check_modalities(self, image: Mapping[str, torch.Tensor]) -> None:
        """A dict image: modalities the model takes, each with its preprocessing's band count.

        Raises:
            ValueError: the model declares no modalities, a modality is unknown (naming the
                model's), or a modality's band count differs from its statistics or bands.
        """
        preprocess = self.preprocess
        if not isinstance(preprocess, MultiModalPreprocess):
            raise ValueError(
                f"The batch's image is a dict of modalities {list(image)} but the model declares "
                "no modalities: use a multimodal backbone (one with `modalities`, e.g. TerraMind) "
                "or a single-modality datamodule."
            )
        if not image:
            raise ValueError("The batch's image is an empty dict: no modality to predict from.")
        for name, value in image.items():
            module = preprocess.modality(name)  # names the model's modalities when unknown
            expected = module.num_bands
            if expected is not None and value.shape[1] != expected:
                what = (
                    f"{module.source} has {expected} values per band list"
                    if module.has_statistics
                    else f"its trained bands are {module.bands}"
                )
                raise ValueError(
                    f"Modality '{name}': {what} but the batch has {value.shape[1]} bands (shape "
                    f"{tuple(value.shape)}). Select the modality's bands with "
                    f"data.init_args.output_bands['{name}'] or give means/stds for them."
                )
            self._check_frames(value)

    def _check_frames(self, image: torch.Tensor) -> None:
        """A time axis as long as the backbone's ``num_frames`` (Prithvi), with the settings
        to change: without it the failure comes from a neck, far from the cause."""
        frames = getattr(getattr(self.model, "encoder", None), "num_frames", None)
        if not isinstance(frames, int) or isinstance(frames, bool):
            return
        shape = tuple(image.shape)
        if image.ndim == 4 and frames > 1:
            raise ValueError(
                f"The backbone takes {frames} time steps (model_args.backbone_num_frames="
                f"{frames}) but the batch's images are (B, C, H, W) {shape}, without a time "
                f"axis. For files that stack {frames} dates (T x C bands, time-major) set "
                "data.init_args.expand_temporal_dimension: true; for single-date images set "
                "backbone_num_frames: 1 (and the ReshapeTokensToImage neck's effective_time_dim: "
                "1)."
            )
        if image.ndim == 5 and image.shape[2] != frames:
            steps = image.shape[2]
            raise ValueError(
                f"The batch's images have {steps} time steps (B, C, T, H, W) = {shape} but the "
                f"backbone takes {frames} (model_args.backbone_num_frames={frames}). Set "
                f"backbone_num_frames (and the ReshapeTokensToImage neck's effective_time_dim) to "
                f"{steps}, or give files of {frames} dates ({frames} x {image.shape[1]} bands "
                "with data.init_args.expand_temporal_dimension: true)."
            )

    # ------------------------------------------------------------------ forward
    def forward(self, image: torch.Tensor | Mapping[str, torch.Tensor], **kwargs: Any) -> ModelOutput:
        """The model's output for a raw ``image`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``, or for
        multimodal models a dict ``{modality: (B, C_m, H, W)}``.

        The image goes through the task's preprocessing first; ``kwargs`` are the model's
        extra inputs (``temporal_coords``, ``location_coords``).
        """
        return self.model(self.preprocess(image), **kwargs)

    def _model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch entries the model takes as keyword inputs (its ``extra_inputs``)."""
        wanted = self.predictor.extra_inputs
        declared = getattr(self.model, "extra_inputs", ())  # not merely **kwargs
        for key in declared:
            if key not in batch and key not in self._missing_inputs_logged:
                self._missing_inputs_logged.add(key)
                log.warning(
                    "The model takes '%s' but the batches have none, so it runs without it. "
                    "geofm datasets give temporal_coords when file names hold dates (set "
                    "data.init_args.date_pattern) and location_coords when files have a CRS.",
                    key,
                )
        return {key: batch[key] for key in wanted if key in batch}

    def _inference(
        self, batch: Mapping[str, Any], stage: str = "predict"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and probabilities of the predictor (for regression: values, twice).

        Tiled when tiling is set for ``stage`` (``"val"``, ``"test"`` or ``"predict"``): the
        predictor's probabilities are blended, and the logits returned are those whose softmax
        gives the blend (for losses). Regression values come back as ``(B, H, W)``.
        """
        inputs = self._model_inputs(batch)
        image = batch["image"]
        options = self._tiled if stage in self._tiled_stages else None
        if not options:
            logits = self.predictor.logits(image, **inputs)
            probabilities = activate(logits, self.predictor.kind)
        else:
            tiled_forward = _tiled_forward_function()
            probabilities = tiled_forward(self.predictor, image, extra=inputs, **options)
            logits = probabilities
            if self.predictor.kind == "probabilities":
                logits = probabilities_to_logits(probabilities)
        if self.predictor.kind == "values":  # the model's (B, H, W), after the tiler's channel
            return logits.squeeze(1), probabilities.squeeze(1)
        return logits, probabilities

    # ------------------------------------------------------------------ steps
    @abstractmethod
    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The batch's target, shaped and typed as losses and metrics expect."""

    def check_target(self, batch: Mapping[str, Any], target: torch.Tensor) -> None:
        """Raise on targets the loss cannot take (class tasks: values outside the classes).

        Called in every step before the loss; nothing by default.
        """

    def _train_forward(self, batch: Mapping[str, Any]) -> ModelOutput:
        """The training forward, with torch's BatchNorm error on too small inputs explained."""
        image = batch["image"]
        try:
            return self(image, **self._model_inputs(batch))
        except ValueError as err:
            if "Expected more than 1 value per channel when training" not in str(err):
                raise
            image = _first_tensor(image)
            height, width = image.shape[-2:]
            raise ValueError(
                f"The images are too small for the model: a batch of {image.shape[0]} image(s) "
                f"of {height} x {width} pixels reaches a BatchNorm layer with a single value per "
                f"channel (torch: {err}). Use larger chips (a ResNet's deepest features are 1/32 "
                "of the image, so 64 x 64 or more), data.init_args.batch_size >= 2, and "
                "data.init_args.drop_last: true so that no training batch holds one image."
            ) from err

    @abstractmethod
    def metric_inputs(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(preds, target)`` for the metric collection's ``update``."""

    @abstractmethod
    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        """Hard predictions from the model output (class map, class index, values...)."""

    @abstractmethod
    def prediction_outputs(self, logits: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``predict_step`` returns, before the passed-through keys.

        Args:
            logits: The model's output (under tiled inference: logits of the blend).
            probabilities: The predictor's probabilities (regression: values).
        """

    def _metrics(self, stage: str) -> MetricCollection:
        match stage:
            case "train":
                return self.train_metrics
            case "val":
                return self.val_metrics
            case "test":
                return self.test_metrics
            case _:
                raise ValueError(f"Unknown stage '{stage}'; expected one of {STAGES}.")

    def _aux_loss(self, output: ModelOutput, target: torch.Tensor) -> torch.Tensor | float:
        weights = self.hparams.aux_loss or {}
        missing = sorted(set(weights) - set(output.auxiliary_heads))
        if missing:
            raise KeyError(
                f"aux_loss names heads {missing} that the model does not have; its auxiliary "
                f"heads are {sorted(output.auxiliary_heads)}."
            )
        return sum(
            float(weight) * self.criterion(output.auxiliary_heads[name], target)
            for name, weight in weights.items()
        )

    def _step(self, batch: Mapping[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and main output (logits or values) of one step; logs the loss, updates metrics."""
        self._check_batch(batch)
        target = self.target(batch)
        self.check_target(batch, target)
        if stage == "train":
            output = self._train_forward(batch)
            prediction = output.output
            loss = self.criterion(prediction, target) + self._aux_loss(output, target)
        else:
            prediction = self._inference(batch, stage)[0]
            loss = self.criterion(prediction, target)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=_first_tensor(batch["image"]).shape[0],
        )
        preds, truth = self.metric_inputs(prediction.detach(), target)
        if preds.numel():
            self._metrics(stage).update(preds, truth)
            self._updated_stages.add(stage)
        return loss, prediction

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        _, prediction = self._step(batch, "val")
        if self._plots_batch(batch_idx):
            self._plot(batch, prediction, batch_idx)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Predictions plus every batch key other than the inputs and targets (``filename``,
        ``crs``, ``nodata_mask``...)."""
        self._check_batch(batch)
        logits, probabilities = self._inference(batch)
        result = self.prediction_outputs(logits, probabilities)
        result.update({key: value for key, value in batch.items() if key not in _DATA_KEYS})
        return result

    def _log_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor] | None:
        """Log the epoch's metrics of ``stage`` and return them (None when nothing updated them)."""
        if stage not in self._updated_stages:
            return None
        metrics = self._metrics(stage)
        # torchmetrics syncs its states across processes in compute(); no sync_dist needed.
        values = metrics.compute()
        self.log_dict(values)
        metrics.reset()
        self._updated_stages.discard(stage)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        metrics = self._log_epoch_metrics("test")
        if metrics and self.hparams.get("path_to_record_metrics") and self.trainer.is_global_zero:
            write_metrics_csv(Path(self.hparams.path_to_record_metrics) / "metrics.csv", metrics)

    # ------------------------------------------------------------------ plots
    def _plots_batch(self, batch_idx: int) -> bool:
        """Whether validation batch ``batch_idx`` is plotted: one of the first 10 batches of an
        epoch that ``plot_on_val`` divides (TerraTorch's schedule), outside the sanity check."""
        period = int(self.hparams.plot_on_val)
        return (
            period > 0
            and batch_idx < TERRATORCH_PLOT_BATCHES
            and self.current_epoch % period == 0
            and not self.trainer.sanity_checking
        )

    def _figure_writers(self) -> list[Any]:
        """The loggers' experiments that take figures (``add_figure``); empty (logged once)
        when there is none or matplotlib is missing."""
        writers = [
            logger.experiment
            for logger in self.loggers
            if callable(getattr(logger.experiment, "add_figure", None))
        ]
        if not writers:
            if not self._plot_skipped_logged:
                log.info("plot_on_val: no logger accepts figures (add_figure); plots are skipped.")
                self._plot_skipped_logged = True
            return []
        return writers if plotting.matplotlib_available() else []

    def _plot(self, batch: Mapping[str, Any], prediction: torch.Tensor, batch_idx: int) -> None:
        writers = self._figure_writers()
        if not writers:
            return
        target = self.target(batch)
        image = batch["image"]
        if isinstance(image, Mapping):  # plot the datamodule's rgb_modality (else the first)
            image = image.get(self._rgb_modality) if self._rgb_modality in image else _first_tensor(image)
        figure = plotting.plot_sample(
            image[0],
            target[0],
            self.decode(prediction.detach())[0],
            mode=self.plot_mode,
            class_names=self.hparams.class_names,
            rgb_indices=self.rgb_indices,
            num_classes=self.num_classes,
        )
        for writer in writers:
            writer.add_figure(f"val/sample_{batch_idx}", figure, global_step=self.global_step)
