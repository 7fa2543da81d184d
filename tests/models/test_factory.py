"""EncoderDecoderFactory: shape contract, keyword routing, heads, aux heads, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geofm.models.heads import ClassificationHead, RegressionHead, SegmentationHead
from geofm.models.model import AuxiliaryHead, ModelOutput
from geofm.registry import GEOFM_DECODER_REGISTRY, MODEL_FACTORY_REGISTRY

torch.manual_seed(0)


@pytest.fixture(scope="module")
def factory():
    return MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory")


def resnet_unet(factory, task, **kwargs):
    return factory.build_model(
        task,
        "timm_resnet18",
        "smp_Unet",
        num_classes=None if task == "regression" else 3,
        backbone_in_chans=6,
        decoder_decoder_channels=[32, 16, 16, 8, 8],
        **kwargs,
    )


@pytest.mark.parametrize("size", [224, 230])
@pytest.mark.parametrize(
    ("task", "expected"),
    [("segmentation", (1, 3, "H", "W")), ("regression", (1, "H", "W")), ("classification", (1, 3))],
)
def test_shape_contract_cnn(factory, task, expected, size):
    model = resnet_unet(factory, task.upper() if task == "regression" else task).eval()
    out = model(torch.randn(1, 6, size, size))
    assert isinstance(out, ModelOutput)
    assert tuple(out.output.shape) == tuple(size if d in ("H", "W") else d for d in expected)


@pytest.mark.parametrize("size", [224, 230])
def test_shape_contract_vit(factory, size):
    model = factory.build_model(
        "segmentation",
        "timm_vit_tiny_patch16_224",
        "smp_PSPNet",
        num_classes=4,
        backbone_in_chans=6,
        backbone_dynamic_img_size=True,
        backbone_out_indices=[2, 5, 8, 11],
        decoder_encoder_depth=4,
    ).eval()
    assert model.pad_multiple == 16
    assert model(torch.randn(1, 6, size, size)).output.shape == (1, 4, size, size)


def test_keyword_routing_reaches_parts(factory):
    model = factory.build_model(
        "segmentation",
        "timm_resnet18",
        "smp_Unet",
        num_classes=2,
        backbone_in_chans=4,
        decoder_decoder_channels=[40, 30, 20, 10, 5],
        head_channel_list=[7],
        head_dropout=0.1,
    )
    assert model.encoder.model.conv1.in_channels == 4
    assert model.decoder.out_channels == 5
    assert isinstance(model.head, SegmentationHead)
    assert model.head.classifier.in_channels == 7
    assert isinstance(model.head.dropout, nn.Dropout2d)


def test_unused_keywords_are_all_named(factory):
    with pytest.raises(ValueError) as info:
        factory.build_model("segmentation", "timm_resnet18", "smp_Unet", num_classes=2, foo=1, bar_x=2)
    assert "foo" in str(info.value) and "bar_x" in str(info.value)


def test_unsupported_task(factory):
    with pytest.raises(NotImplementedError, match="segmentation.*regression.*classification"):
        factory.build_model("detection", "timm_resnet18", "smp_Unet")


def test_modules_without_out_channels(factory):
    class Bare(nn.Module):
        def forward(self, x):
            return [x]

    with pytest.raises(ValueError, match="out_channels"):
        factory.build_model("segmentation", Bare(), "smp_Unet", num_classes=2)


def test_ready_modules_are_used_as_they_are(factory):
    class Backbone(nn.Module):
        out_channels = [5]

        def forward(self, x, **kwargs):
            self.seen_kwargs = kwargs
            return [x[:, :5]]

    class Decoder(nn.Module):
        out_channels = 5

        def forward(self, features):
            return features[-1]

    backbone, decoder = Backbone(), Decoder()
    model = factory.build_model("regression", backbone, decoder, head_final_act="torch.nn.ReLU")
    assert model.encoder is backbone and model.decoder is decoder
    assert isinstance(model.head, RegressionHead)
    out = model(torch.randn(2, 6, 9, 11), temporal_coords=torch.zeros(2, 1, 2))
    assert out.output.shape == (2, 9, 11) and (out.output >= 0).all()
    assert "temporal_coords" in backbone.seen_kwargs  # forward keywords reach the backbone


def test_includes_head_decoder_gets_num_classes(factory):
    @GEOFM_DECODER_REGISTRY.register(name="_TestHeadDecoder", force=True)
    class HeadDecoder(nn.Module):
        includes_head = True

        def __init__(self, channel_list, num_classes):
            super().__init__()
            self.out_channels = num_classes
            self.conv = nn.Conv2d(channel_list[-1], num_classes, 1)

        def forward(self, features):
            return self.conv(features[-1])

    seg = factory.build_model("segmentation", "timm_resnet18", "_TestHeadDecoder", num_classes=5)
    assert isinstance(seg.head, nn.Identity) and seg.decoder.out_channels == 5
    assert seg(torch.randn(2, 3, 64, 64)).output.shape == (2, 5, 64, 64)
    reg = factory.build_model("regression", "timm_resnet18", "_TestHeadDecoder")
    assert reg(torch.randn(2, 3, 64, 64)).output.shape == (2, 64, 64)
    with pytest.raises(ValueError, match="head_"):
        factory.build_model("segmentation", "timm_resnet18", "_TestHeadDecoder", num_classes=2, head_dropout=0.1)


def _linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def _dropout_changes_the_output(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether switching on only the dropout layers changes the output (other layers in eval
    mode, so BatchNorm statistics play no part). At p=0.9 a kept unit is scaled by 10 and a
    dropped one is 0: some output always moves."""
    model.eval()
    with torch.no_grad():
        reference = model(x).output
        for layer in model.modules():
            if isinstance(layer, (nn.Dropout, nn.Dropout2d)):
                layer.train()
        torch.manual_seed(0)
        dropped = model(x).output
    model.eval()
    return not torch.equal(reference, dropped)


