"""``ObjectDetectionModelFactory``: a registry backbone, necks and an FPN under a torchvision
detector (Faster R-CNN, RetinaNet, FCOS, Mask R-CNN).

The names follow TerraTorch's factory of the same name (``framework``, ``backbone``,
``backbone_*``, ``necks``, ``num_classes``, ``framework_*``), so its configs build here. What
differs, on purpose:

- The necks' last feature list goes through ``torchvision.ops.FeaturePyramidNetwork`` (one
  ``fpn_out_channels`` width for every level, plus a max-pooled extra level), so any backbone
  (a CNN's strided maps, or a ViT's tokens made into a pyramid by ``SelectIndices``,
  ``ReshapeTokensToImage``, ``LearnedInterpolateToPyramidal``) feeds the detector heads.
- torchvision's ``GeneralizedRCNNTransform`` neither normalises (the task's
  :class:`~geofm.models.preprocess.Preprocess` did, for any number of bands) nor resizes
  (boxes stay in the input's pixel grid); it only pads the batch to a multiple of
  ``size_divisible``.
- ``num_classes`` counts object classes, without a background class, and labels are 0-based
  in and out. Faster R-CNN and Mask R-CNN reserve label 0 for the background: the model
  shifts labels by one inside and back on output. (TerraTorch passes labels as given, so its
  Faster R-CNN configs count the background in ``num_classes``.)
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from geofm.models.factories.encoder_decoder import EncoderDecoderFactory, _channels
from geofm.models.model import Model, input_multiple, run_necks
from geofm.registry import MODEL_FACTORY_REGISTRY

__all__ = [
    "FRAMEWORKS",
    "DetectionBackbone",
    "ObjectDetectionModel",
    "ObjectDetectionModelFactory",
]

log = logging.getLogger(__name__)

#: Frameworks and whether the torchvision detector reserves label 0 for the background.
FRAMEWORKS: dict[str, bool] = {
    "faster-rcnn": True,
    "mask-rcnn": True,
    "retinanet": False,
    "fcos": False,
}
_TASKS = ("object_detection", "detection", "instance_segmentation")


class DetectionBackbone(nn.Module):
    """Backbone, necks and FPN as the ``backbone`` torchvision's detectors take.

    Args:
        encoder: A registry backbone returning ``list[Tensor]``.
        necks: Necks applied in order to the encoder's features (``image_size`` given).
        channel_list: Channels of the necks' output features, one per level.
        fpn_out_channels: Channels of every FPN level (torchvision's ``out_channels``).

    Attributes:
        out_channels: ``fpn_out_channels``, the attribute torchvision's heads read.
        num_levels: Feature maps returned: one per input level plus the pooled extra level.
    """

    def __init__(
        self,
        encoder: nn.Module,
        necks: Sequence[nn.Module],
        channel_list: Sequence[int],
        fpn_out_channels: int = 256,
    ):
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        super().__init__()
        self.encoder = encoder
        self.neck = nn.ModuleList(necks)
        self.fpn = FeaturePyramidNetwork(
            list(channel_list), fpn_out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = fpn_out_channels
        self.num_levels = len(channel_list) + 1

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """``x`` ``(B, C, H, W)``, preprocessed and padded -> ``{"0": ..., "pool": ...}`` maps
        of ``out_channels`` channels, the finest first."""
        features = run_necks(self.neck, self.encoder(x), tuple(x.shape[-2:]))
        bad = [tuple(f.shape) for f in features if f.ndim != 4]
        if bad:
            raise ValueError(
                f"The FPN takes (B, C, H, W) maps, but the backbone/necks give shapes {bad}. For a "
                "ViT backbone add necks, e.g. [{name: SelectIndices, indices: [...]}, {name: "
                "ReshapeTokensToImage}, {name: LearnedInterpolateToPyramidal}]."
            )
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def _no_resize_transform(size_divisible: int) -> nn.Module:
    """torchvision's batching transform without its normalisation and resizing."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _PadOnlyTransform(GeneralizedRCNNTransform):
        """Pads a batch to ``size_divisible``; the task's Preprocess normalised already, and
        boxes stay in the input's pixel grid (no resize in training nor at inference)."""

        def normalize(self, image: torch.Tensor) -> torch.Tensor:
            if not image.is_floating_point():
                raise TypeError(f"Detector inputs must be floating point, got {image.dtype}.")
            return image

        def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
            return image, target

    # min_size/max_size/mean/std are unused by the overridden methods.
    return _PadOnlyTransform(1, 1, [0.0], [1.0], size_divisible=size_divisible)


class ObjectDetectionModel(Model):
    """A torchvision detector on a geofm backbone, with 0-based labels in and out.

    ``forward(x, targets)`` in training returns torchvision's loss dict; in eval mode (or
    without targets) a list of ``{"boxes": (N, 4) xyxy pixels, "scores": (N,), "labels": (N,)
    0-based, ["masks": (N, H, W) probabilities]}``, one per image.

    Args:
        detector: The torchvision detector; its ``backbone`` is a :class:`DetectionBackbone`.
        framework: One of :data:`FRAMEWORKS`.
        num_classes: Object classes (no background).

    Attributes:
        encoder, neck, decoder (the FPN), head (the detector's heads): what the task's
        ``freeze_backbone``/``freeze_decoder``/``freeze_head`` freeze.
    """

    #: Keyword inputs the model takes besides the image: none (torchvision passes only images).
    extra_inputs: tuple[str, ...] = ()

    def __init__(self, detector: nn.Module, framework: str, num_classes: int):
        super().__init__()
        self.detector = detector
        self.framework = framework
        self.num_classes = num_classes
        self.label_offset = 1 if FRAMEWORKS[framework] else 0
        self.returns_masks = framework == "mask-rcnn"

    @property
    def encoder(self) -> nn.Module:
        return self.detector.backbone.encoder

    @property
    def neck(self) -> nn.Module:
        return self.detector.backbone.neck

    @property
    def decoder(self) -> nn.Module:
        return self.detector.backbone.fpn

    @property
    def head(self) -> nn.Module:
        parts = [
            getattr(self.detector, name)
            for name in ("rpn", "roi_heads", "head")
            if isinstance(getattr(self.detector, name, None), nn.Module)
        ]
        return nn.ModuleList(parts)

    def freeze_decoder(self) -> None:
        """Freeze the necks and the FPN (TerraTorch's freeze_decoder freezes the heads; use
        ``freeze_head`` for those)."""
        self._freeze("neck", "decoder")

    def forward(
        self,
        x: torch.Tensor,
        targets: list[Mapping[str, torch.Tensor]] | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Detect in ``x`` ``(B, C, H, W)`` (preprocessed).

        Args:
            x: The batch.
            targets: In training, one ``{"boxes": (N, 4), "labels": (N,) 0-based, ["masks":
                (N, H, W) uint8]}`` per image.
            **kwargs: Extra inputs (dates, locations), which torchvision's detectors cannot
                take; refused when given.
        """
        if kwargs:
            raise ValueError(
                f"The detector takes only images; got extra inputs {sorted(kwargs)}."
            )
        if x.ndim != 4:
            raise ValueError(
                f"Object detection takes (B, C, H, W) images, got shape {tuple(x.shape)} (no "
                "time axis: use single-date images, backbone_num_frames: 1)."
            )
        images = list(x.float())
        if self.training:
            if targets is None:
                raise ValueError("Training the detector needs targets (boxes and labels).")
            shifted = []
            for target in targets:
                entry = {key: value for key, value in target.items()}
                entry["labels"] = target["labels"].long() + self.label_offset
                shifted.append(entry)
            return self.detector(images, shifted)
        detections = self.detector(images)
        for det in detections:
            det["labels"] = det["labels"] - self.label_offset
            if "masks" in det:
                det["masks"] = det["masks"][:, 0]  # (N, 1, H, W) -> (N, H, W)
        return detections


# torchvision's transform settings, which the pad-only transform does not use.
_TRANSFORM_ARGS = ("min_size", "max_size", "image_mean", "image_std", "fixed_size", "_skip_resize")
_FPN_NECK = "FeaturePyramidNetworkNeck"


def _take_fpn_neck(
    necks: list[Mapping[str, Any]] | None, fpn_out_channels: int
) -> tuple[list[Mapping[str, Any]] | None, int]:
    """TerraTorch's configs end their necks with ``FeaturePyramidNetworkNeck``: the factory
    builds that FPN itself, with the neck's ``out_channel`` as ``fpn_out_channels``."""
    if not necks or necks[-1].get("name") != _FPN_NECK:
        if any(spec.get("name") == _FPN_NECK for spec in necks or []):
            raise ValueError(
                f"{_FPN_NECK} can only be the last neck (the FPN before the detector)."
            )
        return necks, fpn_out_channels
    spec = dict(necks[-1])
    unknown = sorted(set(spec) - {"name", "out_channel", "output_ordered_dict"})
    if unknown:
        raise ValueError(f"{_FPN_NECK} takes out_channel; got {unknown}.")
    if not spec.get("output_ordered_dict", True):
        # torchvision's detectors take the FPN's maps by name: a list cannot be honoured.
        raise ValueError(
            f"{_FPN_NECK}(output_ordered_dict=False): the detector's FPN always gives its maps "
            "by name (an OrderedDict), as torchvision's heads need; leave the key out."
        )
    if "out_channel" in spec:
        if fpn_out_channels not in (256, spec["out_channel"]):
            raise ValueError(
                f"{_FPN_NECK}(out_channel={spec['out_channel']}) and fpn_out_channels="
                f"{fpn_out_channels} disagree; give one."
            )
        fpn_out_channels = int(spec["out_channel"])
    log.info("%s: the detector's FPN (%d channels) is that neck.", _FPN_NECK, fpn_out_channels)
    return list(necks[:-1]), fpn_out_channels


def _anchor_sizes(
    framework: str, levels: int, sizes: Sequence[Any] | None
) -> tuple[tuple[int, ...], ...]:
    """Anchor sizes per level: given ones, else torchvision's defaults for ``levels`` maps."""
    if sizes is not None:
        out = tuple(
            tuple(int(s) for s in (v if isinstance(v, (list, tuple)) else [v])) for v in sizes
        )
        if len(out) != levels:
            raise ValueError(
                f"anchor_sizes has {len(out)} levels but the FPN gives {levels} feature maps "
                f"(the necks' {levels - 1} levels plus a pooled one); give {levels} entries."
            )
        return out
    if framework == "fcos":  # one anchor per location, its size the level's scale
        return tuple((8 * 2**i,) for i in range(levels))
    if framework == "retinanet":
        return tuple(
            (s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3)))
            for s in (32 * 2**i for i in range(levels))
        )
    return tuple((32 * 2**i,) for i in range(levels))


