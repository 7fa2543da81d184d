"""`lazy_exports`: the PEP 562 hooks of `geofm`, `geofm.data` and `geofm.tasks`."""

from __future__ import annotations

import types

import pytest

from geofm._lazy import lazy_exports


def make_package() -> types.ModuleType:
    package = types.ModuleType("fake_pkg")
    namespace = vars(package)
    namespace["__all__"] = ["dumps", "extra"]
    package.__getattr__, package.__dir__ = lazy_exports(namespace, {"dumps": "json"})
    return package


def test_names_load_on_first_access_and_are_cached():
    import json

    package = make_package()
    assert "dumps" not in vars(package)
    assert package.dumps is json.dumps
    assert vars(package)["dumps"] is json.dumps  # later accesses skip __getattr__


def test_unknown_names_and_dir():
    package = make_package()
    with pytest.raises(AttributeError, match="module 'fake_pkg' has no attribute 'loads'"):
        package.loads  # noqa: B018 (the access is the test)
    assert dir(package) == ["dumps", "extra"]


def test_packages_list_their_public_names():
    import geofm
    import geofm.tasks

    assert "__version__" in dir(geofm) and "SemanticSegmentationTask" in dir(geofm)
    assert geofm.tasks.build_loss.__module__ == "geofm.tasks.losses"
    with pytest.raises(AttributeError, match="module 'geofm.tasks' has no attribute 'Nope'"):
        geofm.tasks.Nope  # noqa: B018
