"""The one strict configuration tree: YAML file, then `BAYWARDEN_*` environment overrides.

Every field has bounds and a description; unknown keys are errors (`extra="forbid"`), and
`load_settings` turns a pydantic error into lines that name the field and the YAML line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Plate confidence below which a penalty needs operator review (enforcement.rules.Rules default; the
# eval's auto-accept threshold): chosen on the cross-fitted validation table, anpr/weights/calibration.json.
DEFAULT_CONFIRMATION_THRESHOLD = 0.99
DEFAULT_SECRET = "change-me-in-production"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecuritySettings(Strict):
    secret_key: SecretStr = Field(
        SecretStr(DEFAULT_SECRET), description="Signs session cookies, CSRF tokens and driver links."
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, le=30 * 24 * 3600, description="Operator session lifetime.")
    cookie_secure: bool = Field(False, description="Send cookies only over HTTPS (set behind TLS).")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Addresses of reverse proxies whose X-Forwarded-For is believed (none by default: the "
        "login lockout counts the real peer address).",
    )
    login_max_failures: int = Field(5, ge=1, le=100, description="Failed logins before a lockout.")
    login_lockout_s: int = Field(300, ge=1, le=86400, description="Lockout length after too many failures.")


class ComponentSettings(Strict):
    api: bool = Field(True, description="Serve the HTTP API and dashboard.")
    scheduler: bool = Field(True, description="Run the periodic jobs (timers sweep, retention, outbox).")
    cameras: bool = Field(True, description="Run the camera supervisor (one worker per enabled camera).")
    enforcement: bool = Field(True, description="Run the enforcement engine (needs the scheduler for timers).")
    relay: bool = Field(False, description="Run the OCPP relay between charge points and the CSMS.")


class UpstreamSettings(Strict):
    pattern: str = Field("*", min_length=1, description="fnmatch pattern on the charge point id.")
    url: str = Field(..., pattern=r"^wss?://", description="CSMS base URL; the charger id is appended.")


class RelaySettings(Strict):
    host: str = Field("127.0.0.1", description="Address the relay listens on.")
    port: int = Field(9000, ge=1, le=65535, description="Port the relay listens on.")
    upstreams: list[UpstreamSettings] = Field(default_factory=list, description="First match wins.")
    tls_cert: Path | None = Field(None, description="PEM certificate for wss:// on the listening side.")
    tls_key: Path | None = Field(None, description="PEM key for the certificate.")
    max_frame_bytes: int = Field(1 << 20, ge=1024, le=16 << 20, description="Largest frame accepted.")
    ping_mode: Literal["per_hop", "end_to_end"] = Field(
        "per_hop",
        description="per_hop: the relay answers each side's pings itself; end_to_end: pings and pongs pass "
        "through, so a charger's pong comes from its CSMS and the CSMS's from the charger.",
    )
    ping_interval_s: float | None = Field(
        20.0, gt=0, le=3600, description="A side silent this long gets a ping of the relay's own; null: never."
    )
    ping_timeout_s: float = Field(20.0, gt=0, le=3600, description="Then it is closed (1011) if still silent.")


class CsmsIntakeSettings(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Names the CSMS in logs and events.")
    auth: Literal["hmac", "bearer"] = Field(
        "hmac", description="hmac: signed body + timestamp headers; bearer: Authorization: Bearer/Token SECRET."
    )
    secret: SecretStr = Field(..., description="Shared secret (HMAC key or bearer token), 16+ characters.")
    max_skew_s: int = Field(300, ge=10, le=3600, description="Oldest accepted signature timestamp (hmac).")

    @model_validator(mode="after")
    def _secret_len(self) -> CsmsIntakeSettings:
        if len(self.secret.get_secret_value()) < 16:
            raise ValueError("secret must be at least 16 characters")
        return self


class RetentionSettings(Strict):
    evidence_days: int = Field(30, ge=1, le=3650, description="Days to keep frames and plate crops.")
    reads_days: int = Field(
        90, ge=1, le=3650,
        description="Days to keep plate reads, presences, events, visits without a penalty and sent notifications.",
    )
    audit_days: int = Field(365 * 2, ge=30, le=3650, description="Days to keep the audit log.")
    # At least 30 days: the engine looks back up to 30 days (return_ban_hours) for earlier overstays.
    penalties_days: int = Field(
        365, ge=30, le=3650,
        description="Days to keep a settled penalty (paid, waived, no charge, voided) with its visit and evidence; "
        "open penalties keep theirs until settled.",
    )


class BayZone(Strict):
    bay_id: str = Field(..., min_length=1, max_length=64, description="Bay this polygon watches.")
    polygon: list[tuple[float, float]] = Field(
        ..., min_length=3, description="Polygon in frame pixels [[x, y], ...] (region of interest)."
    )


# Plate regions (anpr.regions.REGIONS has the same names; a test keeps them equal).
REGION_NAMES = ("eu", "uk", "us", "br", "generic")
REGION_PATTERN = r"^(eu|uk|us|br|generic)(,(eu|uk|us|br|generic))*$"


class CameraSettings(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique camera name.")
    url: str = Field(..., pattern=r"^(rtsps?|https?|file)://", description="Main stream URL.")
    sub_url: str | None = Field(None, pattern=r"^(rtsps?|https?|file)://", description="Detection sub-stream.")
    enabled: bool = Field(True, description="Start a worker for this camera.")
    fps: float = Field(5.0, gt=0, le=30, description="Frames per second to process.")
    zones: list[BayZone] = Field(default_factory=list, description="Bay polygons seen by this camera.")
    region: str | None = Field(
        None, pattern=REGION_PATTERN, description="Plate region(s) for this camera; default: anpr.region."
    )
    node: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Fleet: run this camera's worker only on the instance with this ha.node (e.g. the machine "
        "on the camera's network); none: on any instance with the cameras part, moved when it dies.",
    )


class MailSettings(Strict):
    """Outgoing mail server. `security`: none (port 25, plain), starttls (usually 587) or ssl (usually 465)."""

    host: str = Field(..., min_length=1, max_length=253, description="SMTP server host name or address.")
    port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    security: Literal["none", "starttls", "ssl"] = Field("starttls", description="Transport security.")
    username: str | None = Field(None, min_length=1, max_length=254, description="Login name; none: no AUTH.")
    password: SecretStr | None = Field(None, description="Login password.")
    from_address: EmailStr = Field(..., description="Envelope and header sender address.")
    from_name: str = Field("Baywarden", max_length=200, description="Display name of the sender.")
    timeout_s: float = Field(30.0, gt=0, le=300, description="Socket timeout for every SMTP step.")
    verify_tls: bool = Field(True, description="Verify the server certificate and host name.")
    ca_file: Path | None = Field(None, description="PEM bundle to trust instead of the system store.")

    @model_validator(mode="after")
    def _check(self) -> MailSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        if self.username is not None and self.security == "none":
            raise ValueError("a login needs security starttls or ssl: the password would cross the network in clear")
        return self


_ONE_LINE = r"^[^\r\n]*[^\s][^\r\n]*$"


class SiteSettings(Strict):
    """Who runs the site, as drivers see it on notices (the page and the e-mails)."""

    # One line, not blank: the name ends up in e-mail subjects, where a line break is refused.
    name: str | None = Field(
        None, max_length=200, pattern=_ONE_LINE, description="Site name shown to drivers; none: site_name."
    )
    legal_name: str | None = Field(None, max_length=200, pattern=_ONE_LINE, description="Operator's legal name.")
    registration_number: str | None = Field(
        None, max_length=64, pattern=_ONE_LINE, description="Company or trade registration number."
    )
    address: str | None = Field(None, min_length=1, max_length=500, description="Postal address (several lines).")
    contact_email: EmailStr | None = Field(None, description="Where drivers write with questions.")
    contact_phone: str | None = Field(
        None, pattern=r"^\+?[0-9][0-9 ()./-]{3,30}$", description="Phone number for drivers (digits, +, spaces)."
    )
    website: str | None = Field(None, max_length=300, pattern=r"^https?://[^\s<>\"]+$", description="Site web page.")
    language: Literal["en", "de"] = Field(
        "en", description="Language of what drivers read: notice and warning e-mails, push messages, the notice page."
    )


class NotificationSettings(Strict):
    public_url: str = Field("http://127.0.0.1:8080", pattern=r"^https?://", description="Base of driver links.")
    driver_link_days: int = Field(30, ge=1, le=365, description="How long a notice's driver link works.")
    webhook_url: str | None = Field(None, pattern=r"^https?://", description="Operator app backend to notify.")
    webhook_secret: SecretStr | None = Field(None, description="HMAC key for the webhook signature.")
    vapid_private_key: SecretStr | None = Field(None, description="Web Push VAPID private key (PEM or base64url).")
    vapid_public_key: str | None = Field(None, description="Its public key (base64url), given to browsers.")
    vapid_email: str = Field("mailto:operator@example.org", description="VAPID contact claim.")
    dispatch_every_s: int = Field(5, ge=1, le=300, description="How often the outbox is sent.")
    # The defaults ride out about 8.5 hours of outage before a message is dead-lettered.
    retry_max_attempts: int = Field(10, ge=1, le=1000, description="Sends tried before a message is dead.")
    retry_base_s: float = Field(60.0, gt=0, le=3600, description="Wait after the first failure; doubles each time.")
    retry_max_s: float = Field(6 * 3600.0, gt=0, le=86400, description="Longest wait between two sends.")
    operator_alert_emails: bool = Field(True, description="E-mail alerts to operators and admins with an address.")

    @model_validator(mode="after")
    def _retry_bounds(self) -> NotificationSettings:
        if self.retry_max_s < self.retry_base_s:
            raise ValueError("retry_max_s must be at least retry_base_s")
        return self


class AccessOutput(Strict):
    """An HTTP call to a relay board or barrier controller when an access point admits a vehicle."""

    method: Literal["GET", "POST", "PUT"] = Field("POST", description="HTTP method.")
    url: str = Field(..., pattern=r"^https?://", description="Controller URL.")
    body: str = Field("", max_length=4000, description="Body template: {plate}, {bay_id}, {at} are filled in.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (e.g. Authorization).")
    timeout_s: float = Field(3.0, gt=0, le=30, description="Per attempt.")
    retries: int = Field(2, ge=0, le=5, description="Further attempts after a failure.")


class BaySettings(Strict):
    bay_id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Matches a camera zone's bay_id.")
    site: str = Field(
        "default", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Site the bay belongs to; the engine's work is sharded by site (ha.shards).",
    )
    kind: Literal["bay", "access"] = Field("bay", description="access: a gate that admits whitelisted cars.")
    charge_point_id: str | None = Field(None, max_length=64, description="Charger of this bay's outlet.")
    evse_id: int | None = Field(None, ge=0, le=2**31 - 1, description="EVSE id (OCPP 2.0.1).")
    connector_id: int | None = Field(None, ge=0, le=2**31 - 1,
                                     description="Connector id (OCPP 1.6, or within the EVSE).")
    rules: dict[str, Any] = Field(default_factory=dict, description="Overrides of the site rules for this bay.")
    output: AccessOutput | None = Field(None, description="For kind access: what to trigger when admitting.")


class EnforcementSettings(Strict):
    rules: dict[str, Any] = Field(
        default_factory=dict, description="Site rules (see enforcement/rules.py: Rules); validated at start."
    )
    bays: list[BaySettings] = Field(default_factory=list, description="Bays joined to their chargers.")
    sweep_every_s: int = Field(2, ge=1, le=60, description="How often due timers are fed to the core.")


class SourceCamera(Strict):
    id: str = Field(..., min_length=1, max_length=128, description="The camera or lane id as the source names it.")
    bay_id: str = Field(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Our bay its reads are for.")


class SourceSettings(Strict):
    """A system that already reads plates (an ANPR camera, Plate Recognizer, a script) and sends its reads
    here; each read becomes the same events our own camera workers produce (see README "Outside reads")."""

    name: str = Field(..., pattern=r"^[a-z0-9_-]{1,64}$", description="Unique; part of the intake URL.")
    kind: Literal["webhook", "platerecognizer", "hikvision", "ftp", "frigate", "dahua"] = Field(
        ..., description="webhook: our signed JSON; platerecognizer: its webhook JSON or multipart; "
        "hikvision: ISAPI ANPR event push (multipart XML + pictures); ftp: the camera uploads a JPEG whose "
        "file name carries the plate (ftp: settings, user = the source's name, password = its secret); frigate: "
        "Frigate's MQTT events (mqtt: settings); dahua: Baywarden subscribes to a Dahua ITC/IPC camera's "
        "TrafficJunction events (device_url, username, secret = the camera's password; camera ids are "
        "\"<channel>\" or \"<channel>/<lane>\", the lane winning).",
    )
    device_url: str | None = Field(
        None, max_length=300, pattern=r"^https?://[^\s]+$",
        description="dahua: the camera's address, e.g. http://192.0.2.10 (Baywarden adds the subscription path).",
    )
    username: str | None = Field(
        None, pattern=r'^[^\s"\\]{1,64}$', description="dahua: the camera's login (HTTP Digest); password: secret.",
    )
    topic: str = Field("frigate", pattern=r"^[A-Za-z0-9_/-]{1,100}$", description="frigate: its MQTT topic prefix.")
    frigate_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="frigate: its HTTP API, to fetch each event's snapshot."
    )
    file_pattern: str | None = Field(
        None, max_length=300,
        description="ftp: regular expression over the uploaded file's name with the named groups plate "
        "(required), time and camera (optional), e.g. ^(?P<camera>[^_]+)_(?P<time>\\d{14})_(?P<plate>[A-Z0-9]+)\\.jpg$",
    )
    time_format: str = Field("%Y%m%d%H%M%S", max_length=40, description="ftp: strptime format of the time group.")
    utc_offset_min: int = Field(0, ge=-840, le=840, description="ftp: the camera clock's offset from UTC (minutes).")
    secret: SecretStr | None = Field(
        None, description="webhook: the HMAC key; others: the token (Authorization: Token/Bearer, the password of "
        "HTTP Basic, or ?token= for devices that can only be given a URL). frigate: none (the broker's login). "
        "dahua: the camera's password (at least 8 characters, as the camera itself requires).",
    )
    cameras: list[SourceCamera] = Field(..., min_length=1, max_length=500, description="Source camera ids to bays.")
    presence_timeout_s: int = Field(
        300, ge=10, le=86400, description="A car not read again for this long has left (sources that report once).",
    )
    max_skew_s: int = Field(300, ge=10, le=3600, description="webhook: oldest accepted signature timestamp.")
    enabled: bool = Field(
        True, description="A disabled source's requests are refused (403); a disabled dahua camera is not subscribed.",
    )
    max_per_s: float = Field(
        50.0, gt=0, le=10000, description="Requests (messages, uploads) per second kept on average; a source "
        "that floods past it is refused (429) without slowing the others.",
    )
    burst: int = Field(200, ge=1, le=100000, description="Requests accepted at once before max_per_s applies.")

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # A dahua secret is the camera's own password: its firmware asks for 8-32 characters, not our 16.
        least = 8 if info.data.get("kind") == "dahua" else 16
        if v is not None and len(v.get_secret_value()) < least:
            raise ValueError(f"at least {least} characters")
        return v

    @field_validator("device_url")
    @classmethod
    def _camera_address(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is None:
            return v
        parts = urlsplit(v)
        if parts.username is not None or parts.password is not None:
            raise ValueError("no login in the URL: put it in username and secret")
        if parts.query or parts.fragment:
            raise ValueError("the camera's address only (e.g. http://192.0.2.10): Baywarden adds the subscription")
        try:
            _ = parts.port  # raises for a port that is not a number
        except ValueError:
            raise ValueError("the port is not a number between 0 and 65535") from None
        if not parts.hostname:
            raise ValueError("a host name or address is needed, e.g. http://192.0.2.10")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _unique_cameras(self) -> SourceSettings:
        import re

        ids = [c.id for c in self.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError("camera ids must be unique within a source")
        if self.kind == "dahua":
            if self.device_url is None:
                raise ValueError("a dahua source needs device_url, the camera's address (e.g. http://192.0.2.10)")
            if self.username is None:
                raise ValueError("a dahua source needs username, the camera's login")
            if self.secret is None:
                raise ValueError("a dahua source needs secret, the camera's password")
            odd = [i for i in ids if not re.fullmatch(r"\d{1,4}(/\d{1,4})?", i)]
            if odd:
                raise ValueError(f"dahua camera ids are \"<channel>\" or \"<channel>/<lane>\" (numbers as the "
                                 f"camera reports them, e.g. \"0\" or \"0/1\"), not {odd[0]!r}")
        if self.kind != "frigate" and self.secret is None:
            raise ValueError(f"a {self.kind} source needs a secret (at least 16 characters)")
        if self.kind == "ftp":
            if not self.file_pattern:
                raise ValueError("an ftp source needs file_pattern (a regular expression with a plate group)")
            try:
                groups = re.compile(self.file_pattern).groupindex
            except re.error as exc:
                raise ValueError(f"file_pattern: {exc}") from None
            if "plate" not in groups:
                raise ValueError("file_pattern needs a named group (?P<plate>...)")
            if "camera" not in groups and len(self.cameras) != 1:
                raise ValueError("without a camera group in file_pattern the source maps exactly one camera")
        return self


class FtpSettings(Strict):
    """The FTP intake for cameras that can only upload pictures (sources of kind ftp)."""

    host: str = Field("127.0.0.1", description="Listen address.")
    port: int = Field(2121, ge=1, le=65535, description="Control port.")
    passive_ports: str = Field(
        "30000-30009", pattern=r"^\d{1,5}-\d{1,5}$", description="Passive data ports (open them in the firewall)."
    )
    max_file_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest upload kept.")


class MqttSettings(Strict):
    """The MQTT broker: Frigate's events come from it (sources of kind frigate), Baywarden publishes on it."""

    host: str = Field("127.0.0.1", max_length=255, description="Broker address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(None, max_length=128, description="Broker login.")
    password: SecretStr | None = Field(None, description="Broker password.")
    tls: bool = Field(False, description="Connect with TLS (system CA store).")
    client_id: str = Field("baywarden", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Base of the client id.")
    topic_prefix: str = Field("baywarden", pattern=r"^[A-Za-z0-9_/-]{1,100}$", description="Where Baywarden publishes.")
    publish: bool = Field(True, description="Publish bay states and alerts (retained states, HA discovery).")
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]{1,100}$", description="HA discovery.")
    plates: Literal["masked", "full"] = Field("masked", description="Plates in published messages.")


class HaSettings(Strict):
    """Running several instances on one PostgreSQL (see docs/architecture.md, "Fleet")."""

    shards: int = Field(
        1, ge=1, le=256,
        description="Engine shards: bays are split by site into this many, each applied by one instance at a "
        "time. Every instance must use the same number.",
    )
    takeover_s: float = Field(
        10.0, ge=2, le=300, description="A dead or hung owner's work is taken over within this many seconds."
    )
    max_clock_skew_s: float = Field(
        2.0, gt=0, le=60, description="An instance whose clock is further than this from the database's "
        "takes no leadership (its timers would fire early or late).",
    )
    node: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="This machine's name in the fleet; default: host name."
    )


