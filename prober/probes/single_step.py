"""The frame of the one-step probes that do not speak HTTP (tcp, dns).

A failure is raised as `ProbeFailure` where it is understood, the work runs within the run's
deadline, the target's name is resolved with the check's ip_protocol, and the finished step
becomes the run's Result with its message redacted.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace

from prober.config.model import IpProtocol
from prober.probes.context import FAMILIES, ProbeContext, family_mismatch, out_of_descriptors
from prober.result import Reason, Result, StepResult

# (family, sockaddr) as getaddrinfo gives them.
Address = tuple[
    socket.AddressFamily, tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]
]
# (reason, message) of a step; no reason means it succeeded.
Judgement = tuple[Reason | None, str]


class ProbeFailure(Exception):
    """Ends the run with a reason; raised where the failure is understood."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def within_deadline(
    ctx: ProbeContext, work: Awaitable[Judgement], stage: Callable[[], str]
) -> Judgement:
    """Await the step's work until the run's deadline; a timeout or ProbeFailure is its judgement.

    `stage` says what the step was doing, for the timeout message.
    """
    try:
        async with asyncio.timeout_at(ctx.deadline):
            return await work
    except TimeoutError:
        return Reason.TIMEOUT, f"deadline reached while {stage()}"
    except ProbeFailure as exc:
        return exc.reason, str(exc)


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


def finish_run(check_name: str, started_at: float, step: StepResult, ctx: ProbeContext) -> Result:
    """The run's Result from its one step, secrets redacted; the step joins `ctx.progress`.

    Assertion values are redacted where they are made (`shown(text, ctx.redactor)`).
    """
    step = replace(step, message=ctx.redactor(step.message))
    ctx.progress.append(step)
    ctx.current_step = ""
    return Result(
        check=check_name,
        success=step.success,
        duration=step.duration,
        started_at=started_at,
        reason=step.reason,
        message=step.message,
        failed_step="" if step.success else step.name,
        steps=tuple(ctx.progress),
    )