def _dropout_ps(module: nn.Module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]


def test_classification_head_dim_list_and_dropout_reach_the_head(factory):
    model = resnet_unet(factory, "classification", head_dim_list=[16, 12], head_dropout=0.9)
    assert isinstance(model.head, ClassificationHead)
    # decoder_channels[-1] = 8 features in, two hidden layers, 3 classes out.
    assert _linear_sizes(model.head) == [(8, 16), (16, 12), (12, 3)]
    assert _dropout_ps(model.head) == [0.9, 0.9, 0.9]
    x = torch.randn(2, 6, 64, 64)
    assert _dropout_changes_the_output(model, x)
    assert torch.equal(model(x).output, model(x).output)  # eval: deterministic
    assert model(x).output.shape == (2, 3)


@pytest.mark.parametrize("task", ["segmentation", "regression"])
def test_pixel_head_channel_list_and_dropout_reach_the_head(factory, task):
    model = resnet_unet(factory, task, head_channel_list=[12, 6], head_dropout=0.9)
    convs = [m for m in model.head.modules() if isinstance(m, nn.Conv2d)]
    outputs = 3 if task == "segmentation" else 1
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 12), (12, 6), (6, outputs)]
    assert _dropout_ps(model.head) == [0.9]
    x = torch.randn(2, 6, 64, 64)
    assert _dropout_changes_the_output(model, x)
    assert torch.equal(model(x).output, model(x).output)  # eval: deterministic


def test_linear_after_pool_changes_where_the_head_pools():
    torch.manual_seed(1)
    features = torch.randn(2, 8, 5, 7)
    after = ClassificationHead(8, 3, dim_list=[16], linear_after_pool=True).eval()
    per_pixel = ClassificationHead(8, 3, dim_list=[16], linear_after_pool=False).eval()
    per_pixel.load_state_dict(after.state_dict())
    pooled_first = after.layers(features.mean(dim=(2, 3)))
    logits_averaged = per_pixel.layers(features.permute(0, 2, 3, 1)).mean(dim=(1, 2))
    torch.testing.assert_close(after(features), pooled_first)
    torch.testing.assert_close(per_pixel(features), logits_averaged)
    # With a ReLU layer the two orders give different logits: the flag has an effect.
    assert not torch.allclose(after(features), per_pixel(features), atol=1e-4)
    # A pooled (B, C) input has nothing left to pool: both give the same.
    torch.testing.assert_close(after(features[:, :, 0, 0]), per_pixel(features[:, :, 0, 0]))
    with pytest.raises(ValueError, match="B, C, H, W"):
        after(torch.randn(2, 8, 5))