class AnprSettings(Strict):
    detector: Literal["onnx", "ultralytics"] = Field("onnx", description="Plate detector backend.")
    detector_path: Path | None = Field(None, description="Detector model; default: the committed ONNX file.")
    ocr: Literal["ensemble", "platerec", "rapidocr", "easyocr"] = Field(
        "ensemble",
        description="Plate reader: ensemble (the plate recogniser trained here, checked by RapidOCR, calibrated "
        "confidence; measured best), platerec alone, or the general OCR backends with format decoding.",
    )
    region: str = Field(
        "generic",
        pattern=REGION_PATTERN,
        description="Where the plates come from: eu, uk, us, br or generic, comma-separated for several. "
        "Only re-ranks reads and swaps look-alikes; never shortens a read. Cameras may override it.",
    )
    calibration: Path | None = Field(None, description="Confidence calibration; default: the committed one.")
    formats: str = Field(
        "eu", min_length=1, description="Format set(s) of the rapidocr/easyocr decoders (e.g. eu,uk)."
    )
    det_conf: float = Field(
        0.1, gt=0, lt=1, description="Minimum detector score (weak boxes are kept only if they read as a plate)."
    )
    text_proposals: Literal["fallback", "always", "off"] = Field(
        "fallback", description="Use the OCR text detector on the whole frame when the plate detector misses."
    )
    second_look_above: float = Field(
        DEFAULT_CONFIRMATION_THRESHOLD, ge=0, le=1,
        description="Ensemble reads at least this sure are read again from a wider cut; a look-alike glyph "
        "read differently there keeps them below auto-accept. Keep it at or below the sites' "
        "confirmation_threshold; 1 turns it off.",
    )


