"""Config handling: dataclasses <-> dicts <-> TOML, --set items, layered building."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlens.adversarial import PRESETS
from transferlens.attacks import NORMS
from transferlens.data.mnist1d import MNIST1D_DOMAINS
from transferlens.experiments.e1 import E1Config
from transferlens.experiments.e2 import E2Config
from transferlens.runs.config import (
    ConfigError,
    build_config,
    config_from_dict,
    config_to_dict,
    dump_toml,
    load_toml,
    merge,
    parse_set,
)
from transferlens.training import TrainConfig

NON_DEFAULT_E2 = E2Config(
    preset="paper",
    eps=0.2,
    source_domains=("noisy", "shuffled"),
    train=TrainConfig(epochs=5, lr=0.01),
    steps=3,
    norm="l2",
)

CONFIGS = [
    pytest.param(E2Config(), id="e2-default"),
    pytest.param(E1Config(), id="e1-default"),
    pytest.param(NON_DEFAULT_E2, id="e2-non-default"),
    pytest.param(E1Config(ablation_level=None, schedule="linear", step=0.25), id="e1-no-ablation"),
]


# small config classes exercising what the real ones do not


@dataclass(frozen=True)
class Inner:
    x: int = 1
    label: str | None = None


@dataclass(frozen=True)
class Outer:
    flag: bool = False
    name: str | None = "base"
    count: int | None = 2
    inner: Inner = field(default_factory=lambda: Inner(x=5, label="preset"))
    pair: tuple[float, float] | None = None
    ratio: float = 0.5
    tags: tuple[str, ...] = ("a",)


@dataclass(frozen=True)
class Required:
    value: int | None


# ---------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("cfg", CONFIGS)
def test_dict_round_trip(cfg):
    data = config_to_dict(cfg)
    assert config_from_dict(type(cfg), data) == cfg


@pytest.mark.parametrize("cfg", CONFIGS)
def test_toml_round_trip(cfg):
    text = dump_toml(cfg)
    assert config_from_dict(type(cfg), tomllib.loads(text)) == cfg


def test_to_dict_is_plain_data():
    data = config_to_dict(NON_DEFAULT_E2)
    assert data["source_domains"] == ["noisy", "shuffled"]
    assert data["architectures"] == ["mlp", "cnn1d"]
    assert data["train"] == {
        "epochs": 5, "batch_size": 128, "lr": 0.01, "weight_decay": 1e-4, "val_fraction": 0.1,
        "patience": 10, "seed": 0, "optimizer": "adam", "momentum": 0.9, "schedule": "constant",
    }
    assert data["eps"] == 0.2 and data["preset"] == "paper"
    assert config_to_dict(E2Config())["eps"] is None
    assert list(data) == [f for f in E2Config.__dataclass_fields__]
    with pytest.raises(TypeError):
        config_to_dict(E2Config)


def test_dump_toml_layout():
    text = dump_toml(NON_DEFAULT_E2, header="E2 config\nsecond line")
    lines = text.splitlines()
    assert lines[:2] == ["# E2 config", "# second line"]
    assert "[train]" in lines
    assert "epochs = 5" in lines[lines.index("[train]"):]
    # top-level values come before the [train] table, so they stay top-level keys
    assert lines.index('preset = "paper"') < lines.index("[train]")
    loaded = tomllib.loads(text)
    assert loaded["train"]["epochs"] == 5 and loaded["source_domains"] == ["noisy", "shuffled"]


def test_dump_toml_unset_fields():
    text = dump_toml(E2Config())  # norm, eps and steps are None (their default)
    assert "# eps = (unset: default)" in text.splitlines()
    loaded = tomllib.loads(text)
    assert "eps" not in loaded and "norm" not in loaded and "steps" not in loaded
    assert config_from_dict(E2Config, loaded).eps is None


def test_dump_toml_none_against_non_none_default():
    # int | None with default 1: written as "none", read back as None
    text = dump_toml(E1Config(ablation_level=None))
    assert tomllib.loads(text)["ablation_level"] == "none"
    assert config_from_dict(E1Config, tomllib.loads(text)).ablation_level is None
    # str | None with a non-None default: "none" would read back as a string, so it cannot be written
    with pytest.raises(ConfigError, match=r"name is None.*default is 'base'"):
        dump_toml(Outer(name=None))
    with pytest.raises(ConfigError, match=r"inner\.label is None.*default is 'preset'"):
        dump_toml(Outer(inner=Inner(x=5, label=None)))
    # a None-defaulted field inside a nested table is a comment; an optional tuple round trips
    cfg = Outer(count=None, pair=(0.0, 1.5), inner=Inner(x=3, label="a"))
    assert config_from_dict(Outer, tomllib.loads(dump_toml(cfg))) == cfg
    assert config_from_dict(Required, tomllib.loads(dump_toml(Required(None)))) == Required(None)
    with pytest.raises(TypeError):
        dump_toml({"a": 1})


def test_none_string_only_where_the_type_takes_no_string():
    assert config_from_dict(E1Config, {"ablation_level": "None"}).ablation_level is None
    assert config_from_dict(E2Config, {"steps": "null"}).steps is None
    assert config_from_dict(Outer, {"name": "none"}).name == "none"  # str | None keeps the string
    with pytest.raises(ConfigError, match="ablation_level must be an integer"):
        config_from_dict(E1Config, {"ablation_level": "nothing"})


# ---------------------------------------------------------------------------------------------------------
# strict reading


def test_unknown_key_top_level():
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, {"sead": 1})
    msg = str(info.value)
    assert "unknown key 'sead'" in msg and "E2Config" in msg
    assert "target_domain" in msg and "probe_C" in msg  # the allowed keys
    assert "did you mean 'seed'?" in msg
    assert info.value.path == "sead"


def test_unknown_key_nested():
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, {"train": {"lrr": 0.1}})
    msg = str(info.value)
    assert "unknown key 'train.lrr'" in msg
    assert "allowed keys under 'train': epochs, batch_size, lr, weight_decay" in msg
    assert "did you mean 'lr'?" in msg


def test_unknown_key_without_close_match():
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, {"zzzzzz": 1})
    assert "unknown key 'zzzzzz'" in str(info.value) and "did you mean" not in str(info.value)


@pytest.mark.parametrize(
    "data, path, expected",
    [
        ({"train": {"lr": "abc"}}, "train.lr", "train.lr must be a number (float), got 'abc' (str)"),
        ({"seed": True}, "seed", "seed must be an integer (int), got True (bool)"),
        ({"n_eval": 2.5}, "n_eval", "n_eval must be an integer (int), got 2.5 (float)"),
        ({"train": {"epochs": 3.0}}, "train.epochs", "train.epochs must be an integer (int), got 3.0 (float)"),
        ({"source_domains": [1, 2]}, "source_domains[0]", "source_domains[0] must be a string (str), got 1 (int)"),
        ({"source_domains": "noisy"}, "source_domains", "source_domains must be a list (tuple[str, ...])"),
        ({"preset": 3}, "preset", "preset must be a string (str), got 3 (int)"),
        ({"eps": "big"}, "eps", "eps must be a number (float) or None, got 'big' (str)"),
        ({"train": 5}, "train", "train must be a table of TrainConfig options, got 5 (int)"),
        ({"probe_C": False}, "probe_C", "probe_C must be a number (float), got False (bool)"),
    ],
)
def test_wrong_types(data, path, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, data)
    assert expected in str(info.value)
    assert info.value.path == path


def test_bool_only_true_or_false():
    assert config_from_dict(Outer, {"flag": True}).flag is True
    for bad in ("true", 1, 0):
        with pytest.raises(ConfigError, match=r"flag must be true or false \(bool\)"):
            config_from_dict(Outer, {"flag": bad})


def test_values_converted_to_field_types():
    cfg = config_from_dict(E2Config, {"eps": 1, "train": {"lr": 1}, "source_domains": ["noisy", "sheared"]})
    assert type(cfg.eps) is float and type(cfg.train.lr) is float
    assert cfg.source_domains == ("noisy", "sheared")
    assert config_from_dict(Outer, {"pair": [0, 1]}).pair == (0.0, 1.0)
    assert type(config_from_dict(Outer, {"ratio": 2}).ratio) is float  # Outer has no __post_init__
    assert config_from_dict(Outer, {"tags": ["x", "y"]}).tags == ("x", "y")
    assert config_from_dict(Outer, {"tags": []}) == Outer(tags=())
    with pytest.raises(ConfigError, match="exactly 2"):
        config_from_dict(Outer, {"pair": [0, 1, 2]})
    with pytest.raises(ConfigError, match="not a table|must be a table"):
        config_from_dict(E2Config, ["seed", 1])


def test_missing_keys_take_defaults():
    assert config_from_dict(E2Config, {}) == E2Config()
    cfg = config_from_dict(E2Config, {"train": {"epochs": 7}})
    assert cfg.train == TrainConfig(epochs=7)
    # a nested table fills its missing keys from the parent field's default instance
    assert config_from_dict(Outer, {"inner": {"x": 9}}).inner == Inner(x=9, label="preset")
    with pytest.raises(ConfigError, match="missing required key 'value'"):
        config_from_dict(Required, {})


def test_post_init_errors_become_config_errors():
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, {"eps": -0.5})
    assert str(info.value) == "in the E2Config config: eps must be a finite number > 0, got -0.5"
    with pytest.raises(ConfigError) as info:
        config_from_dict(E2Config, {"train": {"lr": -1.0}})
    assert str(info.value) == "in 'train': lr must be a finite number > 0, got -1.0"
    with pytest.raises(ConfigError, match="in the E2Config config: unknown MNIST-1D domain 'moon'"):
        config_from_dict(E2Config, {"source_domains": ["moon"]})
    with pytest.raises(ConfigError, match=r"^in 'cfg\.train': "):
        config_from_dict(E2Config, {"train": {"epochs": 0}}, path="cfg")


# ---------------------------------------------------------------------------------------------------------
# --set, merge, files, layering


def test_parse_set_values():
    got = parse_set([
        "train.lr=0.01",
        "source_domains=['noisy','shuffled']",
        "preset=paper",
        "eps=none",
        "steps=NULL",
        "flag=true",
        "other=False",
        "xs=[1, 2]",
        "quoted='x y'",
        "seed = 3",
        "a.b.c=text with spaces",
        "day=2024-01-01",
        "empty=",
    ])
    assert got == {
        "train": {"lr": 0.01},
        "source_domains": ["noisy", "shuffled"],
        "preset": "paper",
        "eps": None,
        "steps": None,
        "flag": True,
        "other": "False",  # not TOML (TOML booleans are lower case): a plain string
        "xs": [1, 2],
        "quoted": "x y",
        "seed": 3,
        "a": {"b": {"c": "text with spaces"}},
        "day": "2024-01-01",
        "empty": "",
    }
    assert parse_set(["train.lr=1", "train.epochs=2", "train.lr=3"]) == {"train": {"lr": 3, "epochs": 2}}
    assert parse_set(["x=1\ny = 2"]) == {"x": "1\ny = 2"}
    assert parse_set([]) == {}


@pytest.mark.parametrize("item", ["lr", "=1", " =1", "train..lr=1", ".lr=1", "train.=1"])
def test_parse_set_malformed(item):
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set([item])


def test_parse_set_refuses_a_single_string():
    with pytest.raises(TypeError):
        parse_set("train.lr=1")


def test_merge():
    base = {"a": 1, "train": {"lr": 0.1, "epochs": 3}, "keep": {"x": {"y": 1}}}
    override = {"a": 2, "train": {"lr": 0.2}, "new": [1]}
    out = merge(base, override)
    assert out == {"a": 2, "train": {"lr": 0.2, "epochs": 3}, "keep": {"x": {"y": 1}}, "new": [1]}
    assert base == {"a": 1, "train": {"lr": 0.1, "epochs": 3}, "keep": {"x": {"y": 1}}}
    out["keep"]["x"]["y"] = 5
    assert base["keep"]["x"]["y"] == 1
    assert merge({"train": 5}, {"train": {"lr": 1}}) == {"train": {"lr": 1}}
    assert merge({"train": {"lr": 1}}, {"train": None}) == {"train": None}


def test_build_config_precedence(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('preset = "paper"\neps = 0.3\n[train]\nepochs = 4\nlr = 0.02\n')
    defaults = {"preset": "theory", "eps": 0.05, "n_boot": 10, "train": {"epochs": 2, "patience": 3}}
    cfg = build_config(E2Config, defaults=defaults, file=file, sets=["eps=0.4", "train.lr=0.5"])
    assert cfg == E2Config(
        preset="paper", eps=0.4, n_boot=10, train=TrainConfig(epochs=4, patience=3, lr=0.5)
    )
    assert build_config(E2Config) == E2Config()
    assert build_config(E2Config, defaults=defaults).eps == 0.05
    assert build_config(E2Config, defaults=defaults, file=str(file)).eps == 0.3
    assert build_config(E2Config, defaults={"eps": 0.1}, sets=["eps=none"]).eps is None
    with pytest.raises(ConfigError, match="train.lrr"):
        build_config(E2Config, sets=["train.lrr=1"])


def test_load_toml_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('seed = 1\npreset = "paper"\neps = = 0.1\n')
    with pytest.raises(ConfigError) as info:
        load_toml(bad)
    assert str(bad) in str(info.value) and "line 3" in str(info.value)
    with pytest.raises(ConfigError, match="line 3"):
        build_config(E2Config, file=bad)
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="missing.toml.*not found"):
        load_toml(missing)
    good = tmp_path / "good.toml"
    good.write_text(dump_toml(NON_DEFAULT_E2))
    assert config_from_dict(E2Config, load_toml(good)) == NON_DEFAULT_E2


# ---------------------------------------------------------------------------------------------------------
# property: any valid E2Config round-trips through TOML

_positive = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
_domains = st.sampled_from(sorted(MNIST1D_DOMAINS))
_archs = st.sampled_from(["mlp", "cnn1d"])


@st.composite
def e2_configs(draw):
    architectures = tuple(draw(st.lists(_archs, min_size=1, max_size=2, unique=True)))
    min_domains = -(-3 // len(architectures))  # at least 3 sources
    train = TrainConfig(
        epochs=draw(st.integers(1, 10**6)),
        batch_size=draw(st.integers(1, 4096)),
        lr=draw(_positive),
        weight_decay=draw(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)),
        val_fraction=draw(st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)),
        patience=draw(st.integers(1, 1000)),
        seed=draw(st.integers(0, 2**63 - 1)),
    )
    return E2Config(
        seed=draw(st.integers(0, 2**32 - 65)),
        target_domain=draw(_domains),
        target_arch=draw(_archs),
        source_domains=tuple(draw(st.lists(_domains, min_size=min_domains, max_size=6, unique=True))),
        architectures=architectures,
        num_samples=draw(st.integers(100, 10**6)),
        n_eval=draw(st.integers(10, 10**6)),
        preset=draw(st.sampled_from(sorted(PRESETS))),
        norm=draw(st.none() | st.sampled_from(NORMS)),
        eps=draw(st.none() | _positive),
        steps=draw(st.none() | st.integers(1, 1000)),
        train=train,
        probe_C=draw(_positive),
        n_boot=draw(st.integers(1, 10**5)),
        device=draw(st.sampled_from(["auto", "cpu"])),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(e2_configs())
def test_random_e2_configs_round_trip(cfg):
    text = dump_toml(cfg, header="generated")
    back = config_from_dict(E2Config, tomllib.loads(text))
    assert back == cfg
    assert config_from_dict(E2Config, config_to_dict(cfg)) == cfg
