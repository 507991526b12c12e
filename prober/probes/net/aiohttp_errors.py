"""aiohttp's failures as a bounded Reason and a message a person can read.

aiohttp's own texts carry Python reprs (`ssl:<ssl.SSLContext object at 0x...>`,
`TooManyRedirects: 0, message=''`); these messages say what happened, where, and why.
"""

from __future__ import annotations

import errno
import os
import ssl

import aiohttp

from prober.probes.context import out_of_descriptors
from prober.probes.http_judge import MAX_REDIRECTS
from prober.probes.net.request import error_message, without_urls
from prober.probes.net.tls import tls_reason
from prober.result import Reason


def classify(exc: BaseException) -> Reason:
    """Map an aiohttp/OS failure to a bounded reason."""
    if out_of_descriptors(exc):
        return Reason.RESOURCE
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return tls_reason(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return tls_reason(exc)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Reason.DNS
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return Reason.CONNECT_REFUSED
        return Reason.CONNECT_ERROR
    reset = isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError)
    if reset or _reset_mid_body(exc):
        return Reason.RESET
    if isinstance(exc, aiohttp.ClientOSError):
        return Reason.RESET if exc.errno in (errno.ECONNRESET, errno.EPIPE) else Reason.ERROR
    if isinstance(
        exc, aiohttp.TooManyRedirects | aiohttp.ClientResponseError | aiohttp.ClientPayloadError
    ):
        return Reason.PROTOCOL
    return Reason.ERROR


def _reset_mid_body(exc: BaseException) -> bool:
    """Whether the body was cut by a reset connection, not by a clean close.

    aiohttp keeps the connection's error only in the payload error's text (its cause is the
    parser's "not completed"); the lean path reports the same cut as `reset`.
    """
    return isinstance(exc, aiohttp.ClientPayloadError) and "ConnectionResetError" in str(exc)


def _os_text(error: OSError) -> str:
    if isinstance(error, ConnectionResetError) and not error.strerror:
        return "connection reset by peer"
    if error.strerror:
        return error.strerror
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


def describe(exc: BaseException) -> str:
    """What went wrong, without reprs; URLs in it shown without secrets (error_message)."""
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects ({MAX_REDIRECTS})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        why = getattr(cert, "verify_message", None) or getattr(cert, "reason", None) or cert
        return f"certificate of {exc.host}:{exc.port} not accepted: {why}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}: {_os_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"tls handshake with {exc.host}:{exc.port} failed: {_ssl_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {_os_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected before it answered"
    if isinstance(exc, ssl.SSLError):
        return f"tls failed: {_ssl_text(exc)}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return without_urls(f"invalid response: {exc.message or exc.status}")
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection failed: {_os_text(exc)}"
    return error_message(exc)


def _ssl_text(error: OSError) -> str:
    reason = getattr(error, "reason", None)
    return str(reason).lower().replace("_", " ") if reason else _os_text(error)
