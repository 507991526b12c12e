"""The frame of the one-step probes that do not speak HTTP (tcp, dns, grpc, websocket).

A failure is raised as `ProbeFailure` where it is understood, the target's name is resolved
with the check's ip_protocol, and the step becomes the Outcome with its message redacted.
The runner's deadline bounds the work: the probe tells the recorder what it is doing and how
to end the step, so a timeout still names the phase and keeps the phases reached.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

from prober.config.model import IpProtocol
from prober.probes.context import FAMILIES, ProbeContext, family_mismatch, out_of_descriptors
from prober.result import Outcome, Reason, StepResult

# (family, sockaddr) as getaddrinfo gives them.
Address = tuple[
    socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
]
# The step as far as it got, given why it ended (None: it passed) and the message.
StepEnd = Callable[[Reason | None, str], StepResult]


class ProbeFailure(Exception):
    """Ends the run with a reason; raised where the failure is understood."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def run_one_step(
    ctx: ProbeContext, name: str, work: Awaitable[None], end: StepEnd, stage: Callable[[], str]
) -> Outcome:
    """Do the step's work; a ProbeFailure is its failure. The step is the attempt's Outcome.

    Until the work is over the recorder knows how to end the step (`end`, redacted) and what
    it is doing (`stage`), for the runner to use if it cuts the attempt short.
    """

    def ended(reason: Reason | None, message: str) -> StepResult:
        step = end(reason, message)
        return replace(step, message=ctx.redactor(step.message))

    ctx.recorder.begin(name, finish=ended, stage=stage)
    try:
        await work
    except ProbeFailure as exc:
        step = ended(exc.reason, str(exc))
    else:
        step = ended(None, "")
    ctx.recorder.done(step)
    if step.reason is None:
        return Outcome((step,))
    return Outcome((step,), step.reason, step.message, step.name)


async def resolve(
    host: str, port: int, ip_protocol: IpProtocol, kind: socket.SocketKind, what: str
) -> list[Address]:
    """The addresses of `host` in the ip_protocol's family; failures have Reason.DNS.

    `what` names the host in the message ("server ns1", "ns1").
    """
    mismatch = family_mismatch(host, ip_protocol)
    if mismatch:
        raise ProbeFailure(Reason.DNS, mismatch)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=FAMILIES[ip_protocol], type=kind)
    except socket.gaierror as exc:
        raise ProbeFailure(Reason.DNS, f"cannot resolve {what}: {exc.strerror}") from None
    except OSError as exc:  # EAI_SYSTEM: getaddrinfo's own system call failed
        reason = Reason.RESOURCE if out_of_descriptors(exc) else Reason.DNS
        raise ProbeFailure(reason, f"cannot resolve {what}: {exc.strerror}") from None
    return [(info[0], info[4]) for info in infos]
