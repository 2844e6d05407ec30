"""What every broker URL may carry besides its hosts: a name prefix, TLS and credentials.

The URL's query wins over the settings (``CONVERGENT_BROKER_PREFIX`` and the like), so one
process can talk to two brokers; secrets are better kept in the settings than in a URL that ends
up in logs.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

from convergent import settings
from convergent.errors import ConfigurationError

__all__ = ["BrokerSecurity", "broker_security", "prefixed"]

_PREFIX = re.compile(r"[A-Za-z0-9_-]*")
SECURITY_OPTIONS = frozenset({"prefix", "tls", "tls_ca", "tls_cert", "tls_key"})


@dataclass(frozen=True)
class BrokerSecurity:
    prefix: str = ""
    tls: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    credentials: str = ""  # NATS .creds file
    username: str = ""
    password: str = ""

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context verifying the broker (with ``tls_ca``, else the system CAs)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca or None)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"broker TLS files unusable ({exc}): check CONVERGENT_BROKER_TLS_CA, "
                "CONVERGENT_BROKER_TLS_CERT and CONVERGENT_BROKER_TLS_KEY, or ?tls_ca=, "
                "?tls_cert=, ?tls_key= in the broker URL"
            ) from None
        return context


def broker_security(
    query: dict[str, str], *, tls_scheme: bool = False, username: str = "", password: str = ""
) -> BrokerSecurity:
    """The URL's options (``query``) over the settings."""
    s = settings.load()
    prefix = query.get("prefix", s.broker_prefix)
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(f"bad broker prefix {prefix!r}: letters, digits, '_' and '-' only")
    tls_ca = query.get("tls_ca", s.broker_tls_ca)
    tls_cert = query.get("tls_cert", s.broker_tls_cert)
    flag = query.get("tls", "").lower()
    return BrokerSecurity(
        prefix=prefix,
        tls=tls_scheme or flag in ("1", "true", "yes") or bool(tls_ca or tls_cert),
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=query.get("tls_key", s.broker_tls_key),
        credentials=query.get("creds", s.broker_credentials),
        username=username or s.broker_username,
        password=password or s.broker_password.get_secret_value(),
    )


def prefixed(prefix: str, name: str, separator: str = ".") -> str:
    return f"{prefix}{separator}{name}" if prefix else name