@pytest.mark.parametrize("linear_after_pool", [True, False])
def test_linear_after_pool_reaches_the_model_head(factory, linear_after_pool):
    model = resnet_unet(
        factory, "classification", head_dim_list=[16], head_linear_after_pool=linear_after_pool
    ).eval()
    assert model.head.linear_after_pool is linear_after_pool
    x = torch.randn(2, 6, 64, 64)
    # The model hands the decoder's feature map to the head, which pools as it is told.
    feature_map = model.decoder(model.encoder(x))
    assert feature_map.ndim == 4
    if linear_after_pool:
        expected = model.head.layers(feature_map.mean(dim=(2, 3)))
    else:
        expected = model.head.layers(feature_map.permute(0, 2, 3, 1)).mean(dim=(1, 2))
    torch.testing.assert_close(model(x).output, expected)


def test_rescale_is_refused_for_classification(factory):
    for value in (True, False):
        with pytest.raises(ValueError, match="rescale.*classification"):
            resnet_unet(factory, "classification", rescale=value)
    assert resnet_unet(factory, "segmentation").rescale is True  # the default for pixel tasks


def test_regression_channel_is_removed_by_the_model_only(factory):
    head = RegressionHead(8)
    assert head(torch.randn(2, 8, 4, 4)).shape == (2, 1, 4, 4)
    for decoder, kwargs in (("smp_Unet", {"decoder_decoder_channels": [32, 16, 16, 8, 8]}),
                            ("ASPPRegressionHead", {"decoder_channels": 8})):
        model = factory.build_model("regression", "timm_resnet18", decoder, **kwargs).eval()
        out = model(torch.randn(2, 3, 64, 64))
        assert out.output.shape == (2, 64, 64), decoder

    class TwoChannels(nn.Module):
        out_channels = 2
        includes_head = True

        def forward(self, features):
            return features[-1][:, :2]

    model = factory.build_model("regression", "timm_resnet18", TwoChannels())
    with pytest.raises(ValueError, match="one value per pixel.*2 channels"):
        model(torch.randn(1, 3, 64, 64))


def test_rescale_off_keeps_decoder_resolution(factory):
    model = factory.build_model(
        "segmentation", "timm_resnet18", "smp_FPN", num_classes=2, rescale=False
    )
    assert model(torch.randn(2, 3, 64, 64)).output.shape == (2, 2, 16, 16)
    # 70 px is padded to 96; the 1/4-resolution output loses the padding in its own scale.
    assert model(torch.randn(2, 3, 70, 70)).output.shape == (2, 2, 18, 18)


@pytest.mark.parametrize("task", ["segmentation", "regression", "classification"])
def test_aux_heads_and_gradients(factory, task):
    model = resnet_unet(
        factory,
        task,
        aux_decoders=[
            AuxiliaryHead("aux_fpn", "smp_FPN", {"decoder_decoder_segmentation_channels": 32, "head_dropout": 0.1}),
            {"name": "aux_psp", "decoder": "smp_PSPNet", "decoder_args": {"decoder_psp_out_channels": 8}},
        ],
    )
    out = model(torch.randn(2, 6, 64, 64))
    assert set(out.auxiliary_heads) == {"aux_fpn", "aux_psp"}
    for aux in out.auxiliary_heads.values():
        assert aux.shape == out.output.shape
    loss = sum(a.float().pow(2).mean() for a in out.auxiliary_heads.values())
    loss.backward()
    # Auxiliary losses alone train the backbone; the main decoder gets nothing from them.
    assert model.encoder.model.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())
    with pytest.raises(ValueError, match="unused|does not use"):
        resnet_unet(factory, task, aux_decoders=[AuxiliaryHead("bad", "smp_FPN", {"oops": 1})])


