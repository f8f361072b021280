"""MQTT: the link to the central system (broker url, TLS files, reconnects and pacing)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from agent.config.base import Model
from agent.config.errors import _invalid


class MqttTls(Model):
    """TLS files for the broker connection (CA pinning and the hall's client certificate)."""

    ca_file: Path | None = Field(default=None, description="CA certificate(s) to trust (PEM)")
    cert_file: Path | None = Field(default=None, description="The hall's client certificate")
    key_file: Path | None = Field(default=None, description="The client certificate's key")
    renew_before_days: int = Field(
        default=30,
        ge=1,
        le=365,
        description=(
            "Ask central for a new client certificate this many days before it expires "
            "(a new key is made on the hall; docs/fleet.md)"
        ),
    )

    bootstrap_cert_file: Path | None = Field(
        default=None,
        description=(
            "A long-lived certificate for the renewal-only listener (mqtt.renewal_url), "
            "used only once cert_file has expired"
        ),
    )
    bootstrap_key_file: Path | None = Field(
        default=None, description="The bootstrap certificate's key"
    )

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise _invalid(
                "cert_file and key_file go together",
                "give both the client certificate and its key, or neither",
                at=missing,
            )
        if (self.bootstrap_cert_file is None) != (self.bootstrap_key_file is None):
            missing = (
                "bootstrap_key_file" if self.bootstrap_key_file is None else ("bootstrap_cert_file")
            )
            raise _invalid(
                "bootstrap_cert_file and bootstrap_key_file go together",
                "give both the bootstrap certificate and its key, or neither",
                at=missing,
            )
        return self


_MQTT_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttConfig(Model):
    """The link to the central system. No url: no central link, the hall runs offline."""

    url: str | None = Field(
        default=None, description="mqtts://host:8883 or mqtt://host:1883; null runs offline"
    )
    tls: MqttTls = Field(default_factory=MqttTls)
    renewal_url: str | None = Field(
        default=None,
        description=(
            "mqtts://host:port of the broker's renewal-only listener: a hall whose client "
            "certificate expired asks for a new one there with tls.bootstrap_cert_file"
        ),
    )
    username: str | None = None
    password: SecretStr | None = None
    keepalive: int = Field(default=45, ge=30, le=60, description="Seconds")
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=60,
        le=30 * 86400,
        description="How long the broker keeps the session (and queued commands) while offline",
    )
    reconnect_max_s: float = Field(
        default=60.0, ge=0.5, le=300, description="Cap of the reconnect backoff"
    )
    drain_rate: float = Field(
        default=200.0, gt=0, le=10_000, description="Events per second cap when catching up"
    )
    inflight: int = Field(
        default=32, ge=1, le=1000, description="Events published but not yet PUBACKed at once"
    )
    reconnect_spread_s: float = Field(
        default=45.0,
        ge=0,
        le=300,
        description=(
            "The first reconnect after a drop waits a random time up to this, so a city's "
            "halls do not all reconnect at once when the broker comes back"
        ),
    )
    stable_after_s: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="A connection up this long resets the reconnect backoff",
    )
    ack_apply_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "Central's acks are saved at most this often, together with the writes of the "
            "moment (an ack per event would double the SD card's writes); 0: at once"
        ),
    )
    metrics_interval_s: float = Field(
        default=60.0, ge=1, le=3600, description="How often metrics are published (QoS 0)"
    )

    @field_validator("url")
    @classmethod
    def _url_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in _MQTT_DEFAULT_PORTS:
            raise _invalid(
                f"the url scheme must be mqtt or mqtts, not {parts.scheme or 'missing'!r}",
                "write mqtts://broker.example:8883 (TLS) or mqtt://127.0.0.1:1883",
            )
        try:
            port = parts.port
        except ValueError as err:
            raise _invalid(f"bad port in {value!r}", "the port is a number 1-65535") from err
        if not parts.hostname or port == 0:
            raise _invalid(f"{value!r} has no broker host", "write mqtts://HOST:PORT")
        if parts.username or parts.password:
            raise _invalid(
                "credentials do not belong in the url",
                "set mqtt.username and mqtt.password (e.g. HALL_MQTT__PASSWORD) instead",
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _invalid(f"{value!r} has a path or query", "write only scheme://host:port")
        return value

    @field_validator("renewal_url")
    @classmethod
    def _renewal_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        checked = cls._url_form(value)
        if urlsplit(value).scheme != "mqtts":
            raise _invalid(
                "the renewal listener is reached over TLS only",
                "write mqtts://broker.example:8884",
            )
        return checked

    @model_validator(mode="after")
    def _secure(self) -> MqttConfig:
        if self.renewal_url is not None and (
            self.tls.bootstrap_cert_file is None or not self.uses_tls
        ):
            raise _invalid(
                "renewal_url needs a bootstrap certificate and an mqtts:// url",
                "set tls.bootstrap_cert_file and tls.bootstrap_key_file (or remove renewal_url)",
                at="renewal_url",
            )
        if self.url is None:
            return self
        if self.uses_tls and self.tls.ca_file is None:
            raise _invalid(
                "mqtts needs the CA to trust",
                "set tls.ca_file, e.g. /etc/hall-agent/tls/ca.pem",
                at="tls.ca_file",
            )
        if not self.uses_tls and (self.tls.ca_file or self.tls.cert_file):
            raise _invalid(
                "TLS files are set but the url is plaintext mqtt://",
                "use mqtts:// (the agent never sends over plaintext what it was told to encrypt)",
                at="url",
            )
        if self.password is not None and self.username is None:
            raise _invalid("a password without a username", "set username too", at="username")
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None

    @property
    def uses_tls(self) -> bool:
        return self.url is not None and urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str | None:
        return None if self.url is None else urlsplit(self.url).hostname

    @property
    def renewal_endpoint(self) -> tuple[str, int] | None:
        if self.renewal_url is None:
            return None
        parts = urlsplit(self.renewal_url)
        assert parts.hostname is not None
        return parts.hostname, parts.port or _MQTT_DEFAULT_PORTS["mqtts"]

    @property
    def port(self) -> int | None:
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        return parts.port or _MQTT_DEFAULT_PORTS[parts.scheme]
