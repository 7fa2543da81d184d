"""MultiSourceRegistry and the registries geofm exposes."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from geofm.registry import (
    BACKBONE_REGISTRY,
    DECODER_REGISTRY,
    MultiSourceRegistry,
    Registry,
    UnknownNameError,
    UnknownScopeError,
    registry_summary,
)

ROOT = Path(__file__).resolve().parents[2]


def make_sources() -> tuple[MultiSourceRegistry, Registry, Registry]:
    ours = Registry("widget", scope="ours")
    theirs = Registry("widget", scope="theirs")
    ours.register(name="Both")(lambda **kw: ("ours", kw))
    theirs.register(name="Both")(lambda **kw: ("theirs", kw))
    theirs.register(name="OnlyTheirs")(lambda **kw: ("theirs-only", kw))
    return MultiSourceRegistry("widget", {"ours": ours, "theirs": theirs}), ours, theirs


def test_prefix_and_search_order():
    reg, ours, theirs = make_sources()
    assert reg.build("Both")[0] == "ours"  # ours first
    assert reg.build("theirs_Both")[0] == "theirs"  # prefix goes straight to the source
    assert reg.build("OnlyTheirs", a=1) == ("theirs-only", {"a": 1})
    assert reg.build({"type": "theirs_Both", "k": 2}) == ("theirs", {"k": 2})
    assert reg.build("theirs_Both", k=2, default_args={"k": 0, "j": 1}) == ("theirs", {"k": 2, "j": 1})
    assert reg.find_registry("OnlyTheirs") is theirs
    assert reg.find_registry("Both") is ours
    assert reg.find_registry("nothing") is None


def test_set_behaviour_and_sources():
    reg, ours, theirs = make_sources()
    assert sorted(reg) == ["ours_Both", "theirs_Both", "theirs_OnlyTheirs"]
    assert len(reg) == 3
    assert "OnlyTheirs" in reg and "ours_OnlyTheirs" not in reg
    assert reg.keys() == ["ours", "theirs"]
    assert reg["theirs"] is theirs
    extra = Registry("widget", scope="extra")
    extra.register(name="Extra")(lambda: "extra")
    reg.register_source("extra", extra)
    assert reg.build("Extra") == "extra" and reg.keys()[-1] == "extra"
    with pytest.raises(KeyError):
        reg.register_source("extra", extra)


def test_constructor_error_is_not_swallowed():
    ours = Registry("widget", scope="ours")
    theirs = Registry("widget", scope="theirs")

    @ours.register(name="Net")
    def failing(**kwargs):
        raise KeyError("bad key inside constructor")

    theirs.register(name="Net")(lambda **kw: "should not be reached")
    reg = MultiSourceRegistry("widget", {"ours": ours, "theirs": theirs})
    with pytest.raises(KeyError, match="bad key inside constructor"):
        reg.build("Net")


def test_unknown_names():
    reg, _, _ = make_sources()
    with pytest.raises(UnknownNameError, match="widget") as info:
        reg.build("OnlyTheir")
    assert "OnlyTheirs" in info.value.suggestions
    with pytest.raises(UnknownNameError) as info:
        reg.build("theirs_Bot")
    assert info.value.suggestions == ["theirs_Both"]
    with pytest.raises(TypeError, match="native"):
        reg.register(name="x")


def test_keyword_sources_as_in_terratorch():
    _, ours, theirs = make_sources()
    reg = MultiSourceRegistry(ours=ours, theirs=theirs)  # keyword order is search order
    assert reg.keys() == ["ours", "theirs"] and reg.name == "unnamed"
    assert reg.build("Both")[0] == "ours" and reg.build("OnlyTheirs")[0] == "theirs-only"
    named = MultiSourceRegistry(name="widget", theirs=theirs, ours=ours)
    assert named.name == "widget" and named.keys() == ["theirs", "ours"]
    assert named.build("Both")[0] == "theirs"
    mixed = MultiSourceRegistry("widget", {"ours": ours}, theirs=theirs)
    assert mixed.keys() == ["ours", "theirs"]
    with pytest.raises(TypeError, match="display name must be a string"):
        MultiSourceRegistry({"ours": ours})
    with pytest.raises(TypeError, match="source.build"):
        MultiSourceRegistry(ours=3)


def test_unknown_scopes_in_multi_source():
    _, ours, theirs = make_sources()
    child = Registry("widget", parent=ours, scope="ourlab")
    child.register(name="LabNet")(lambda **kw: ("lab", kw))
    reg = MultiSourceRegistry("widget", ours=ours, theirs=theirs)
    assert reg.build("ourlab.LabNet")[0] == "lab"
    assert reg.build({"type": "LabNet", "_scope_": "ourlab"})[0] == "lab"
    assert reg.scopes() == ["ourlab", "ours", "theirs"]
    with pytest.raises(UnknownScopeError) as info:
        reg.build("nolab.LabNet")
    assert "known scopes: 'ourlab', 'ours', 'theirs'" in str(info.value)
    assert info.value.suggestions == ["ourlab"]  # the closest scope
    with pytest.raises(UnknownScopeError, match="known scopes: 'ourlab', 'ours', 'theirs'"):
        reg.build({"type": "LabNet", "_scope_": "nolab"})
    assert "nolab.LabNet" not in reg


def write_zoo(tmp_path, module: str, prefix: str, registry_attr: str) -> None:
    (tmp_path / f"{module}.py").write_text(
        f"from tests.registry.test_multi_source import {registry_attr} as REG\n"
        "from geofm.registry import Registry\n"
        f"REG.register_source({prefix!r}, Registry({prefix!r}, Zoo{prefix}=lambda: {prefix!r}))\n"
    )


def test_zoo_locations_are_imported_on_first_lookup(tmp_path, monkeypatch):
    global LAZY_ZOO
    write_zoo(tmp_path, "lazy_zoo_a", "zooa", "LAZY_ZOO")
    write_zoo(tmp_path, "lazy_zoo_b", "zoob", "LAZY_ZOO")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, ours, _ = make_sources()
    LAZY_ZOO = MultiSourceRegistry("widget", ours=ours, locations=["lazy_zoo_a", "lazy_zoo_b"])
    try:
        repr(LAZY_ZOO)
        assert "lazy_zoo_a" not in sys.modules and "lazy_zoo_b" not in sys.modules
        assert "Zoozoob" in LAZY_ZOO  # the first lookup imports every location, in order
        assert "lazy_zoo_a" in sys.modules and "lazy_zoo_b" in sys.modules
        assert LAZY_ZOO.keys() == ["ours", "zooa", "zoob"]
        assert LAZY_ZOO.build("zooa_Zoozooa") == "zooa"
    finally:
        for module in ("lazy_zoo_a", "lazy_zoo_b"):
            sys.modules.pop(module, None)


def test_zoo_imported_directly_keeps_the_search_order(tmp_path, monkeypatch):
    global ORDERED_ZOO
    write_zoo(tmp_path, "ordered_zoo_a", "zooa", "ORDERED_ZOO")
    write_zoo(tmp_path, "ordered_zoo_b", "zoob", "ORDERED_ZOO")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, ours, _ = make_sources()
    ORDERED_ZOO = MultiSourceRegistry("widget", ours=ours, locations=["ordered_zoo_a", "ordered_zoo_b"])
    try:
        importlib.import_module("ordered_zoo_b")  # before any lookup, and out of order
        assert ORDERED_ZOO.keys() == ["ours", "zooa", "zoob"]
    finally:
        for module in ("ordered_zoo_a", "ordered_zoo_b"):
            sys.modules.pop(module, None)


def test_real_zoos_load_on_first_lookup():
    code = (
        "import sys\n"
        "from geofm.registry import BACKBONE_REGISTRY, DECODER_REGISTRY\n"
        "zoos = ['geofm.models.zoo.timm', 'geofm.models.zoo.smp', 'geofm.models.zoo.mmseg']\n"
        "print([m for m in zoos if m in sys.modules])\n"
        "assert 'resnet18' in BACKBONE_REGISTRY\n"
        "print([m for m in zoos if m in sys.modules])\n"
        "print(DECODER_REGISTRY.keys())\n"
        "print([m for m in zoos if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after_backbone, decoder_keys, after_decoder = out.stdout.strip().splitlines()
    assert before == "[]"
    assert after_backbone == "['geofm.models.zoo.timm']"
    assert decoder_keys.startswith("['geofm', 'smp'")
    assert after_decoder == str(["geofm.models.zoo.timm", "geofm.models.zoo.smp", "geofm.models.zoo.mmseg"])


def test_suggestions_for_prithvi_names():
    # The real backbone, registered by geofm.models.backbones.prithvi_vit on first lookup (a
    # stand-in registered here with force=True replaced it for every later test).
    with pytest.raises(UnknownNameError) as info:
        BACKBONE_REGISTRY.build("prithvi_eo_v2_30")
    assert "prithvi_eo_v2_300" in info.value.suggestions
    assert len(info.value.suggestions) <= 5


def test_summary_is_json():
    summary = registry_summary()
    assert set(summary) == {"backbone", "decoder", "neck", "factory"}
    assert "resnet18" in summary["backbone"]["timm"]
    assert "Unet" in summary["decoder"]["smp"]
    json.dumps(summary)
    with pytest.raises(KeyError):
        registry_summary(["nope"])


@pytest.mark.parametrize(
    "imports",
    ["import geofm; geofm.BACKBONE_REGISTRY", "import geofm.registry", "import geofm.models, geofm.models.zoo"],
)
def test_import_geofm_is_light(imports):
    code = (
        f"import sys; {imports}\n"
        "heavy = ['timm', 'segmentation_models_pytorch', 'lightning', 'rasterio', 'torchgeo']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_registry_list_json():
    out = subprocess.run(
        [sys.executable, "-m", "geofm.cli", "registry", "list", "decoder", "--filter", "unet", "--json"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert data["decoder"]["smp"] == ["Unet", "UnetPlusPlus"]


def test_public_names_resolve():
    import geofm

    for name in geofm.__all__:
        assert getattr(geofm, name) is not None


@pytest.mark.parametrize("first", ["geofm.models.zoo.timm", "geofm.models.zoo.torchgeo"])
def test_zoo_order_does_not_depend_on_which_module_is_imported_first(first):
    """A zoo module imported directly registers in its place in the locations, not first."""
    code = (
        f"import {first}\n"
        "from geofm.registry import BACKBONE_REGISTRY\n"
        "print(BACKBONE_REGISTRY.keys())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['geofm', 'timm', 'torchgeo']"
