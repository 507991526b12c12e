"""The field types of grpc and websocket checks that are more than a plain field: a gRPC
check's `metadata` and `target`, a WebSocket check's ws:// or wss:// `url`.

Checked when the config loads, so the clients (probes/net/grpc_health.py, ws.py) never meet
a metadata name or a URL scheme they would refuse: that error gets its file and line here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

from prober.config.model_fields import TemplateStr, UrlTemplateStr
from prober.config.templates import Template

# gRPC custom metadata: lower-case ASCII names (HTTP/2 wants them so), not gRPC's own nor
# HTTP/2's; binary (`-bin`) metadata is not supported.
_METADATA_NAME = re.compile(r"[0-9a-z_.\-]+")
_RESERVED_METADATA = frozenset({"content-type", "te", "user-agent", "host", "connection"})
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):\d{1,5}")
_WS_SCHEMES = ("ws", "wss")


def _metadata_names(value: Any) -> Any:
    """Names lower-cased (gRPC metadata names are case-insensitive), then checked."""
    if not isinstance(value, dict):
        return value
    named: dict[Any, Any] = {}
    for name, text in value.items():
        key = name.lower() if isinstance(name, str) else name
        if isinstance(key, str):
            if not _METADATA_NAME.fullmatch(key) or key.endswith("-bin"):
                raise ValueError(
                    f"metadata {name!r}: a name is letters, digits, '-', '_' or '.'"
                    " (binary '-bin' metadata is not supported)"
                )
            if key.startswith("grpc-") or key in _RESERVED_METADATA:
                raise ValueError(f"metadata {name!r} is gRPC's or HTTP/2's own")
        named[key] = text
    return named


def _host_port(value: str) -> str:
    if not _HOST_PORT.fullmatch(value):
        raise ValueError(f"{value!r}: expected HOST:PORT (IPv6 as [::1]:PORT)")
    return value


def _ws_url(template: Template) -> Template:
    """A ws:// or wss:// URL with a host, as far as the file itself says (placeholders
    filled with a harmless value); a URL that is all placeholder is checked when sent."""
    sample = template.render(dict.fromkeys(template.names, "x"))
    if template.names and template.source.startswith("${"):
        return template
    parts = urlsplit(sample)
    if parts.scheme.lower() not in _WS_SCHEMES:
        raise ValueError("expected a ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return template


GrpcTarget = Annotated[str, AfterValidator(_host_port)]
GrpcMetadata = Annotated[dict[str, TemplateStr], BeforeValidator(_metadata_names)]
WsUrl = Annotated[UrlTemplateStr, AfterValidator(_ws_url)]
