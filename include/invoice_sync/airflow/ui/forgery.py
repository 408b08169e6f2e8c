"""Who may press the page's buttons: the page itself, in the person's own browser.

Airflow's login cookie is ``SameSite=Lax``, so a form on another *site* posts without it; but a sibling
subdomain (``evil.example.com`` next to ``airflow.example.com``) is the same site, and a page there posts
with the cookie. So a state-changing request must pass two checks:

1. **Its origin**: the browser says the request comes from the page's own origin. Browsers that send fetch
   metadata say it in ``Sec-Fetch-Site``, which only ``same-origin`` passes; an older browser is judged by
   ``Origin``, else ``Referer``, which must name the page's origin. A request none of them vouches for is
   refused: a form post from a browser always carries one.
2. **Its token**: the form carries :func:`form_token`, an HMAC of the user's id (the JWT's subject) under
   Airflow's own ``[api] secret_key`` (``[api_auth] jwt_secret`` when that is empty), which every
   api-server of a deployment shares, so the token holds behind a load balancer and across Airflow's
   token refreshes. Another site cannot read the page, so it cannot know the token.

The page's origin is the request's own (scheme and host as the api-server sees them) or that of
``[api] base_url``: behind a proxy that ends TLS, set ``base_url`` (or run the api-server with
``--proxy-headers``), or the browser's ``https`` origin will not match and the buttons are refused.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from airflow.configuration import conf
from starlette.requests import Request

TOKEN_FIELD = "form_token"
"""The form field that carries the anti-forgery token."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'unsafe-inline'",  # the page's one <style>; it has no script, image or font
        "frame-ancestors 'self'",  # shown in the Airflow UI's iframe, same origin, nowhere else
        "form-action 'self'",
        "base-uri 'none'",
    )
)
"""Sent with every response of the page."""

_PURPOSE = b"invoice-sync page form token\x00"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ForgedRequest(Exception):
    """A state-changing request the page did not send; the message says which check refused it."""


def form_token(subject: str) -> str:
    """The anti-forgery token of the user whose id (JWT subject) is ``subject``."""
    return hmac.new(_secret(), _PURPOSE + subject.encode(), hashlib.sha256).hexdigest()


def check_form_post(request: Request, subject: str, token: str) -> None:
    """Refuse a state-changing request that does not come from the page's own form.

    :raises ForgedRequest: the origin is another (or unknown), or the token is missing or not this user's.
    """
    origin_problem = _origin_problem(request)
    if origin_problem:
        raise ForgedRequest(f"Refused: {origin_problem}; use the buttons on the Invoice sync page")
    if not token or not hmac.compare_digest(token.encode(), form_token(subject).encode()):
        raise ForgedRequest(
            "Refused: the form's anti-forgery token is missing or not yours; reload the Invoice sync page"
        )


def _origin_problem(request: Request) -> str | None:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site == "same-origin":
            return None
        return f"the browser says this request comes from another origin (Sec-Fetch-Site: {fetch_site})"
    claimed = request.headers.get("origin")
    header = "Origin"
    if claimed is None:
        claimed, header = request.headers.get("referer"), "Referer"
    if claimed is None:
        return "the request names no origin (no Sec-Fetch-Site, Origin or Referer)"
    if _origin(claimed) in _own_origins(request):
        return None
    return f"{header} {claimed[:100]!r} is not the page's origin"


def _own_origins(request: Request) -> set[tuple[str, str, int]]:
    base_url = conf.get("api", "base_url", fallback="") or ""
    return {origin for origin in (_origin(str(request.base_url)), _origin(base_url)) if origin}


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of ``url``, the default port filled in; None when it has none (``null``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _secret() -> bytes:
    """Airflow's own secret: never a constant of ours, and the same in every api-server process."""
    for section, key in (("api", "secret_key"), ("api_auth", "jwt_secret")):
        value = conf.get(section, key, fallback="") or ""
        if value:
            return value.encode()
    raise RuntimeError("Set [api] secret_key (AIRFLOW__API__SECRET_KEY): the page signs its forms with it")
