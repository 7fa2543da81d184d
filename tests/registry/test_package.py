"""The registry package as a whole: a leaf of geofm, and the import paths users write."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import geofm.registry

REGISTRY_DIR = Path(geofm.registry.__file__).parent


def package_of(path: Path) -> str:
    return "geofm.registry" + "".join(f".{part}" for part in path.relative_to(REGISTRY_DIR).parent.parts)


def imported_modules(path: Path, package: str) -> list[str]:
    """Absolute module names imported by ``path``, a module of ``package``."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            # importlib.import_module("geofm.x") written literally counts too.
            names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


def test_registry_is_a_leaf():
    files = sorted(REGISTRY_DIR.rglob("*.py"))
    assert len(files) >= 5
    outside = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path, package_of(path))
        if (name == "geofm" or name.startswith("geofm.")) and not name.startswith("geofm.registry")
    }
    assert not outside, f"geofm.registry must import nothing else of geofm: {sorted(outside)}"


def test_leaf_check_sees_imports(tmp_path):
    # The check above must be able to fail: it finds each kind of import.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import geofm.models\nfrom geofm.tasks import base\nfrom .. import data\n"
        "import importlib\nimportlib.import_module('geofm.inference')\n"
    )
    found = imported_modules(sample, "geofm.registry")
    assert found == ["geofm.models", "geofm.tasks", "geofm", "importlib", "geofm.inference"]


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("geofm.models", ["EncoderDecoderFactory", "PixelWiseModel", "ScalarOutputModel", "ModelOutput"]),
        (
            "geofm.registry",
            [
                "BACKBONE_REGISTRY", "DECODER_REGISTRY", "NECK_REGISTRY", "MODEL_FACTORY_REGISTRY",
                "Registry", "MultiSourceRegistry", "UnknownNameError", "UnknownScopeError",
                "import_object",
            ],
        ),
        ("geofm.tasks", ["SemanticSegmentationTask", "PixelwiseRegressionTask", "ClassificationTask"]),
    ],
)
def test_terratorch_import_paths_resolve(module, names):
    package = __import__(module, fromlist=names)
    for name in names:
        assert getattr(package, name) is not None, name
    assert set(names) <= set(dir(package))


def test_models_names_are_the_defining_classes():
    from geofm.models import EncoderDecoderFactory, PixelWiseModel, ScalarOutputModel
    from geofm.models.factories.encoder_decoder import EncoderDecoderFactory as Factory
    from geofm.models.pixel_wise_model import PixelWiseModel as PixelWise
    from geofm.models.scalar_output_model import ScalarOutputModel as Scalar

    assert (EncoderDecoderFactory, PixelWiseModel, ScalarOutputModel) == (Factory, PixelWise, Scalar)
    assert geofm.registry.MODEL_FACTORY_REGISTRY.get("EncoderDecoderFactory") is Factory
