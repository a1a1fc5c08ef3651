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
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(user_app, name="user")

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
