"""The device config has one home (tools/_config.py): the CLI, the bundle, the docs and the node's own
defaults derive from it; the checker names culprits, survives any input and keeps to the node's heap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import StackInfo, fieldlink
from tools._config import DeviceConfig, Sensing, check_sensing, markdown_table, settings
from tools._errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
SIM = {"name": "t", "type": "sim", "signal": "temperature"}


def _model_default(path: tuple[str, ...]) -> object:
    model: type = DeviceConfig
    for part in path[:-1]:
        annotation = model.model_fields[part].annotation
        model = next(t for t in (annotation, *getattr(annotation, "__args__", ())) if hasattr(t, "model_fields"))
    return model.model_fields[path[-1]].get_default(call_default_factory=True)


def _leaves(tree: dict[str, object], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    found: dict[tuple[str, ...], object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(_leaves(value, (*prefix, key)))
        else:
            found[(*prefix, key)] = value
    return found


def test_the_nodes_own_defaults_are_the_models() -> None:
    """What the node fills into a hand-written config that leaves everything out is the model's
    default, for every setting it reads (firmware/config.py, under CPython here)."""
    from firmware.config import load_config

    minimal = {"device_id": "n", "broker": {"host": "h", "port": 1}, "tls": {"ca": "a", "cert": "b", "key": "c"}}
    filled = _leaves(load_config(json.dumps(minimal)))
    host_only = {("heap_bytes",)}  # the checker's estimate; not in a bundle
    read_by_node = {path for path, _ in settings().values()} - host_only
    read_by_node |= {("drain_timeout_ms",), ("broker", "keepalive_s"), ("broker", "timeout_ms")}
    for path in read_by_node:
        assert filled[path] == _model_default(path), path


def test_the_docs_table_is_the_models() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in docs


def test_device_add_options_come_from_the_model(tmp_path: Path) -> None:
    result = fieldlink(tmp_path, "device", "add", "--help")
    for name, (_, field) in settings().items():
        option = "--" + name.replace("_", "-")
        assert option in result.stdout
        assert f"(default {field.default})" in " ".join(result.stdout.split())


def test_options_override_a_sensing_file(stack: StackInfo, uid: str, workdir: Path) -> None:
    device = f"override-{uid}"
    sensing = workdir / "sensing.json"
    sensing.write_text(json.dumps({"batch": {"max_readings": 10}, "sensors": [SIM]}))
    result = fieldlink(
        stack.home, "device", "add", device, "--sensing", str(sensing), "--batch-max-readings", "7",
        "--spool-window", "9",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((stack.home / "devices" / device / "config.json").read_text())
    assert config["batch"] == {"max_readings": 7, "max_age_ms": 5000}
    assert config["spool"]["window"] == 9
    # Every key the node reads is written out, so a bundle never depends on the node's defaults.
    assert set(config) >= set(DeviceConfig.model_fields) - {"wifi", "heap_bytes"}


def test_options_are_bounded_by_the_model(tmp_path: Path) -> None:
    result = fieldlink(tmp_path, "device", "add", "x", "--batch-max-readings", "257")
    assert result.returncode == 2
    assert "257 is not in the range 1<=x<=256" in result.stderr


def test_problems_name_the_sensor_not_its_index() -> None:
    with pytest.raises(UsageError) as refused:
        check_sensing(
            {
                "buses": {"i2c0": {"type": "i2c", "sda": 21, "scl": 22}},
                "sensors": [
                    SIM,
                    {"name": "room", "type": "bme280", "bus": "i2c0", "channel": "humidty"},
                    {"name": "pipe", "type": "ds18b20", "bus": "ow9", "resolution": 13},
                ],
            }
        )
    message = str(refused.value)
    assert "sensors.1" not in message and "sensors.2" not in message
    assert "sensor 'room': channel 'humidty' is not one of temperature, humidity, pressure" in message
    assert "sensor 'pipe'.resolution: Input should be 9, 10, 11 or 12 (got 13)" in message


def test_chip_facts_come_from_the_drivers() -> None:
    from firmware.drivers.bme280 import BME280
    from firmware.drivers.ds18b20 import conversion_ms

    config = check_sensing(
        {
            "buses": {"i2c0": {"type": "i2c", "sda": 21, "scl": 22}},
            "sensors": [{"name": "r", "type": "bme280", "bus": "i2c0", "channel": "pressure"}],
        }
    )
    assert config.sensors[0].address == BME280.addresses[0]  # type: ignore[union-attr]
    with pytest.raises(UsageError, match=f"shorter than the chip's {conversion_ms(12)} ms conversion"):
        check_sensing(
            {
                "buses": {"ow": {"type": "onewire", "pin": 4}},
                "sensors": [{"name": "p", "type": "ds18b20", "bus": "ow", "interval_ms": 500}],
            }
        )


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"sensors": [{"name": "' + "n" * 40_000_000 + '", "type": "sim", "signal": "temperature"}]}',
        '{"sensors": "' + "\x1b[2J" * 10 + '"}',
    ],
    ids=["100k-deep", "40MB-name", "control-bytes"],
)
def test_config_check_survives_any_input(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sensing.json"
    path.write_text(text)
    result = fieldlink(tmp_path, "config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr) < 2_000  # culprits are shown cut short, never whole
    assert "\x1b" not in result.stderr


def test_a_config_the_heap_cannot_hold_is_refused_naming_what_to_shrink() -> None:
    big = {"median": {"window_size": 256, "send_every": 1}}
    with pytest.raises(UsageError) as refused:
        check_sensing({"heap_bytes": 65_536, "spool": {"window": 64}, "sensors": [{**SIM, "filters": [big]}]})
    message = str(refused.value)
    assert (
        "of its heap_bytes 64 KB (shrink the largest: sensor 't' (512 window slots) 13.0 KB, batch.max_readings"
        in message
    )
    # What make bench-firmware runs in 64 KB passes.
    from tools.bench.firmware import SENSING

    assert isinstance(check_sensing({**SENSING, "heap_bytes": 65_536}), Sensing)


def test_a_sensors_accuracy_decimals_reach_its_compiled_filters() -> None:
    from tools._config import compile_sensing

    sensor = {**SIM, "filters": [{"filter_out": 85}]}
    default, precise = (
        compile_sensing(check_sensing({"sensors": [dict(sensor, **extra)]}))["sensors"][0]
        for extra in ({}, {"accuracy_decimals": 1})
    )
    assert default["filters"] == [["filter_out", [85.0], False, 0]]
    assert precise["filters"] == [["filter_out", [85.0], False, 1]]
    assert "accuracy_decimals" not in precise  # the node reads only the compiled chain


def test_the_heap_estimate_refuses_what_fails_in_the_bench() -> None:
    """make bench-firmware: the node runs in 64 KB and fails in 56 KB (docs/performance.md)."""
    from tools.bench.firmware import SENSING

    with pytest.raises(UsageError, match="more than 90% of its heap_bytes 56 KB"):
        check_sensing({**SENSING, "heap_bytes": 56 * 1024})


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"sensors": [{"name": "a", "type": "adc", "pin": 34, "scale": float("nan")}]}, "sensor 'a'.scale"),
        ({"sensors": [{**SIM, "period_s": float("inf")}]}, "sensor 't'.period_s"),
        ({"sample_interval_ms": 10**20, "sensors": [SIM]}, "sample_interval_ms: Input should be less than or equal"),
        ({"sensors": [{**SIM, "name": f"s{i}"} for i in range(65)]}, "sensors: List should have at most 64 items"),
    ],
    ids=["nan", "inf", "huge-interval", "65-sensors"],
)
def test_what_a_node_cannot_run_or_the_service_cannot_store_is_refused(config: dict[str, object], problem: str) -> None:
    with pytest.raises(UsageError) as refused:
        check_sensing(config)
    assert problem in str(refused.value)


def test_the_problems_listed_are_bounded_and_keys_cut() -> None:
    with pytest.raises(UsageError) as refused:
        check_sensing({"sensors": [1] * 60, "k" * 5_000: 1})
    message = str(refused.value)
    assert message.endswith("more problems")
    assert len(message.splitlines()) == 52  # the heading, 50 of 61 problems, the count of the other 11
    assert message.endswith("... and 11 more problems")
    assert "k" * 41 not in message


def test_a_heap_problem_is_listed_beside_the_others() -> None:
    with pytest.raises(UsageError) as refused:
        check_sensing({"heap_bytes": 40_000, "sensors": [{**SIM, "filters": [{"round": 1.5}]}]})
    message = str(refused.value)
    assert "sensor 't'" in message and "round" in message
    assert "the node would need about" in message