@MODEL_FACTORY_REGISTRY.register
class ObjectDetectionModelFactory:
    """Builds an :class:`ObjectDetectionModel` from registry names (TerraTorch's arguments)."""

    def build_model(
        self,
        task: str,
        backbone: str | nn.Module,
        framework: str,
        num_classes: int | None = None,
        necks: list[Mapping[str, Any]] | None = None,
        in_channels: int | None = None,
        fpn_out_channels: int = 256,
        anchor_sizes: list[Any] | None = None,
        **kwargs: Any,
    ) -> ObjectDetectionModel:
        """Compose a detector.

        Args:
            task: ``"object_detection"`` (also ``"instance_segmentation"``).
            backbone: A name in ``BACKBONE_REGISTRY`` or a module with ``out_channels``.
            framework: ``"faster-rcnn"``, ``"retinanet"``, ``"fcos"`` or ``"mask-rcnn"``
                (instance masks).
            num_classes: Object classes, without background.
            necks: Necks from ``NECK_REGISTRY`` applied in order (as in
                ``EncoderDecoderFactory``; a token backbone without necks gets its declared
                token reshape, which gives one level: add ``SelectIndices`` and
                ``LearnedInterpolateToPyramidal`` for a pyramid). A last
                ``FeaturePyramidNetworkNeck`` (TerraTorch's configs) is the factory's own FPN.
            in_channels: TerraTorch's input band count: ``backbone_in_chans`` when that is
                not given (they must agree when both are).
            fpn_out_channels: Channels of the FPN levels and heads.
            anchor_sizes: Anchor sizes per FPN level, finest first (one list per level:
                several sizes for Faster R-CNN/RetinaNet, one for FCOS). Default:
                torchvision's (32, 64, ... pixels; FCOS 8, 16, ...).
            **kwargs: ``backbone_*`` arguments for the backbone and ``framework_*`` arguments
                for the torchvision detector class (``framework_box_score_thresh``,
                ``framework_rpn_post_nms_top_n_train``, ``framework_detections_per_img``...).
                ``framework_min_size``/``max_size``/``image_mean``/``image_std`` are logged as
                without effect and dropped (inputs are neither resized nor normalised here).

        Raises:
            ValueError: an unknown framework, missing ``num_classes``, or keywords without a
                known prefix.
        """
        import torchvision.models.detection as tvd
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.ops import MultiScaleRoIAlign

        if task.lower() not in _TASKS:
            raise NotImplementedError(
                f"ObjectDetectionModelFactory builds detectors (task 'object_detection'), not "
                f"'{task}'; use EncoderDecoderFactory for it."
            )
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework={framework!r}; choose one of {list(FRAMEWORKS)}.")
        if num_classes is None or int(num_classes) < 1:
            raise ValueError(
                f"Object detection needs num_classes >= 1 (object classes), got {num_classes!r}."
            )
        backbone_args = {k[9:]: v for k, v in kwargs.items() if k.startswith("backbone_")}
        framework_args = {k[10:]: v for k, v in kwargs.items() if k.startswith("framework_")}
        unused = sorted(k for k in kwargs if not k.startswith(("backbone_", "framework_")))
        if unused:
            raise ValueError(
                f"ObjectDetectionModelFactory got arguments it does not use: {unused}. Prefix "
                "backbone arguments with 'backbone_' and detector arguments with 'framework_'."
            )
        if in_channels is not None:
            given = backbone_args.get("in_chans")
            if given is not None and int(given) != int(in_channels):
                raise ValueError(
                    f"in_channels={in_channels} and backbone_in_chans={given} disagree; give one."
                )
            backbone_args["in_chans"] = int(in_channels)
        necks, fpn_out_channels = _take_fpn_neck(necks, fpn_out_channels)
        for name in sorted(set(framework_args) & set(_TRANSFORM_ARGS)):
            log.warning(
                "framework_%s=%r has no effect: the detector neither resizes nor normalises its "
                "inputs (the task's preprocessing normalises; TerraTorch's transform ignores it "
                "too). Remove it from model_args.",
                name,
                framework_args.pop(name),
            )
        encoder = EncoderDecoderFactory._build_backbone(backbone, backbone_args)
        if not necks:
            necks = EncoderDecoderFactory._default_necks(encoder)
        neck_modules, channel_list = EncoderDecoderFactory._build_necks(
            necks, list(_channels(encoder, "backbone"))
        )
        body = DetectionBackbone(encoder, neck_modules, channel_list, fpn_out_channels)
        sizes = _anchor_sizes(framework, body.num_levels, anchor_sizes)
        classes = int(num_classes) + (1 if FRAMEWORKS[framework] else 0)
        featmaps = [str(i) for i in range(len(channel_list))]
        if framework in ("faster-rcnn", "mask-rcnn"):
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
            parts: dict[str, Any] = {
                "rpn_anchor_generator": anchors,
                "rpn_head": tvd.faster_rcnn.RPNHead(
                    fpn_out_channels, anchors.num_anchors_per_location()[0]
                ),
                "box_roi_pool": MultiScaleRoIAlign(featmaps, output_size=7, sampling_ratio=2),
            }
            if framework == "mask-rcnn":
                parts["mask_roi_pool"] = MultiScaleRoIAlign(
                    featmaps, output_size=14, sampling_ratio=2
                )
                cls = tvd.MaskRCNN
            else:
                cls = tvd.FasterRCNN
        elif framework == "retinanet":
            anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
            groups = 32 if fpn_out_channels % 32 == 0 else 1
            parts = {
                "anchor_generator": anchors,
                "head": tvd.retinanet.RetinaNetHead(
                    fpn_out_channels,
                    anchors.num_anchors_per_location()[0],
                    classes,
                    norm_layer=partial(nn.GroupNorm, groups),
                ),
            }
            cls = tvd.RetinaNet
        else:
            if any(len(level) != 1 for level in sizes):
                raise ValueError(f"FCOS takes one anchor size per level, got anchor_sizes={sizes}.")
            parts = {"anchor_generator": AnchorGenerator(sizes, ((1.0,),) * len(sizes))}
            cls = tvd.FCOS
        clash = sorted(set(parts) & set(framework_args))
        if clash:
            raise ValueError(
                f"framework_{clash[0]} replaces a part the factory builds for the FPN; set "
                "anchor_sizes or fpn_out_channels instead."
            )
        try:
            detector = cls(body, classes, **parts, **framework_args)
        except TypeError as err:
            raise ValueError(
                f"framework_* arguments {sorted(framework_args)} do not fit "
                f"torchvision's {cls.__name__}: {err}"
            ) from err
        multiple = math.lcm(32, input_multiple(encoder))  # the FPN halves 5 times
        detector.transform = _no_resize_transform(multiple)
        log.info(
            "%s on %s: %d FPN levels, anchor sizes %s.",
            cls.__name__,
            type(encoder).__name__,
            body.num_levels,
            [list(s) for s in sizes],
        )
        return ObjectDetectionModel(detector, framework, int(num_classes))

