"""The configuration layer: the shipped files, every kind of broken file, env overrides."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import (
    DEVICE_KINDS,
    WEEKDAYS,
    CallerDevice,
    ConfigError,
    ConfigProblem,
    HallAgentConfig,
    PrinterDevice,
    TicketButtonsDevice,
    UsbTransport,
    check_config_file,
    format_problems,
    load_config,
    main,
    schema_text,
    validate_config,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "example.yaml"
DEMO = ROOT / "config" / "demo.yaml"
SCHEMA = ROOT / "config" / "schema.json"

Data = dict[str, Any]


def demo_data() -> Data:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


DEMO_DATA = demo_data()  # validate_config works on a copy, so tests may share it


def write(tmp_path: Path, data: Data) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def check(tmp_path: Path, data: Data, environ: dict[str, str] | None = None) -> tuple[int, str]:
    return check_config_file(write(tmp_path, data), environ or {})


def problems_of(tmp_path: Path, data: Data, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, data), environ or {})
    return [p.path for p in caught.value.problems]


# ---------------------------------------------------------------------------------------
# The shipped files


def test_example_loads_and_uses_every_device_kind() -> None:
    config = load_config(EXAMPLE, {})
    assert config.hall.id == "bj-hd-zgc-001"
    assert config.hall.timezone == "Asia/Shanghai"
    assert len(config.windows) == 3
    assert len(config.services) >= 4
    assert {d.kind for d in config.devices} == set(DEVICE_KINDS)
    assert config.mqtt.uses_tls
    assert config.mqtt.port == 8883
    assert config.storage.path == Path("/var/lib/hall-agent")
    # Unquoted-looking hours with a lunch break are times, not YAML 1.1 base-60 numbers.
    social = config.service("social")
    assert [(p.start, p.end) for p in social.hours[:2]] == [
        (dt.time(9, 0), dt.time(12, 0)),
        (dt.time(13, 30), dt.time(17, 30)),
    ]
    assert not social.open_at(dt.datetime(2026, 3, 2, 12, 30))
    assert social.open_at(dt.datetime(2026, 3, 2, 13, 30))
    printer = config.device("kiosk-printer")
    assert isinstance(printer, PrinterDevice)
    assert isinstance(printer.transport, UsbTransport)
    assert (printer.transport.vendor_id, printer.transport.product_id) == (0x0416, 0x5011)
    reader = config.device("idreader-w1")
    assert getattr(reader.transport, "baudrate", None) == 115200


def test_demo_loads_offline_and_open_all_week() -> None:
    config = load_config(DEMO, {})
    assert config.hall.id == "demo-hall"
    assert not config.mqtt.enabled
    assert config.storage.path == Path("demo-state")
    assert (config.web.host, config.web.port) == ("127.0.0.1", 8737)
    assert len(config.windows) == 3
    assert len(config.services) == 4
    for day in range(7):
        for service in config.services:
            assert service.open_at(dt.datetime(2026, 3, 2 + day, 3, 17))
    assert [d.id for d in config.window_devices("w1")] == [
        "led-w1",
        "caller-w1",
        "rater-w1",
        "idreader-w1",
        "screen-w1",
    ]


def test_check_config_file_says_ok() -> None:
    assert check_config_file(EXAMPLE, {}) == (0, "ok")
    assert check_config_file(DEMO, {}) == (0, "ok")


def test_committed_schema_is_current() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == schema_text(), (
        "config/schema.json is out of date: run scripts/gen-schema and commit the result"
    )


def test_write_schema_writes_the_committed_form(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    assert main(["--write-schema", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert text == schema_text()
    assert text.endswith("}\n")


# ---------------------------------------------------------------------------------------
# Broken configs: exit code 2, and the output names the field path


def _set(path: str, value: Any) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        node: Any = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return change


def _append(path: str, value: Any) -> Callable[[Data], None]:
    def change(data: Data) -> None:
        node: Any = data
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.append(value)

    return change


def _delete_hall_id(data: Data) -> None:
    del data["hall"]["id"]


BROKEN: list[tuple[str, Callable[[Data], None], dict[str, str], list[str]]] = [
    ("missing hall id", _delete_hall_id, {}, ["hall.id: required field is missing"]),
    (
        "bad prefix",
        _set("services.1.prefix", "b1"),
        {},
        ["services[1](civil-affairs).prefix", "capital letters"],
    ),
    (
        "duplicate prefix",
        _set("services.1.prefix", "A"),
        {},
        ["services[1](civil-affairs).prefix", "already used by services[0](social)"],
    ),
    (
        "window serving unknown service",
        _append("windows.0.services", "passport"),
        {},
        ["windows[0](w1).services[4]", "unknown service 'passport'", "social, civil-affairs"],
    ),
    (
        "overlapping hours",
        _append("services.0.hours", {"start": "10:00", "end": "11:00", "days": ["sun"]}),
        {},
        ["services[0](social).hours[1]", "overlaps hours[0]", "on sun"],
    ),
    (
        "device used by two windows",
        _append("windows.1.devices", "led-w1"),
        {},
        ["windows[1](w2).devices[3]", "already used by windows[0](w1)"],
    ),
    (
        "unknown device in window",
        _append("windows.1.devices", "led-w9"),
        {},
        ["windows[1](w2).devices[3]", "unknown device 'led-w9'"],
    ),
    (
        "wrong transport for kind",
        _set("devices.4.transport", {"type": "usb", "vendor_id": 1, "product_id": 2}),
        {},
        ["devices[4](caller-w1).transport.type", "serial or network or evdev or web"],
    ),
    (
        "unknown key typo",
        _set("services.0.daly_cap", 3),
        {},
        ["services[0](social).daly_cap: unknown key", "did you mean 'daily_cap'"],
    ),
    (
        "bad time zone",
        _set("hall.timezone", "Asia/Beijing"),
        {},
        ["hall.timezone", "Asia/Shanghai"],
    ),
    (
        "env override to a bad value",
        lambda data: None,
        {"HALL_MQTT__KEEPALIVE": "5"},
        ["mqtt.keepalive", "HALL_MQTT__KEEPALIVE", "from 30 to 60"],
    ),
    (
        "env override to a path that does not exist",
        lambda data: None,
        {"HALL_MQTT__TLS__CAFILE": "/etc/ca.pem"},
        ["HALL_MQTT__TLS__CAFILE", "mqtt.tls has no field 'cafile'", "CA_FILE"],
    ),
    (
        "mqtts without ca_file",
        _set("mqtt.url", "mqtts://broker.example:8883"),
        {},
        ["mqtt.tls.ca_file"],
    ),
    (
        "duplicate service id",
        _set("services.1.id", "social"),
        {},
        ["services[1](social).id", "already used by services[0](social)"],
    ),
    (
        "duplicate window number",
        _set("windows.2.number", 1),
        {},
        ["windows[2](w3).number", "already used by windows[0](w1)"],
    ),
    (
        "duplicate device id",
        _set("devices.2.id", "led-w1"),
        {},
        ["devices[2](led-w1).id", "already used by devices[1](led-w1)"],
    ),
    (
        "service no window serves",
        _append("services", {"id": "passport", "name": "出入境", "prefix": "P"}),
        {},
        ["services[4](passport): no window serves this service"],
    ),
    (
        "keymap naming an unknown service",
        _append(
            "devices",
            {
                "id": "buttons",
                "kind": "ticket_buttons",
                "transport": {"type": "evdev", "path": "/dev/input/event3"},
                "keymap": {"KEY_F1": "social", "KEY_F2": "pension"},
            },
        ),
        {},
        ["devices[15](buttons).keymap.KEY_F2", "unknown service 'pension'"],
    ),
    (
        "two keypads with one bus address",
        _set("devices.8.address", 1),
        {},
        ["devices[8](rater-w2).address", "already used by devices[4](caller-w1)"],
    ),
    (
        "keypad on a bus without address",
        _set("devices.4.address", None),
        {},
        ["devices[4](caller-w1).address", "1-254"],
    ),
    (
        "printer and LED strip on one port",
        _set("devices.0.transport", {"type": "network", "host": "127.0.0.1", "port": 9201}),
        {},
        ["devices[1](led-w1).transport", "already used by devices[0](kiosk-printer)"],
    ),
    (
        "hall-wide device at a window",
        _append("windows.2.devices", "speaker"),
        {},
        ["windows[2](w3).devices[3]", "hall-wide announcer"],
    ),
    (
        "window screen at no window",
        _set("windows.0.devices", ["led-w1", "caller-w1", "rater-w1", "idreader-w1"]),
        {},
        ["devices[14](screen-w1).role", "set role: hall"],
    ),
    (
        "period ending before it starts",
        _set("services.2.hours.0", {"start": "17:30", "end": "09:00"}),
        {},
        ["services[2](household).hours[0].end", "before it starts"],
    ),
    (
        "time written as a number",
        _set("services.2.hours.0", {"start": 9, "end": "12:00"}),
        {},
        ["services[2](household).hours[0].start", "HH:MM"],
    ),
    (
        "unknown device kind",
        _append("devices", {"id": "fridge", "kind": "fridge"}),
        {},
        ["devices[15](fridge): unknown kind 'fridge'", "printer, led_strip"],
    ),
    (
        "bad literal",
        _set("logging.level", "LOUD"),
        {},
        ["logging.level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"],
    ),
    (
        "evdev with neither path nor name",
        _append(
            "devices",
            {"id": "qr", "kind": "code_scanner", "transport": {"type": "evdev"}},
        ),
        {},
        ["devices[15](qr).transport", "exactly one of path and name"],
    ),
    (
        "mqtt url with another scheme",
        _set("mqtt.url", "https://broker.example"),
        {},
        ["mqtt.url", "mqtt or mqtts"],
    ),
    (
        "tls files on plaintext mqtt",
        _set("mqtt", {"url": "mqtt://broker.example", "tls": {"ca_file": "/etc/ca.pem"}}),
        {},
        ["mqtt.url", "mqtts://"],
    ),
    (
        "client certificate without key",
        _set(
            "mqtt",
            {"url": "mqtts://b.example", "tls": {"ca_file": "/c.pem", "cert_file": "/h.crt"}},
        ),
        {},
        ["mqtt.tls.key_file", "go together"],
    ),
    (
        "single underscore after the section",
        lambda data: None,
        {"HALL_MQTT_URL": "mqtts://b.example:8883"},
        ["HALL_MQTT_URL", "write HALL_MQTT__URL"],
    ),
    (
        "env override index out of range",
        lambda data: None,
        {"HALL_SERVICES__9__DAILY_CAP": "10"},
        ["HALL_SERVICES__9__DAILY_CAP", "no index 9"],
    ),
    (
        "env override unknown item id",
        lambda data: None,
        {"HALL_SERVICES__PENSION__DAILY_CAP": "10"},
        ["HALL_SERVICES__PENSION__DAILY_CAP", "no item with id 'pension'", "social"],
    ),
]


@pytest.mark.parametrize(
    ("change", "environ", "expected"),
    [pytest.param(change, env, expected, id=name) for name, change, env, expected in BROKEN],
)
def test_broken_config_is_reported(
    tmp_path: Path,
    change: Callable[[Data], None],
    environ: dict[str, str],
    expected: list[str],
) -> None:
    data = demo_data()
    change(data)
    code, output = check(tmp_path, data, environ)
    assert code == 2
    for fragment in expected:
        assert fragment in output
    for line in output.splitlines():
        assert " (fix: " in line, line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("hall:\n  id: x\n\tname: y\n", "config.yaml:3:1: YAML syntax", id="tab"),
        pytest.param("hall: [a, b\n", "config.yaml:2:", id="unclosed-list"),
        pytest.param("hall: {}\nhall: {}\n", "found the key 'hall' twice", id="duplicate-key"),
        pytest.param("- hall\n", "not a mapping of sections", id="list-at-top"),
        pytest.param("# nothing yet\n", "the file is empty", id="empty"),
    ],
)
def test_unusable_yaml_is_reported_with_place(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    code, output = check_config_file(path, {})
    assert code == 2
    assert expected in output
    assert "(fix: " in output


def test_file_not_found_directory_and_encoding(tmp_path: Path) -> None:
    code, output = check_config_file(tmp_path / "missing.yaml", {})
    assert code == 2
    assert "missing.yaml: file not found" in output
    code, output = check_config_file(tmp_path, {})
    assert code == 2
    assert "is a directory" in output
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes("hall:\n  name: 社区服务中心\n".encode("gb18030"))
    code, output = check_config_file(gbk, {})
    assert code == 2
    assert "gbk.yaml:2: the file is not UTF-8" in output
    assert "iconv" in output


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + DEMO.read_bytes())
    assert check_config_file(path, {}) == (0, "ok")


def test_all_problems_of_one_kind_are_reported_together(tmp_path: Path) -> None:
    data = demo_data()
    data["services"][1]["prefix"] = "A"
    data["windows"][2]["number"] = 1
    data["windows"][0]["services"].append("passport")
    paths = problems_of(tmp_path, data)
    assert paths == [
        "services[1](civil-affairs).prefix",
        "windows[2](w3).number",
        "windows[0](w1).services[4]",
    ]


def test_password_is_never_echoed(tmp_path: Path) -> None:
    data = demo_data()
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1883", "username": "hall", "password": 482913}
    code, output = check(tmp_path, data)
    assert code == 2
    assert "mqtt.password" in output
    assert "482913" not in output


def test_config_error_formats_one_line_per_problem() -> None:
    problems = [
        ConfigProblem("hall.id", "required field is missing", "add the field 'id'"),
        ConfigProblem("web.port", "too big", "use a value from 0 to 65535"),
    ]
    assert format_problems(problems) == (
        "hall.id: required field is missing (fix: add the field 'id')\n"
        "web.port: too big (fix: use a value from 0 to 65535)"
    )
    assert str(ConfigError(problems)) == format_problems(problems)


def test_validate_config_reports_like_load_config() -> None:
    data = demo_data()
    data["services"][0]["prefix"] = "a"
    with pytest.raises(ConfigError) as caught:
        validate_config(data)
    assert caught.value.problems[0].path == "services[0](social).prefix"


# ---------------------------------------------------------------------------------------
# Environment overrides


def test_env_overrides_nested_list_index_and_item_id(tmp_path: Path) -> None:
    path = write(tmp_path, demo_data())
    config = load_config(
        path,
        {
            "HALL_MQTT__URL": "mqtts://broker.example:8883",
            "HALL_MQTT__TLS__CA_FILE": "/etc/hall-agent/tls/ca.pem",
            "HALL_SERVICES__0__DAILY_CAP": "50",
            "hall_services__household__daily_cap": "70",
            "HALL_QUEUE__ONE_WAITING_TICKET_PER_ID": "false",
            "HALL_WINDOWS__W3__SERVICES": "[household, social, elderly, civil-affairs]",
            "HALL_STORAGE__PATH": "/var/lib/hall-agent",
            "UNRELATED": "1",
            "HALL_AGENT_CONFIG": "/etc/hall-agent/config.yaml",
        },
    )
    assert config.mqtt.url == "mqtts://broker.example:8883"
    assert config.mqtt.tls.ca_file == Path("/etc/hall-agent/tls/ca.pem")
    assert config.service("social").daily_cap == 50
    assert config.service("household").daily_cap == 70
    assert config.queue.one_waiting_ticket_per_id is False
    assert config.window("w3").services == ["household", "social", "elderly", "civil-affairs"]
    assert config.storage.path == Path("/var/lib/hall-agent")


def test_env_overrides_reach_devices_and_mapping_keys(tmp_path: Path) -> None:
    data = demo_data()
    data["devices"].append(
        {
            "id": "buttons",
            "kind": "ticket_buttons",
            "transport": {"type": "evdev", "path": "/dev/input/event3"},
            "keymap": {"KEY_F1": "social"},
        }
    )
    config = load_config(
        write(tmp_path, data),
        {
            "HALL_DEVICES__CALLER-W1__ADDRESS": "9",
            "HALL_DEVICES__0__TRANSPORT__PORT": "9101",
            "HALL_DEVICES__BUTTONS__KEYMAP__KEY_F2": "elderly",
            "HALL_DEVICES__BUTTONS__KEYMAP__key_f1": "household",
        },
    )
    caller = config.device("caller-w1")
    assert isinstance(caller, CallerDevice)
    assert caller.address == 9
    assert getattr(config.device("kiosk-printer").transport, "port", None) == 9101
    buttons = config.device("buttons")
    assert isinstance(buttons, TicketButtonsDevice)
    assert buttons.keymap == {"KEY_F1": "household", "KEY_F2": "elderly"}


def test_env_text_fields_stay_text_and_empty_means_null(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLE,
        {
            "HALL_MQTT__USERNAME": "2024",
            "HALL_MQTT__PASSWORD": "123456",
            "HALL_HALL__NAME": "true",
        },
    )
    assert config.mqtt.username == "2024"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "123456"
    assert config.hall.name == "true"
    offline = load_config(EXAMPLE, {"HALL_MQTT__URL": "", "HALL_MQTT__TLS__CA_FILE": "null"})
    assert not offline.mqtt.enabled
    data = demo_data()
    del data["mqtt"]
    created = load_config(write(tmp_path, data), {"HALL_MQTT__KEEPALIVE": "60"})
    assert created.mqtt.keepalive == 60


def test_load_config_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALL_WEB__PORT", "9999")
    assert load_config(DEMO).web.port == 9999


# ---------------------------------------------------------------------------------------
# Details of the models


def test_yaml_scalars_follow_yaml_1_2(tmp_path: Path) -> None:
    text = DEMO.read_text(encoding="utf-8").replace(
        '{start: "00:00", end: "23:59"', "{start: 8:30, end: 13:30"
    )
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path, {})
    assert config.services[0].hours[0].start == dt.time(8, 30)
    assert config.services[0].hours[0].end == dt.time(13, 30)


def test_usb_ids_as_hex_strings() -> None:
    transport = UsbTransport.model_validate(
        {"type": "usb", "vendor_id": "0x04b8", "product_id": "0202"}
    )
    assert (transport.vendor_id, transport.product_id) == (0x04B8, 0x0202)


def test_single_transport_kinds_need_no_type() -> None:
    data = demo_data()
    data["devices"].append({"id": "cam", "kind": "camera", "transport": {"path": "/dev/video0"}})
    data["windows"][1]["devices"].append("cam")
    config = validate_config(data)
    assert config.device("cam").transport.type == "v4l2"
    assert config.device("hall-screen").transport.type == "web"


def test_service_helpers_raise_key_error_for_unknown_ids() -> None:
    config = load_config(DEMO, {})
    with pytest.raises(KeyError):
        config.service("nope")
    with pytest.raises(KeyError):
        config.device("nope")


def _hall(hours: list[Data]) -> Data:
    data = demo_data()
    data["services"][0]["hours"] = hours
    return data


minutes = st.integers(min_value=0, max_value=24 * 60 - 1)
day_sets = st.sets(st.sampled_from(WEEKDAYS), min_size=1).map(
    lambda days: [d for d in WEEKDAYS if d in days]
)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


@settings(deadline=None, max_examples=60)
@given(
    bounds=st.lists(minutes, min_size=2, max_size=12, unique=True).map(sorted),
    days=st.lists(day_sets, min_size=6, max_size=6),
)
def test_periods_without_overlap_validate(bounds: list[int], days: list[list[str]]) -> None:
    pairs = list(zip(bounds[::2], bounds[1::2], strict=False))
    hours = [
        {"start": _hhmm(a), "end": _hhmm(b), "days": days[i]} for i, (a, b) in enumerate(pairs)
    ]
    config = validate_config(_hall(hours))
    assert len(config.services[0].hours) == len(pairs)


@settings(deadline=None, max_examples=100)
@given(
    first=st.tuples(minutes, minutes).filter(lambda p: p[0] != p[1]).map(sorted),
    second=st.tuples(minutes, minutes).filter(lambda p: p[0] != p[1]).map(sorted),
    days=st.tuples(day_sets, day_sets),
)
def test_two_periods_are_rejected_exactly_when_they_overlap(
    first: list[int], second: list[int], days: tuple[list[str], list[str]]
) -> None:
    hours = [
        {"start": _hhmm(first[0]), "end": _hhmm(first[1]), "days": days[0]},
        {"start": _hhmm(second[0]), "end": _hhmm(second[1]), "days": days[1]},
    ]
    overlap = bool(set(days[0]) & set(days[1])) and (first[0] < second[1] and second[0] < first[1])
    if overlap:
        with pytest.raises(ConfigError) as caught:
            validate_config(_hall(hours))
        assert [p.path for p in caught.value.problems] == ["services[0](social).hours[1]"]
    else:
        assert validate_config(_hall(hours)).services[0].hours[1].days == days[1]


@settings(deadline=None, max_examples=30)
@given(cap=st.integers(min_value=-5, max_value=10_000))
def test_env_override_of_a_number_is_validated(cap: int) -> None:
    data = DEMO_DATA
    if cap >= 1:
        config = validate_config(data, {"HALL_SERVICES__SOCIAL__DAILY_CAP": str(cap)})
        assert config.service("social").daily_cap == cap
    else:
        with pytest.raises(ConfigError) as caught:
            validate_config(data, {"HALL_SERVICES__SOCIAL__DAILY_CAP": str(cap)})
        assert "services[0](social).daily_cap" in str(caught.value)
        assert "HALL_SERVICES__SOCIAL__DAILY_CAP" in str(caught.value)


def test_model_is_frozen() -> None:
    config: HallAgentConfig = load_config(DEMO, {})
    with pytest.raises(ValueError, match="frozen"):
        config.hall.id = "other"  # type: ignore[misc]


def test_dumped_config_validates_back_to_the_same_config() -> None:
    config = load_config(EXAMPLE, {"HALL_MQTT__USERNAME": "hall", "HALL_MQTT__PASSWORD": "pw"})
    again = validate_config(config.model_dump())
    assert again == config
    assert again.mqtt.password is not None
    assert again.mqtt.password.get_secret_value() == "pw"


def test_range_hint_reaches_optional_constrained_fields(tmp_path: Path) -> None:
    data = demo_data()
    data["devices"][4]["address"] = 300
    code, output = check(tmp_path, data)
    assert code == 2
    assert "devices[4](caller-w1).address" in output
    assert "(fix: use a value from 1 to 254)" in output


SCALARS = """\
times: [13:30, 8:05]
words: [on, off, yes, no, y, n]
bools: [true, False, TRUE]
ints: [010, 0x1F, 0o17, -7, +3]
floats: [1.5, .5, 1e3, -.inf]
dates: [2026-02-14, 2026-13-01]
nested: {a: {b: [1, "2", null, ~]}}
"""


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(SCALARS, id="scalars"),
        pytest.param((ROOT / "config" / "example.yaml").read_text(encoding="utf-8"), id="example"),
    ],
)
def test_libyaml_reads_the_config_exactly_as_pyyaml_does(text: str) -> None:
    """The start parses with libyaml (agent/config/yaml_loader.py): the same YAML 1.2
    scalars and constructors as PyYAML's own parser, value for value and type for type."""
    from agent.config.yaml_loader import _FastYamlLoader, _load_with, _YamlLoader

    fast, slow = _load_with(_FastYamlLoader, text), _load_with(_YamlLoader, text)

    def typed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: typed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v) for v in value]
        return (type(value).__name__, value)

    assert typed(fast) == typed(slow)
    if text == SCALARS:
        assert fast["times"] == ["13:30", "8:05"]
        assert fast["words"] == ["on", "off", "yes", "no", "y", "n"]
        assert fast["ints"] == [10, 31, 15, -7, 3]
        assert fast["dates"][1] == "2026-13-01"


def test_a_key_written_twice_is_refused_by_either_parser() -> None:
    import yaml

    from agent.config.yaml_loader import _FastYamlLoader, _load_with, _YamlLoader

    for loader in (_FastYamlLoader, _YamlLoader):
        with pytest.raises(yaml.YAMLError, match="found the key 'hall' twice"):
            _load_with(loader, "hall: {}\nwindows: []\nhall: {}\n")
