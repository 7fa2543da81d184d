"""``geofm check-config``: every unknown key at once, with its line and the closest name."""

from __future__ import annotations

import yaml

from geofm.cli import main as geofm
from tests.test_cli import folders, write_config  # noqa: F401 - the fixture is used by name


def test_three_unknown_keys_at_three_depths(tmp_path, folders, capsys):  # noqa: F811
    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["trainer"]["max_epochz"] = 3
    config["model"]["init_args"]["lrr"] = 0.1
    config["data"]["init_args"]["batch_sise"] = 4
    config["model"]["class_path"] = "terratorch.tasks.SemanticSegmentationTask"
    config["trainer"]["callbacks"] = [{"class_path": "EarlyStopping", "init_args": {"patiense": 3}}]
    path = tmp_path / "bad.yaml"
    text = yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    lines = text.splitlines()

    def line_of(key: str) -> int:
        return next(i for i, line in enumerate(lines, start=1) if line.strip().startswith(f"{key}:"))

    assert geofm(["check-config", str(path)]) == 2
    out = capsys.readouterr()
    errors = out.err.strip().splitlines()
    expected = [
        f"geofm: error: {path}:{line_of('max_epochz')}: trainer.max_epochz: 'trainer' has no option 'max_epochz'. "
        "Did you mean: 'max_epochs'",
        f"geofm: error: {path}:{line_of('lrr')}: model.init_args.lrr: SemanticSegmentationTask has no argument 'lrr'. "
        "Did you mean: 'lr'",
        f"geofm: error: {path}:{line_of('batch_sise')}: data.init_args.batch_sise: GenericNonGeoSegmentationDataModule "
        "has no argument 'batch_sise'. Did you mean: 'batch_size'",
        f"geofm: error: {path}:{line_of('patiense')}: trainer.callbacks[0].init_args.patiense: EarlyStopping has no "
        "argument 'patiense'. Did you mean: 'patience'",
    ]
    assert len(errors) == 4, errors
    for prefix in expected:  # the closest name first (others may follow)
        assert sum(e.startswith(prefix) for e in errors) == 1, (prefix, errors)
    assert "ok" not in out.out


def test_clean_config_is_ok(tmp_path, folders, capsys):  # noqa: F811
    path = write_config(tmp_path, folders)
    assert geofm(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "ok"
    assert not (tmp_path / "run").exists()  # nothing built, nothing written


def test_unknown_top_level_key_and_class(tmp_path, folders, capsys):  # noqa: F811
    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["trainerr"] = {}
    config["data"]["class_path"] = "terratorch.datamodules.ElephantDataModule"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert geofm(["check-config", str(path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert any("trainerr: unknown option. Did you mean: 'trainer'?" in e for e in errors), errors
    assert any(
        "data.class_path: geofm has no ElephantDataModule (looked in geofm.data.datamodules). The closest geofm name is"
        in e for e in errors
    ), errors
