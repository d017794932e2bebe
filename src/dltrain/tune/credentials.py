"""Storage URLs without their secrets: the one place that knows where libpq keeps a password.

libpq takes a password (or the file that holds one) as ``user:password@`` in a URL, as a URL
parameter (``?password=…``, ``passfile=…``, ``sslpassword=…``), or as a key=value pair of a
connection string (``host=db password='s e c' dbname=x``). Whatever dltrain shows or stores
(messages, study.json, the "continue with" command) goes through ``masked`` or ``scrubbed``."""

from __future__ import annotations

import re
from urllib.parse import unquote

SECRET_KEYS = ("password", "passfile", "sslpassword")
MASK = "***"
# key=value, in a URL query (&key=value) or a connection string (key = 'quoted value').
_PAIR = re.compile(
    r"(?P<key>(?:%[0-9A-Fa-f]{2}|[A-Za-z0-9_])+)(?P<eq>\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'?|[^&\s;#]*)"
)


def _is_secret_key(key: str) -> bool:
    return unquote(key).strip().lower() in SECRET_KEYS


def _userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host`` sits in ``url`` (start, end), if any."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    at = url.rfind("@", start)  # a password may hold '@' or '/': everything up to the last '@'
    colon = url.find(":", start, at)
    if at < 0 or colon < 0:
        return None
    return colon + 1, at


def secrets_in(url: str) -> list[str]:
    """Every secret value in ``url``, as written and percent-decoded (longest first)."""
    found = []
    place = _userinfo(url)
    if place is not None and place[1] > place[0]:
        found.append(url[place[0] : place[1]])
    for match in _PAIR.finditer(url):
        if _is_secret_key(match["key"]) and match["value"].strip("'"):
            found.append(match["value"])
            found.append(match["value"].strip("'"))
    decoded = [unquote(value) for value in found]
    return sorted({value for value in found + decoded if value}, key=len, reverse=True)


def masked(url: str, mask: str = MASK) -> str:
    """``url`` with every password and password file replaced by ``mask``."""
    place = _userinfo(url)
    if place is not None and place[1] > place[0]:
        url = url[: place[0]] + mask + url[place[1] :]

    def hide(match):
        if not _is_secret_key(match["key"]):
            return match[0]
        return f"{match['key']}{match['eq']}{mask}"

    return _PAIR.sub(hide, url)


def without_secrets(url: str) -> str:
    """``url`` with its password parts left out: what to type again, the password coming from
    PGPASSWORD or ~/.pgpass instead."""
    place = _userinfo(url)
    if place is not None:
        url = url[: place[0] - 1] + url[place[1] :]
    url = _PAIR.sub(lambda match: "" if _is_secret_key(match["key"]) else match[0], url)
    url = re.sub(r"\?&+", "?", re.sub(r"&{2,}", "&", url))
    return re.sub(r"[?&]$", "", re.sub(r"\s{2,}", " ", url)).strip()


def has_secret(url: str) -> bool:
    return bool(secrets_in(url))


def scrubbed(text: str, url: str | None) -> str:
    """``text`` (an error from a driver, say) with every secret of ``url`` replaced by the mask."""
    if not url:
        return text
    text = text.replace(url, masked(url))
    for secret in secrets_in(url):
        text = text.replace(secret, MASK)
    return text
