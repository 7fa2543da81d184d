"""Registry: set behaviour, registration forms, config builds, hierarchy, scopes, lazy locations."""

from __future__ import annotations

import sys
import textwrap

import pytest

from geofm.registry import (
    Registry,
    UnknownNameError,
    UnknownScopeError,
    build_from_cfg,
    current_default_scope,
    default_scope,
)


class Alpha:
    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


def beta(x=1, y=2):
    return ("beta", x, y)


@pytest.fixture
def reg() -> Registry:
    return Registry("thing")


def test_set_behaviour(reg):
    reg.register(Alpha)
    reg.register(beta)
    assert "Alpha" in reg and "beta" in reg
    assert "gamma" not in reg and 3 not in reg
    assert sorted(reg) == ["Alpha", "beta"]
    assert len(reg) == 2


def test_register_forms(reg):
    @reg.register
    class A:
        pass

    @reg.register()
    class B:
        pass

    @reg.register(name="alias")
    class C:
        pass

    reg.register(beta)
    reg.register(name="beta_alias")(beta)
    reg.register(name=["x1", "x2"], module=Alpha)
    assert reg.get("A") is A and reg.get("B") is B and reg.get("alias") is C
    assert reg.get("beta") is beta and reg.get("beta_alias") is beta
    assert reg.get("x1") is Alpha and reg.get("x2") is Alpha
    assert "C" not in reg


def test_register_rejects_non_callable(reg):
    with pytest.raises(TypeError, match="callable"):
        reg.register(42)
    with pytest.raises(TypeError, match="callable"):
        reg.register(name="n")(42)


@pytest.mark.parametrize("call", [lambda r: r.register("alias"), lambda r: r.register("alias", beta)])
def test_register_string_shows_the_decorator_form(reg, call):
    # Names go in name=: a positional string is an object to register, and not a callable one.
    with pytest.raises(TypeError) as info:
        call(reg)
    message = str(info.value)
    assert "@REG.register" in message and "REG.register(name='alias')(obj)" in message
    assert "alias" not in reg


def test_registry_from_elements():
    # TerraTorch's form: the keywords are the entries.
    reg = Registry(beta=beta, Alpha=Alpha)
    assert sorted(reg) == ["Alpha", "beta"] and len(reg) == 2
    assert reg["beta"] is beta and reg.build("beta", x=3) == ("beta", 3, 2)
    assert reg.name == "unnamed" and reg.scope is None
    named = Registry("thing", scope="elements", b=beta)
    assert named.name == "thing" and named.get("b") is beta
    with pytest.raises(TypeError, match="'a' must be callable"):
        Registry(a=3)
    with pytest.raises(TypeError, match="name must be a string"):
        Registry(name=beta)  # an entry called "name" goes through register(name=...)
    with pytest.raises(UnknownNameError):
        reg["gamma"]


def test_register_taken_name_needs_force(reg):
    reg.register(name="thing")(Alpha)
    with pytest.raises(KeyError, match="already registered"):
        reg.register(name="thing")(beta)
    reg.register(name="thing", force=True)(beta)
    assert reg.get("thing") is beta


def test_build_by_name_and_cfg(reg):
    reg.register(Alpha)
    reg.register(beta)
    built = reg.build("Alpha", 1, 2, k=3)
    assert isinstance(built, Alpha) and built.args == (1, 2) and built.kwargs == {"k": 3}
    assert reg.build({"type": "beta", "x": 5}) == ("beta", 5, 2)
    assert reg.build({"type": "beta", "x": 5}, default_args={"x": 0, "y": 9}) == ("beta", 5, 9)
    assert reg.build({"type": beta}) == ("beta", 1, 2)  # type may be a callable
    with pytest.raises(KeyError, match="'type'"):
        reg.build({"x": 1})


def test_unknown_name_suggests_close_names(reg):
    for name in ["prithvi_eo_v2_300", "prithvi_eo_v2_600", "unrelated"]:
        reg.register(name=name)(Alpha)
    with pytest.raises(UnknownNameError) as info:
        reg.build("prithvi_eo_v2_30")
    assert isinstance(info.value, KeyError)
    assert "prithvi_eo_v2_300" in info.value.suggestions
    assert "unrelated" not in info.value.suggestions
    assert "thing" in str(info.value) and "prithvi_eo_v2_300" in str(info.value)


def test_constructor_errors_pass_through(reg):
    @reg.register
    def broken():
        raise KeyError("inside the constructor")

    with pytest.raises(KeyError, match="inside the constructor") as info:
        reg.build("broken")
    assert not isinstance(info.value, UnknownNameError)


