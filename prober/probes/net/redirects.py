"""Credentials stay at their origin when a request follows redirects.

aiohttp drops Authorization, Cookie and Proxy-Authorization on a redirect to another origin
but sends every other header on; `RedirectGuard`, a per-request client middleware, drops
the rest of a request's own headers too once a hop leaves the first request's origin.
"""

from __future__ import annotations

import aiohttp

from prober.config.model import NEVER_REDIRECTED, RequestSpec

# Standard headers that carry no credential and follow a redirect to any origin.
FOLLOW_ANYWHERE = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-type",
        "content-language",
        "user-agent",
    }
)


def redirect_guard(spec: RequestSpec) -> tuple[RedirectGuard, ...]:
    """The middleware that guards this request's redirects, when it has headers to guard."""
    if not spec.follow_redirects:
        return ()
    guarded = {name.lower() for name in spec.headers} - FOLLOW_ANYWHERE - NEVER_REDIRECTED
    if spec.hostname is None and not guarded - set(spec.redirect_headers):
        return ()  # aiohttp itself drops Authorization, Cookie and Proxy-Authorization
    return (RedirectGuard(spec),)


class RedirectGuard:
    """A client middleware that keeps a request's credentials at their origin.

    aiohttp drops Authorization and Cookie on a redirect to another origin but sends every
    other header on, an X-Api-Key too. From the first hop that leaves the first request's
    origin on, only standard headers and those named in `redirect_headers` go on; a Host
    set by `hostname` becomes the new target's.
    """

    def __init__(self, spec: RequestSpec) -> None:
        configured = {name.lower() for name in spec.headers}
        kept = FOLLOW_ANYWHERE | set(spec.redirect_headers)
        self._dropped = ((configured - kept) | NEVER_REDIRECTED) - {"host"}
        self._own_host = spec.hostname is not None
        self._origin: object = None
        self._left = False

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        origin = request.url.origin()
        if self._origin is None:
            self._origin = origin
        elif origin != self._origin:
            self._left = True
        if self._left:
            for name in self._dropped:
                request.headers.popall(name, None)
            host = request.url.host_port_subcomponent
            if self._own_host and host is not None:
                request.headers["Host"] = host
        return await handler(request)