def test_freezing_switches_off_exactly_the_right_parameters(factory):
    model = resnet_unet(factory, "segmentation", aux_decoders=[AuxiliaryHead("aux", "smp_FPN")])
    model.freeze_encoder()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.freeze_decoder()
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.freeze_head()
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.aux_heads.parameters())

    # BatchNorm statistics of the frozen encoder stay fixed through .train() and a forward.
    model.train()
    bn = model.encoder.model.bn1
    assert not bn.training
    before = bn.running_mean.clone()
    model(torch.randn(2, 6, 64, 64) * 5 + 3)
    assert torch.equal(before, bn.running_mean)


def test_training_step_reduces_loss(factory):
    torch.manual_seed(0)
    model = resnet_unet(factory, "segmentation")
    x = torch.randn(4, 6, 64, 64)
    y = (x[:, 0] > 0).long()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(x).output, y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- necks inserted for token backbones
def test_token_backbone_without_necks_gets_its_reshape(factory, caplog):
    caplog.set_level("INFO", logger="geofm.models.factories.encoder_decoder")
    model = factory.build_model(
        "segmentation", "prithvi_eo_tiny", "UperNetDecoder", num_classes=3, decoder_channels=16
    ).eval()
    assert [type(n).__name__ for n in model.neck] == ["ReshapeTokensToImage"]
    assert model.neck[0].remove_cls_token and model.neck[0].effective_time_dim == 1
    lines = [r.getMessage() for r in caplog.records if "inserted" in r.getMessage()]
    assert len(lines) == 1 and "ReshapeTokensToImage" in lines[0] and "PrithviViT" in lines[0]
    assert model(torch.randn(1, 6, 64, 96)).output.shape == (1, 3, 64, 96)


def test_inserted_reshape_follows_the_frames(factory):
    model = factory.build_model(
        "segmentation", "prithvi_eo_tiny", "FCNDecoder", num_classes=2,
        backbone_num_frames=3, backbone_out_indices=[-1],
    ).eval()
    assert model.neck[0].effective_time_dim == 3
    assert model.decoder.out_channels > 0
    assert model(torch.randn(1, 6, 3, 32, 32)).output.shape == (1, 2, 32, 32)


def test_inserted_reshape_matches_the_explicit_neck(factory):
    torch.manual_seed(0)
    implicit = factory.build_model("classification", "prithvi_eo_tiny", "IdentityDecoder", num_classes=4)
    explicit = factory.build_model(
        "classification", "prithvi_eo_tiny", "IdentityDecoder", num_classes=4,
        necks=[{"name": "ReshapeTokensToImage"}],
    )
    explicit.load_state_dict(implicit.state_dict())
    x = torch.randn(2, 6, 32, 32)
    assert torch.equal(implicit.eval()(x).output, explicit.eval()(x).output)


def test_given_necks_and_map_backbones_get_nothing_inserted(factory, caplog):
    caplog.set_level("INFO", logger="geofm.models.factories.encoder_decoder")
    model = factory.build_model(
        "classification", "prithvi_eo_tiny", "IdentityDecoder", num_classes=2,
        necks=[{"name": "AggregateTokens"}],
    )
    assert [type(n).__name__ for n in model.neck] == ["AggregateTokens"]
    assert len(resnet_unet(factory, "segmentation").neck) == 0
    assert not [r for r in caplog.records if "inserted" in r.getMessage()]


def test_dofa_without_necks_gets_its_reshape(factory):
    model = factory.build_model(
        "segmentation", "dofa_small_patch16_224", "FCNDecoder", num_classes=2,
        backbone_model_bands=["RED", "GREEN", "BLUE"], backbone_img_size=64,
    ).eval()
    assert [type(n).__name__ for n in model.neck] == ["ReshapeTokensToImage"]
    assert model(torch.randn(1, 3, 64, 64)).output.shape == (1, 2, 64, 64)