def test_hierarchy_and_scopes():
    root = Registry("model", scope="root")
    child = Registry("model", parent=root, scope="lab")
    sibling = Registry("model", parent=root, scope="other")
    root.register(name="Shared")(Alpha)
    child.register(name="Local")(beta)
    sibling.register(name="SiblingOnly")(beta)
    sibling.register(name="Shared")(beta)

    assert child.get("Shared") is Alpha  # falls back to the parent
    assert "Local" not in root  # parents do not see children's names unscoped
    assert root.get("lab.Local") is beta
    assert child.get("other.SiblingOnly") is beta  # siblings by scope
    assert child.get("other.Shared") is beta  # the scoped registry wins over the parent
    assert child.get("root.Shared") is Alpha
    with pytest.raises(UnknownNameError):
        child.get("other.Nothing")
    # An unknown scope is an error naming the known ones, never a silent unscoped search.
    with pytest.raises(UnknownScopeError) as info:
        child.get("nope.Shared")
    assert info.value.known == ["lab", "other", "root"]
    assert "'nope.Shared' names scope 'nope'" in str(info.value)
    assert "'lab', 'other', 'root'" in str(info.value)
    assert isinstance(info.value, KeyError)
    assert "nope.Shared" not in child  # membership answers, get() explains
    with pytest.raises(ValueError, match="scope"):
        Registry("model", parent=root)


def test_default_scope_switches_resolution():
    root = Registry("model", scope="base")
    lab = Registry("model", parent=root, scope="lab")
    root.register(name="Net")(Alpha)
    lab.register(name="Net")(beta)
    assert root.get("Net") is Alpha
    with default_scope("lab"):
        assert root.get("Net") is beta
    assert root.get("Net") is Alpha
    # ``_scope_`` in a config dict does the same for one build.
    assert root.build({"type": "Net", "_scope_": "lab", "x": 3}) == ("beta", 3, 2)
    assert isinstance(root.build({"type": "Net"}), Alpha)


def test_unknown_default_scope_is_an_error():
    root = Registry("model", scope="known_root")
    Registry("model", parent=root, scope="known_lab")
    with pytest.raises(UnknownScopeError) as info:
        default_scope("nope")  # raised by the call, before any block
    assert "'nope' is not a scope of any registry" in str(info.value)
    assert {"known_root", "known_lab"} <= set(info.value.known)
    assert current_default_scope() is None


def test_unknown_config_scope_is_an_error():
    root = Registry("model", scope="cfg_root")
    Registry("model", parent=root, scope="cfg_lab")
    root.register(name="Net")(Alpha)
    other = Registry("model", scope="elsewhere")  # known, but not in root's tree
    with pytest.raises(UnknownScopeError) as info:
        root.build({"type": "Net", "_scope_": "cfg_lba"})
    assert info.value.known == ["cfg_lab", "cfg_root"]
    assert "known scopes: 'cfg_lab', 'cfg_root'" in str(info.value)
    assert info.value.suggestions == ["cfg_lab"]
    with pytest.raises(UnknownScopeError, match="elsewhere"):
        root.build({"type": "Net", "_scope_": "elsewhere"})
    assert other.scope == "elsewhere"


def test_default_scope_of_another_tree_is_logged(caplog):
    # A default scope concerns one kind of component; other trees resolve as usual, and say so.
    lab = Registry("thing", scope="warn_lab")  # kept: only live registries' scopes are known
    plain = Registry("other", scope="warn_plain")
    plain.register(name="Net")(Alpha)
    with caplog.at_level("WARNING", logger="geofm.registry.registry"), default_scope("warn_lab"):
        assert plain.get("Net") is Alpha
        assert plain.get("Net") is Alpha
    messages = [r.getMessage() for r in caplog.records if "warn_lab" in r.getMessage()]
    assert len(messages) == 1 and "warn_plain" in messages[0]
    assert lab.scope == "warn_lab"


def test_lazy_locations(tmp_path, monkeypatch):
    package = tmp_path / "lazy_components_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "parts.py").write_text(
        textwrap.dedent(
            """
            from tests.registry.test_registry import LAZY
            @LAZY.register
            class LazyPart:
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    global LAZY
    LAZY = Registry("lazy", scope="lazy", locations=["lazy_components_pkg.parts"])
    try:
        assert "lazy_components_pkg.parts" not in sys.modules
        assert "LazyPart" in LAZY  # first lookup imports the location
        assert "lazy_components_pkg.parts" in sys.modules
        assert list(LAZY) == ["LazyPart"]
    finally:
        sys.modules.pop("lazy_components_pkg.parts", None)
        sys.modules.pop("lazy_components_pkg", None)


def test_lazy_locations_imported_on_iteration(tmp_path, monkeypatch):
    (tmp_path / "lazy_iter_mod.py").write_text(
        "from tests.registry.test_registry import LAZY_ITER\n"
        "LAZY_ITER.register(name='it')(lambda: 1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    global LAZY_ITER
    LAZY_ITER = Registry("lazy", locations=["lazy_iter_mod"])
    try:
        assert "lazy_iter_mod" not in sys.modules
        assert len(LAZY_ITER) == 1
        assert "lazy_iter_mod" in sys.modules
    finally:
        sys.modules.pop("lazy_iter_mod", None)


def test_failed_location_import_is_reported_every_time(tmp_path, monkeypatch):
    (tmp_path / "broken_location_mod.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = Registry("broken", locations=["broken_location_mod"])
    for _ in range(2):  # not a misleading "unknown name" the second time
        with pytest.raises(ImportError, match="xyz"):
            broken.get("Anything")
    sys.modules.pop("broken_location_mod", None)


def test_build_from_cfg_rejects_non_mapping(reg):
    with pytest.raises(TypeError):
        build_from_cfg(["type", "x"], reg)
