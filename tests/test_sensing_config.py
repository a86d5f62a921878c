"""Sensing configs are checked on the host, and refused with messages that name the culprit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import StackInfo, fieldlink
from tools._config import check_sensing, compile_sensing
from tools._errors import UsageError

BUSES = {"i2c0": {"type": "i2c", "sda": 21, "scl": 22}, "ow0": {"type": "onewire", "pin": 4}}


def _refusal(config: dict[str, Any]) -> str:
    with pytest.raises(UsageError) as caught:
        check_sensing(config, "sensing.json")
    return str(caught.value)


def test_unknown_filter_is_named() -> None:
    message = _refusal(
        {
            "sensors": [
                {"name": "temp", "type": "sim", "signal": "temperature", "filters": [{"offset": 1}, {"smoothen": 3}]}
            ]
        }
    )
    assert message == (
        "sensing.json is not a valid sensing config:\n"
        "  - sensor 'temp': filters[1] (smoothen): unknown filter 'smoothen'"
    )


def test_wrong_parameter_type_is_named() -> None:
    message = _refusal(
        {
            "sensors": [
                {
                    "name": "rh",
                    "type": "sim",
                    "signal": "humidity",
                    "filters": [{"clamp": {"min_value": "zero", "max_value": 100}}],
                }
            ]
        }
    )
    assert "sensor 'rh': filters[0] (clamp): min_value must be a number, got 'zero'" in message


def test_impossible_window_is_named() -> None:
    message = _refusal(
        {
            "sensors": [
                {
                    "name": "p",
                    "type": "sim",
                    "signal": "pressure",
                    "filters": [{"median": {"window_size": 3, "send_every": 2, "send_first_at": 5}}],
                }
            ]
        }
    )
    assert "sensor 'p': filters[0] (median): send_first_at (5) cannot exceed send_every (2)" in message
    message = _refusal(
        {
            "sensors": [
                {"name": "p", "type": "sim", "signal": "pressure", "filters": [{"quantile": {"window_size": 1000}}]}
            ]
        }
    )
    assert "sensor 'p': filters[0] (quantile): window_size must be an integer from 1 to 256, got 1000" in message


def test_every_problem_is_listed_at_once() -> None:
    message = _refusal(
        {
            "buses": BUSES,
            "sensors": [
                {"name": "a", "type": "bme280", "bus": "ow0", "channel": "temperature"},
                {"name": "a", "type": "sim", "signal": "temperature", "filters": [{"throttle": "soon"}]},
                {"name": "pipe", "type": "ds18b20", "bus": "ow0", "interval_ms": 500},
            ],
        }
    )
    assert message.splitlines()[1:] == [
        "  - sensor 'a': bus 'ow0' is not a configured i2c bus",
        "  - sensor 'a': declared twice",
        "  - sensor 'a': filters[0] (throttle): 'soon' is not a duration (use ms, s, min or h)",
        "  - sensor 'pipe': interval_ms 500 is shorter than the chip's 750 ms conversion",
    ]


def test_schema_errors_name_the_field_and_value() -> None:
    message = _refusal({"sensors": [{"name": "t", "type": "bme280", "bus": "i2c0", "channel": "temp"}], "buses": BUSES})
    # The sensor by its name, not by its place in the list; the chip's channels from its driver.
    assert "sensor 't': channel 'temp' is not one of temperature, humidity, pressure" in message
    message = _refusal({"sensors": [{"name": "t", "type": "thermistor"}]})
    assert "sensor 't': Input tag 'thermistor' found using 'type' does not match any of the expected tags" in message
    message = _refusal(
        {"sample_interval_ms": "fast", "sensors": [{"name": "t", "type": "sim", "signal": "temperature"}]}
    )
    assert "sample_interval_ms: Input should be a valid integer (got 'fast')" in message


def test_channels_of_one_chip_share_an_interval() -> None:
    message = _refusal(
        {
            "buses": BUSES,
            "sensors": [
                {"name": "t", "type": "bme280", "bus": "i2c0", "channel": "temperature", "interval_ms": 1000},
                {"name": "h", "type": "bme280", "bus": "i2c0", "channel": "humidity", "interval_ms": 2000},
            ],
        }
    )
    assert "sensor 'h': interval_ms 2000 differs from 1000 of sensor 't', another channel of the same chip" in message


def test_valid_config_compiles_filters_for_the_node() -> None:
    sensing = check_sensing(
        {
            "buses": BUSES,
            "sensors": [
                {
                    "name": "t",
                    "type": "bme280",
                    "bus": "i2c0",
                    "channel": "temperature",
                    "filters": [
                        {"median": {"window_size": 5, "send_every": 5}},
                        {"calibrate_linear": [[0, 1], [10, 21]]},
                        {"timeout": "1min"},
                        {"round": 1},
                    ],
                }
            ],
        }
    )
    compiled = compile_sensing(sensing)
    assert compiled["sensors"][0]["filters"] == [
        ["median", 5, 5, 1],
        ["calibrate_linear", [[2.0, 1.0, None]]],
        ["timeout", 60000, None],
        ["round", 1],
    ]
    assert json.loads(json.dumps(compiled)) == compiled  # the bundle is plain JSON


def test_cli_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "sensors": [
                    {
                        "name": "t",
                        "type": "sim",
                        "signal": "temperature",
                        "filters": [{"offset": -0.5}, {"delta": "5%"}],
                    }
                ]
            }
        )
    )
    result = fieldlink(tmp_path, "config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        't                    sim      ["offset", -0.5] -> ["delta", 0.05, true]',
        f"{good}: 1 sensor(s), valid; the node needs about 57 KB of its 107 KB heap",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"sensors": [{"name": "t", "type": "sim", "signal": "temperature", "filters": [{"round": 1.5}]}]})
    )
    result = fieldlink(tmp_path, "config", "check", str(bad))
    assert result.returncode == 2
    assert "sensor 't': filters[0] (round): decimals must be an integer from 0 to 10, got 1.5" in result.stderr
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = fieldlink(tmp_path, "config", "check", str(broken))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {broken} is not JSON: ")


def test_device_configure_writes_compiled_filters(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    device = f"configured-{uid}"
    stack.add_device(device)
    sensing = tmp_path / "sensing.json"
    sensing.write_text(
        json.dumps(
            {
                "sample_interval_ms": 500,
                "sensors": [{"name": "t", "type": "sim", "signal": "temperature", "filters": [{"skip_initial": 2}]}],
            }
        )
    )
    result = fieldlink(stack.home, "device", "configure", device, str(sensing))
    assert result.returncode == 0, result.stderr
    config = json.loads((stack.home / "devices" / device / "config.json").read_text())
    assert config["device_id"] == device
    assert config["sample_interval_ms"] == 500
    assert config["sensors"] == [
        {"name": "t", "type": "sim", "signal": "temperature", "period_s": 600.0, "filters": [["skip_initial", 2]]}
    ]


def test_filter_checker_survives_100000_deep_or_and_a_40_mb_name() -> None:
    from shared.filter_config import FilterConfigError, compile_chain

    deep: list[Any] = []
    inner = deep
    for _ in range(100_000):
        nested: list[Any] = []
        inner.append({"or": nested})
        inner = nested
    with pytest.raises(FilterConfigError) as caught:
        compile_chain(deep)
    assert caught.value.problems[-1].endswith("'or' nested more than 8 deep")
    with pytest.raises(FilterConfigError) as caught:
        compile_chain([{"n" * 40_000_000: 1}, {"round": 99}])
    assert [len(p) < 200 for p in caught.value.problems] == [True, True]
    assert caught.value.problems[1] == "filters[1] (round): decimals must be an integer from 0 to 10, got 99"
