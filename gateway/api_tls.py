"""The admin API's HTTPS material (``[api] cert_file``/``key_file``), checked before the server starts.

uvicorn would load the same files itself, but a wrong path or a key that does not fit the certificate would
then surface as a traceback from inside the server; here it is a one-line error naming the setting, shared by
``tiyi run`` and ``tiyi config check``. The key must be owner-only, as every other secret of the gateway.
"""

from __future__ import annotations

import ssl

from gateway.config import ApiConfig
from gateway.errors import ConfigError
from gateway.mqtt import owner_only


def check_api_tls(api: ApiConfig) -> None:
    """Raise ConfigError when the configured certificate and key cannot serve HTTPS; no-op without TLS."""
    if api.cert_file is None or api.key_file is None:
        return
    for path, name in ((api.cert_file, "api.cert_file"), (api.key_file, "api.key_file")):
        if not path.is_file():
            raise ConfigError(f"{name} {path}: no such file")
    owner_only(api.key_file, "api.key_file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(api.cert_file), str(api.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"api.cert_file {api.cert_file}: not a PEM certificate with the private key in api.key_file ({exc})"
        ) from exc