class Settings(BaseSettings):
    """Baywarden settings. Environment variables override the file: BAYWARDEN_<FIELD>,
    nested groups with a double underscore (BAYWARDEN_SECURITY__SECRET_KEY)."""

    model_config = SettingsConfigDict(
        env_prefix="BAYWARDEN_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    env: Literal["development", "production"] = Field(
        "development", description="production refuses default secrets."
    )
    data_dir: Path = Field(Path("data"), description="SQLite file, evidence images and logs live here.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/baywarden.db."
    )
    host: str = Field("127.0.0.1", description="API listen address.")
    port: int = Field(8080, ge=1, le=65535, description="API listen port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Root log level.")
    site_name: str = Field("Baywarden site", min_length=1, max_length=200, description="Shown to drivers.")
    site: SiteSettings | None = Field(
        None, description="Operator and contact details for notices; its name, when set, wins over site_name."
    )
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    components: ComponentSettings = Field(default_factory=ComponentSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    anpr: AnprSettings = Field(default_factory=AnprSettings)
    enforcement: EnforcementSettings = Field(default_factory=EnforcementSettings)
    ha: HaSettings = Field(default_factory=HaSettings)
    ftp: FtpSettings | None = Field(None, description="Run the FTP intake (sources of kind ftp).")
    mqtt: MqttSettings | None = Field(None, description="MQTT broker (Frigate sources, publishing states).")
    sources: list[SourceSettings] = Field(
        default_factory=list, max_length=200, description="Outside plate readers posting to /api/v1/sources/NAME/...",
    )
    mail: MailSettings | None = Field(None, description="Outgoing mail server; no e-mail is sent without it.")
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    cameras: list[CameraSettings] = Field(default_factory=list)
    camera_down_alert_s: int = Field(
        60, ge=10, le=86400, description="A camera without pictures this long raises one operator alert "
        "(closed when it is back).",
    )
    csms_intakes: list[CsmsIntakeSettings] = Field(
        default_factory=list, description="CSMSs allowed to post events to /api/v1/csms/events and OCPI."
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.env == "production" and self.security.secret_key.get_secret_value() == DEFAULT_SECRET:
            raise ValueError("security.secret_key is still the default; set a secret in production")
        if len(self.security.secret_key.get_secret_value()) < 16:
            raise ValueError("security.secret_key must be at least 16 characters")
        names = [c.name for c in self.cameras]
        if len(names) != len(set(names)):
            raise ValueError("camera names must be unique")
        sources = [s.name for s in self.sources]
        if len(sources) != len(set(sources)):
            raise ValueError("source names must be unique")
        if self.database_url is not None and not self.database_url.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'baywarden.db').resolve()}"

    @property
    def evidence_dir(self) -> Path:
        return self.data_dir / "evidence"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init kwargs; environment overrides it.
        return (env_settings, init_settings)


class ConfigError(Exception):
    """A configuration problem, already phrased for a person: one line per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the composed YAML tree to a line number."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional YAML file plus the environment; raise ConfigError."""
    data: dict[str, Any] = {}
    root = None
    where = "config"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([f"{where}: cannot read config file: {exc.strerror}"]) from None
        try:
            root = yaml.compose(text)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f":{mark.line + 1}" if mark else ""
            raise ConfigError([f"{where}{at}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{where}:1: the config file must be a mapping of settings"])
        data = loaded
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = _line_of(root, loc) if root is not None and loc else None
            env_hint = f" (or env BAYWARDEN_{'__'.join(str(p) for p in loc).upper()})" if loc else ""
            at = f":{line}" if line else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}{at}: {field}: {msg}{env_hint if not line else ''}")
        raise ConfigError(lines) from None

