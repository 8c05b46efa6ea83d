import pytest

from compress.config import OptimConfig, TrainConfig, load_config, parse_overrides
from compress.errors import ConfigError


def test_yaml_then_overrides_win(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: some/model\ndata: {data: a.csv, val_fraction: 0.2}\noptim: {lr: 1.0e-4, epochs: 5}\n")
    cfg = load_config(TrainConfig, str(recipe), ["optim.epochs=2", "loss.name=focal", "loss.params={gamma: 1.5}",
                                                 "data.label_columns=a,b"])
    assert cfg.model == "some/model"
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.epochs == 2
    assert cfg.data.val_fraction == pytest.approx(0.2)
    assert cfg.data.label_columns == ("a", "b")
    assert cfg.loss.name == "focal" and cfg.loss.params == {"gamma": 1.5}


@pytest.mark.parametrize("override, field", [
    ("optim.lr=-1", "optim.lr"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("optim.mixed_precision=int4", "optim.mixed_precision"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("optim.epochs=two", "optim.epochs"),
    ("optim.nope=1", "optim.nope"),
    ("max_length=3", "max_length"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(TrainConfig, None, ["model=m", "data.data=d", override])


def test_required_fields_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="model"):
        load_config(TrainConfig, None, ["data.data=d"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, str(tmp_path / "missing.yaml"), [])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_configs_are_frozen():
    cfg = OptimConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_no_stays_a_string_for_string_fields(tmp_path):
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "optim.mixed_precision=no", "resume=no"])
    assert cfg.optim.mixed_precision == "no" and cfg.resume is False
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ndata: {data: d}\noptim: {mixed_precision: no}\n")
    assert load_config(TrainConfig, str(recipe)).optim.mixed_precision == "no"
