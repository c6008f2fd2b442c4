"""The egress policy: which addresses the gateway may call upstream.

The rules (plain Python, no Django; the setting is read by the callers):

- Link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata
  endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200, 168.63.129.16,
  `metadata.google.internal`, ...) are refused ALWAYS: an upstream URL is no
  way to read an instance's credentials. So are the unspecified address
  (0.0.0.0, ::, which reach the local host), multicast and the other reserved
  ranges no server lives in.
- Loopback (127.0.0.0/8, ::1, `localhost`) and private networks (10/8,
  172.16/12, 192.168/16, fc00::/7, 100.64/10, ...: every address that is not
  globally routable) are allowed only when `allow_private` is on:
  GATEWAY_EGRESS_ALLOW_PRIVATE, on in embedded mode (`make run`, where the
  simulator and local model servers live), a deliberate choice in production.
- A base URL is an origin and a path: http(s) only, no user:password@ (the key
  has its own write-only field), no query string and no fragment (the gateway
  appends `/chat/completions` to it; a `?` or `#` would move that into the
  query and let the base URL choose the upstream path).

Save time checks the URL's text (an IP literal in any spelling inet_aton
accepts, and the well-known local and metadata names); connect time checks
every address the upstream's name resolves to, and connects only to an
allowed one (gateway/upstream/http.py), so a name that resolves to a refused
address, or changes to one later, is caught there.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "GATEWAY_EGRESS_ALLOW_PRIVATE"

# Refused whatever the setting says.
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle...
        "169.254.170.2",  # AWS ECS task credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: Address) -> Address:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address (the one actually reached)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def address_problem(address: Address | str, *, allow_private: bool) -> str | None:
    """Why the policy refuses this address, or None when it may be called."""
    ip = _embedded_ipv4(ipaddress.ip_address(address) if isinstance(address, str) else address)
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address, always refused"
    if any(ip in network for network in _LINK_LOCAL):
        return f"{ip} is a link-local address, always refused"
    if (
        ip.is_unspecified or ip.is_multicast or (ip.version == 4 and ip.is_reserved)
    ):  # 240/4, broadcast
        return f"{ip} is not an address an upstream can have"
    if ip.is_global:
        return None
    if allow_private:
        return None
    kind = "a loopback" if ip.is_loopback else "a private (not globally routable)"
    return f"{ip} is {kind} address; set {SETTING}=1 to allow loopback and private networks"


def _literal_address(host: str) -> Address | None:
    """The address a host written as an IP literal means, in any spelling the resolver
    accepts (127.1, 0x7f000001, 2130706433 all reach 127.0.0.1)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_problem(host: str, *, allow_private: bool) -> str | None:
    """Why the policy refuses this host as written (before any DNS lookup), or None."""
    host = host.strip("[]").rstrip(".").lower()
    address = _literal_address(host.split("%", 1)[0])
    if address is not None:
        return address_problem(address, allow_private=allow_private)
    if host in METADATA_NAMES:
        return f"{host} is a cloud metadata name, always refused"
    if host == "localhost" or host.endswith(".localhost"):
        return (
            None
            if allow_private
            else (
                f"{host} is a loopback name; set {SETTING}=1 to allow loopback and private networks"
            )
        )
    return None


def base_url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why this base URL is refused, or None. Checks the text only (no DNS lookup)."""
    if "?" in url or "#" in url:
        return (
            "A base URL cannot hold a query string or a fragment ('?' or '#'): the gateway appends "
            "the path to it."
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "Not a valid URL."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "A base URL starts with http:// or https:// and names a host."
    if "@" in parts.netloc or "\\" in url:
        return "A base URL cannot hold user:password@; put the credential in the API key field."
    problem = host_problem(parts.hostname, allow_private=allow_private)
    return f"The egress policy refuses this host: {problem}." if problem else None
