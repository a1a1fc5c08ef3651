"""Passwords, operator sessions, CSRF tokens and login throttling."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from pwdlib import PasswordHash
from sqlmodel import Session, select

from models.settings import SecuritySettings
from models.tables import ApiToken, IntakeReceipt, LoginThrottle, OperatorSession, User

_hasher = PasswordHash.recommended()  # argon2id
# A real hash to verify against when the user does not exist, so timing does not reveal names.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _hasher.verify(password, password_hash)
    except Exception:
        return False


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


def authenticate(session: Session, username: str, password: str) -> User | None:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        verify_password(password, _DUMMY_HASH)
        return None
    if not user.is_active or not verify_password(password, user.password_hash):
        return None
    return user


def open_session(session: Session, user: User, now: datetime, cfg: SecuritySettings, ip: str) -> str:
    """Create a server-side session; return the cookie token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    session.add(
        OperatorSession(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + timedelta(seconds=cfg.session_max_age_s),
            ip=ip[:64],
        )
    )
    return token


def lookup_session(session: Session, token: str | None, now: datetime) -> tuple[OperatorSession, User] | None:
    if not token:
        return None
    row = session.get(OperatorSession, token_hash(token))
    if row is None or row.expires_at <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return row, user


class Throttle:
    """Counts failed logins per key inside a window; too many locks the key for a while."""

    def __init__(self, cfg: SecuritySettings):
        self.cfg = cfg

    def locked_for(self, session: Session, keys: list[str], now: datetime) -> int:
        """Seconds until every key is unlocked (0 when none is locked)."""
        wait = 0
        for key in keys:
            row = session.get(LoginThrottle, key)
            if row and row.locked_until and row.locked_until > now:
                wait = max(wait, int((row.locked_until - now).total_seconds()) + 1)
        return wait

    def fail(self, session: Session, keys: list[str], now: datetime) -> None:
        window = timedelta(seconds=self.cfg.login_lockout_s)
        for key in keys:
            row = session.get(LoginThrottle, key) or LoginThrottle(key=key, failures=0, window_started_at=now)
            if now - row.window_started_at > window:
                row.failures, row.window_started_at = 0, now
            row.failures += 1
            if row.failures >= self.cfg.login_max_failures:
                row.locked_until = now + window
                row.failures, row.window_started_at = 0, now
            session.add(row)

    def succeed(self, session: Session, keys: list[str]) -> None:
        for key in keys:
            row = session.get(LoginThrottle, key)
            if row is not None:
                session.delete(row)


def new_api_token() -> str:
    return "bw_" + secrets.token_urlsafe(32)


def lookup_token(session: Session, token: str, now: datetime) -> ApiToken | None:
    if not token:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_hash(token))).first()
    if row is None or row.revoked:
        return None
    # Record use at most once a minute so a busy edge worker does not write on every request.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        session.add(row)
        session.commit()
    return row


REPLAYED = "replayed request: this signature was already used"


def check_signed(db: Session, *, secret: str, timestamp: str, signature: str, body: bytes, max_skew_s: float,
                 now: datetime, scope: str) -> str | None:
    """The HMAC scheme of the intakes (CSMS, outside sources): `signature` is the hex HMAC-SHA256 of
    `<timestamp>.<body>` (a `sha256=` prefix allowed). None when it is right, fresh and unused (its
    receipt is then added to `db`); else the reason, `REPLAYED` for a signature already used in `scope`."""
    # Lower-cased once: the replay key and the comparison must see the same string (an upper-cased copy
    # of a used signature is the same signature).
    sig = signature.removeprefix("sha256=").strip().lower()
    # ASCII digits only and a sane length: str.isdigit() accepts other scripts' digits, and int() of a
    # 5,000-digit string is refused by Python itself.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or not sig:
        return "missing X-Baywarden-Timestamp or X-Baywarden-Signature"
    if abs(now.timestamp() - int(timestamp)) > max_skew_s:
        return "stale or future timestamp: sign each request when you send it"
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), sig):
        return "bad signature"
    key = f"{scope}:sig:{hashlib.sha256(sig.encode()).hexdigest()[:40]}"
    if db.get(IntakeReceipt, key) is not None:
        return REPLAYED
    db.add(IntakeReceipt(key=key, received_at=now))
    return None
