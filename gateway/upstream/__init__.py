"""Upstream adapters: how the gateway calls one instance.

`call_upstream` is the only entry point; it dispatches on the instance's provider
and returns an UpstreamResponse (whole body) or an UpstreamStream (first chunk
already read, so failover can still happen before the client sees a byte), or
raises UpstreamFailure.
"""

from __future__ import annotations

from gateway.upstream.base import UpstreamFailure, UpstreamResponse, UpstreamStream, call_upstream

__all__ = ["UpstreamFailure", "UpstreamResponse", "UpstreamStream", "call_upstream"]
