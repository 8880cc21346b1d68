import shlex
from pathlib import Path

import pytest

import fastseg.train.fit
from fastseg.cli import app
from fastseg.cli.train import SEGNET_RECIPE, SKIP_RECIPE
from tests.conftest import runner

RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.fixture
def resolved(monkeypatch):
    """The FitConfig each `fastseg fit` invocation would train (the fit itself is not run)."""
    configs = []
    monkeypatch.setattr(fastseg.train.fit, "fit", lambda cfg: configs.append(cfg) or (Path("r"), []))
    return configs


@pytest.mark.parametrize("recipe,line", [("segnet-voc.toml", SEGNET_RECIPE), ("skip-voc.toml", SKIP_RECIPE)])
def test_each_recipe_is_the_documented_command_line(resolved, recipe, line):
    for args in (["fit", "--config", str(RECIPES / recipe)], shlex.split(line)[1:]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    from_file, from_line = resolved
    assert from_file == from_line


def test_the_command_line_overrides_the_recipe(resolved):
    result = runner.invoke(app, ["fit", "--config", str(RECIPES / "segnet-voc.toml"), "--epochs", "3", "--bs", "8",
                                 "--voc", "elsewhere"])
    assert result.exit_code == 0, result.output
    cfg = resolved[0]
    assert (cfg.epochs, cfg.data.bs, cfg.data.voc) == (3, 8, "elsewhere")
    assert (cfg.arch, cfg.opt, cfg.lr, cfg.data.crop, cfg.data.sbd) == ("segnet", "sgd", 5e-3, 320, "data")


@pytest.mark.parametrize("text,message", [
    ("epochs = 3\nlearning_rate = 1", "Recipe {path} sets 'learning_rate', which is not an option of fit; see "
                                      "`fastseg fit --help`."),
    ("epochs = [", "Recipe {path} is not valid TOML"),
])
def test_a_bad_recipe_is_one_sentence(resolved, tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    result = runner.invoke(app, ["fit", "--config", str(path), "--voc", "data"])
    assert result.exit_code == 2 and not resolved
    assert " ".join(result.output.split()).startswith("Error: " + message.format(path=path))


def test_every_value_of_a_recipe_reaches_the_config_with_the_options_own_type(resolved, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('voc = "d"\narch = "skip"\ncrop = 96\nbs = "8"\nopt = "adam"\nlr = 1e-3\nhead-prior = true\n')
    assert runner.invoke(app, ["fit", "--config", str(path)]).exit_code == 0
    cfg = resolved[0]
    expected = ("skip", 96, 8, "adam", 1e-3, True)
    assert (cfg.arch, cfg.data.crop, cfg.data.bs, cfg.opt, cfg.lr, cfg.head_prior) == expected


def test_a_recipe_value_the_command_line_refuses_is_refused(resolved, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('voc = "d"\narch = "colour-control"\n')
    result = runner.invoke(app, ["fit", "--config", str(path)])
    assert result.exit_code == 2 and not resolved
    assert " ".join(result.output.split()) == (f"Error: Recipe {path} sets arch = 'colour-control', which fit "
                                               "refuses; choose one of: segnet, skip.")
    assert runner.invoke(app, ["fit", "--config", str(path), "--resume", "runs/x"]).exit_code == 2


def test_a_recipe_loads_from_python_with_overrides():
    from fastseg.config import FitConfig
    cfg = FitConfig.from_recipe(RECIPES / "segnet-voc.toml", epochs=3, voc="elsewhere", train="voc12-train")
    assert (cfg.epochs, cfg.data.voc, cfg.data.train_split) == (3, "elsewhere", "voc12-train")
    assert (cfg.arch, cfg.opt, cfg.lr, cfg.data.crop, cfg.data.sbd) == ("segnet", "sgd", 5e-3, 320, "data")


def test_a_value_a_recipe_sets_is_blamed_on_the_recipe_from_python_too(tmp_path):
    from fastseg.config import FitConfig
    from fastseg.errors import FastsegError
    path = tmp_path / "r.toml"
    path.write_text('voc = "d"\nepochs = 0\n')
    with pytest.raises(FastsegError, match=r"^Recipe .*r\.toml sets epochs = 0, which fit refuses: --epochs 0 must be "
                                           r"at least 1\.$"):
        FitConfig.from_recipe(path)
    assert FitConfig.from_recipe(path, epochs=2).epochs == 2  # an override replaces the refused value
