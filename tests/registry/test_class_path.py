"""`import_object`: one resolver for the dotted class paths configs write."""

from __future__ import annotations

import collections
import os.path

import pytest

from geofm.registry.class_path import import_object


def test_dotted_paths_and_default_module():
    assert import_object("collections.OrderedDict") is collections.OrderedDict
    assert import_object("os.path.join") is os.path.join
    assert import_object("OrderedDict", "collections") is collections.OrderedDict
    # Attributes past the module: a class inside a class.
    assert import_object("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys


def test_errors_name_the_path_and_what_works():
    with pytest.raises(ValueError, match=r"optimizer='OrderDict' is not a class of collections \(did you mean 'OrderedDict'"):
        import_object("OrderDict", "collections", what="optimizer='OrderDict'")
    with pytest.raises(ValueError, match="such as 'collections.OrderedDict'"):
        import_object("OrderDict", "collections")
    with pytest.raises(ValueError, match=r"'nowhere_pkg.Thing' cannot be imported: no module 'nowhere_pkg'"):
        import_object("nowhere_pkg.Thing")
    with pytest.raises(ValueError, match=r"'collections' has no attribute 'OrderDict' \(did you mean 'collections.OrderedDict'"):
        import_object("collections.OrderDict")
    with pytest.raises(ValueError, match="not a dotted path"):
        import_object("OrderedDict")
    with pytest.raises(ValueError, match="dotted path"):
        import_object("")


def test_a_module_failing_on_its_own_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_dep_mod.py").write_text("import a_dependency_that_is_missing\nThing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="importing 'broken_dep_mod' failed.*a_dependency_that_is_missing"):
        import_object("broken_dep_mod.Thing")


def test_suggestions_ignore_case():
    with pytest.raises(ValueError, match=r"did you mean 'OrderedDict'.*such as 'collections.OrderedDict'"):
        import_object("ordereddict", "collections")
