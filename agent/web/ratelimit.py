"""Per-client rate limits on the local API's state-changing requests.

A token bucket per client address: ``web.rate_limit_burst`` requests at once, then
``web.rate_limit_per_s`` a second. A POST, PUT, PATCH or DELETE over the limit is answered
429 with ``Retry-After`` and the usual ``{"error", "message"}`` body; reads (the pages, their
event streams, ``/healthz``, ``/metrics``) are never limited, so the hall's screens stay
served while one client floods. The addresses in ``web.rate_limit_exempt`` (by default the
Pi itself: its CLI and kiosk browser) are not limited.

:class:`RateLimit` is plain ASGI middleware around the whole app, so it runs before any
route (and before any authentication a route has).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LIMITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Clients tracked at most; the ones idle longest are forgotten first (a full bucket).
MAX_CLIENTS = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    refused: int = 0  # requests refused since this client went over the limit


class TokenBuckets:
    """One token bucket per key, with a clock of its own."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_keys: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when ``key`` may go ahead (a token taken), else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s
            )
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            if bucket.refused:
                log.info(
                    "client %s is within the rate limit again; %d requests were refused",
                    key,
                    bucket.refused,
                )
                bucket.refused = 0
            return 0.0
        if bucket.refused == 0:
            log.warning(
                "client %s sends more than %d requests at once or %s a second "
                "(web.rate_limit_burst, web.rate_limit_per_s); its changes are refused with "
                "429 until it slows down",
                key,
                self.burst,
                f"{self.rate_per_s:g}",
            )
        bucket.refused += 1
        return (1 - bucket.tokens) / self.rate_per_s


class RateLimit:
    """ASGI middleware: :class:`TokenBuckets` by client address for state-changing
    requests."""

    def __init__(
        self,
        app: ASGIApp,
        rate_per_s: float,
        burst: int,
        exempt: Iterable[Network] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.buckets = TokenBuckets(rate_per_s, burst, clock=clock)
        self.exempt = tuple(exempt)
        self._exempt_cache: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in LIMITED_METHODS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = str(client[0]) if client else ""
        if self._is_exempt(host):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(host)
        if wait == 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        body = json.dumps(
            {
                "error": "rate_limited",
                "message": (
                    f"too many changes from {host}: at most {self.buckets.burst} at once and "
                    f"{self.buckets.rate_per_s:g} a second; try again in {retry} s"
                ),
            },
            ensure_ascii=False,
        ).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _is_exempt(self, host: str) -> bool:
        known = self._exempt_cache.get(host)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            exempt = False
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket
            exempt = any(address in network for network in self.exempt)
        if len(self._exempt_cache) >= MAX_CLIENTS:
            self._exempt_cache.clear()
        self._exempt_cache[host] = exempt
        return exempt
