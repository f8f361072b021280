"""The hall's configuration: pydantic v2 models, YAML loading, environment overrides.

One YAML file describes a hall (``/etc/hall-agent/config.yaml`` on a Pi). Every field can
be overridden by an environment variable ``HALL_<SECTION>__<FIELD>``. Every problem found
while loading becomes a :class:`ConfigProblem` naming the field and the fix; all of them
together are raised as one :class:`ConfigError`.

The package is split by concern, each module importing only those listed before it:

- ``errors``: :class:`ConfigProblem`, :class:`ConfigError` and the validation error with
  its fix; ``walk``: seeing through the model types; ``yaml_loader``: the file's YAML;
- ``base``: the :class:`Model` base and text patterns; the models: ``hall`` (hall,
  services, windows, queue, callers, rating, ticket), ``calendar`` (holidays, make-up
  days, the hall's hours, special dates), ``system`` (storage, web, pages,
  logging, clock), ``mqtt``, ``transports``, ``devices``, ``identity`` (personal data,
  documents), ``access`` (sessions, lockout), ``staffing`` (roster, AB岗, rota) and
  ``root`` (:class:`HallAgentConfig`, the checks across sections);
- ``env``: the ``HALL_*`` overrides; ``messages``: pydantic errors in words for the person
  fixing the file; ``loading``: :func:`load_config`, :func:`validate_config`, the schema.

The names other modules use are re-exported here: ``from agent.config import ...``.
"""

from __future__ import annotations

from agent.config.access import AccessConfig
from agent.config.base import (
    ENV_NAME_PATTERN,
    HALL_ID_PATTERN,
    IDENTIFIER_PATTERN,
    KEY_NAME_PATTERN,
    LANGUAGE_PATTERN,
    PREFIX_PATTERN,
    REGION_CODE_PATTERN,
    Identifier,
    KeyName,
    Model,
)
from agent.config.calendar import CalendarConfig, CalendarYear, Holiday, calendar_warnings
from agent.config.cases import CasesConfig
from agent.config.devices import (
    DEVICE_KINDS,
    AnnouncerDevice,
    BusAddress,
    CallerDevice,
    CallerKeyName,
    CameraDevice,
    CodeScannerDevice,
    Device,
    DeviceKind,
    DocScannerDevice,
    IdReaderDevice,
    KeypadProtocolName,
    LedStripDevice,
    PrinterDevice,
    RaterDevice,
    RatingLevelValue,
    ScreenDevice,
    TicketButtonsDevice,
)
from agent.config.env import ENV_PREFIX
from agent.config.errors import ConfigError, ConfigProblem, CrossCheckError, format_problems
from agent.config.hall import (
    DEFAULT_BAD_REASONS,
    DEFAULT_PRIORITY_CLASSES,
    WEEKDAYS,
    WORKDAYS,
    CallerPolicy,
    GreenChannel,
    HallConfig,
    Period,
    PrintSource,
    PriorityClass,
    QueuePolicy,
    RatingPolicy,
    Service,
    ServiceGuide,
    SpecialDay,
    TicketLayout,
    TimeOfDay,
    TimeSpan,
    Weekday,
    Window,
)
from agent.config.identity import (
    DocumentsConfig,
    PersonalDataConfig,
    PersonalDataForm,
    PersonalDataSend,
)
from agent.config.loading import (
    HALL_STAFFING,
    check_config_file,
    config_schema,
    load_config,
    main,
    schema_text,
    validate_config,
    with_staffing,
)
from agent.config.messages import DOCS_HINT
from agent.config.mqtt import MqttConfig, MqttTls
from agent.config.root import HallAgentConfig, personal_data_key
from agent.config.staffing import Post, Rota, RotaEntry, Shift, StaffEntry
from agent.config.system import ClockConfig, LoggingConfig, PagesConfig, StorageConfig, WebConfig
from agent.config.transports import (
    AlsaTransport,
    EvdevTransport,
    FileTransport,
    IdReaderSerialTransport,
    NetworkTransport,
    SaneTransport,
    SerialTransport,
    TestPatternTransport,
    Transport,
    UsbId,
    UsbTransport,
    V4l2Transport,
    WebTransport,
)

__all__ = [
    "DEFAULT_BAD_REASONS",
    "DEFAULT_PRIORITY_CLASSES",
    "DEVICE_KINDS",
    "DOCS_HINT",
    "ENV_NAME_PATTERN",
    "ENV_PREFIX",
    "HALL_ID_PATTERN",
    "HALL_STAFFING",
    "IDENTIFIER_PATTERN",
    "KEY_NAME_PATTERN",
    "LANGUAGE_PATTERN",
    "PREFIX_PATTERN",
    "REGION_CODE_PATTERN",
    "WEEKDAYS",
    "WORKDAYS",
    "AccessConfig",
    "AlsaTransport",
    "AnnouncerDevice",
    "BusAddress",
    "CalendarConfig",
    "CalendarYear",
    "CallerDevice",
    "CallerKeyName",
    "CallerPolicy",
    "CameraDevice",
    "CasesConfig",
    "ClockConfig",
    "CodeScannerDevice",
    "ConfigError",
    "ConfigProblem",
    "CrossCheckError",
    "Device",
    "DeviceKind",
    "DocScannerDevice",
    "DocumentsConfig",
    "EvdevTransport",
    "FileTransport",
    "GreenChannel",
    "HallAgentConfig",
    "HallConfig",
    "Holiday",
    "IdReaderDevice",
    "IdReaderSerialTransport",
    "Identifier",
    "KeyName",
    "KeypadProtocolName",
    "LedStripDevice",
    "LoggingConfig",
    "Model",
    "MqttConfig",
    "MqttTls",
    "NetworkTransport",
    "PagesConfig",
    "Period",
    "PersonalDataConfig",
    "PersonalDataForm",
    "PersonalDataSend",
    "Post",
    "PrintSource",
    "PrinterDevice",
    "PriorityClass",
    "QueuePolicy",
    "RaterDevice",
    "RatingLevelValue",
    "RatingPolicy",
    "Rota",
    "RotaEntry",
    "SaneTransport",
    "ScreenDevice",
    "SerialTransport",
    "Service",
    "ServiceGuide",
    "Shift",
    "SpecialDay",
    "StaffEntry",
    "StorageConfig",
    "TestPatternTransport",
    "TicketButtonsDevice",
    "TicketLayout",
    "TimeOfDay",
    "TimeSpan",
    "Transport",
    "UsbId",
    "UsbTransport",
    "V4l2Transport",
    "WebConfig",
    "WebTransport",
    "Weekday",
    "Window",
    "calendar_warnings",
    "check_config_file",
    "config_schema",
    "format_problems",
    "load_config",
    "main",
    "personal_data_key",
    "schema_text",
    "validate_config",
    "with_staffing",
]
