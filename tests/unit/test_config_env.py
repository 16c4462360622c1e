"""`${NAME}` expansion in configuration files (hub/procconfig.expand_env, read_yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.config import load_hub_config
from hubspoke.config import ConfigError
from hubspoke.procconfig import expand_env


def test_expands_strings_everywhere() -> None:
    data = {"node": "${NODE}", "grpc": {"advertise": "${IP}:7500"}, "list": ["a-${NODE}", 3]}
    env = {"NODE": "hub-0", "IP": "10.0.0.7"}
    assert expand_env(data, env=env) == {
        "node": "hub-0",
        "grpc": {"advertise": "10.0.0.7:7500"},
        "list": ["a-hub-0", 3],
    }


def test_default_and_escape() -> None:
    assert expand_env("${MISSING:-x}-${SET:-y}", env={"SET": "s"}) == "x-s"
    assert expand_env("${EMPTY:-d}", env={"EMPTY": ""}) == ""
    assert expand_env("cost $$5, ${A}", env={"A": "b"}) == "cost $5, b"
    assert expand_env("plain $HOME text", env={}) == "plain $HOME text"


def test_unset_variable_names_the_field() -> None:
    with pytest.raises(ConfigError) as exc:
        expand_env({"grpc": {"tokens": ["ok-token", "${TOKEN}"]}}, env={})
    assert exc.value.path == "grpc.tokens[1]"
    assert "TOKEN is not set" in exc.value.reason


def test_hub_config_file_takes_node_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "hub.yaml"
    f.write_text(
        'node: "${POD_NAME}"\ngrpc: {listen: "0.0.0.0:7500", advertise: "${POD_IP}:7500"}\n'
    )
    monkeypatch.setenv("POD_NAME", "hub-7f9c")
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    cfg = load_hub_config(f)
    assert cfg.node == "hub-7f9c"
    assert cfg.role.grpc.advertise == "10.1.2.3:7500"
    monkeypatch.delenv("POD_IP")
    with pytest.raises(ConfigError) as exc:
        load_hub_config(f)
    assert exc.value.path == "grpc.advertise"
