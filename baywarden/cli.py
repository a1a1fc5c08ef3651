"""`baywarden`: run the service and administer it from the shell."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

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
        fail(str(exc))


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
    try:
        settings = load_settings(file)
    except ConfigError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(2) from None
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
    from sqlmodel import Session

    from api.routes.users import create_user
    from baywarden.service import StartupError, prepare_database
    from models.db import make_engine
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
    try:
        prepare_database(settings)
    except StartupError as exc:
        fail(str(exc))
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as db:
            user = create_user(db, data, actor="cli")
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    typer.echo(f"created {user.role.value} {user.username}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the token by, e.g. edge-gate-1.")],
    role: Annotated[str, typer.Option(help="device (post events only), viewer, operator or admin.")] = "device",
    config: ConfigOpt = None,
) -> None:
    """Create an API token and print it once (only its hash is stored)."""
    from sqlmodel import Session

    from api.routes.tokens import create_token
    from baywarden.service import StartupError, prepare_database
    from models.db import make_engine
    from models.tables import Role

    if role not in {r.value for r in Role}:
        fail(f"--role must be one of {', '.join(r.value for r in Role)}, not {role!r}", 2)
    settings = settings_from(config)
    setup_logging("WARNING", "cli")
    try:
        prepare_database(settings)
    except StartupError as exc:
        fail(str(exc))
    engine = make_engine(settings.db_url)
    try:
        with Session(engine) as db:
            _, secret = create_token(db, name, Role(role), actor="cli")
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
