"""The rules between config keys, and the risks warned about at start.

A rule is called with the values of the keys it names (once they all parsed) and
returns a problem or None. A risk is a setting that works but puts something at
stake (special addresses allowed, a password sent in clear): yaim starts, and
says so.

Pure module: it reads nothing.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import urlsplit

from yaim.config_values import IFNAMSIZ, IPNetwork, brief, some
from yaim.names import shown
from yaim.redact import mask_url, url_password
from yaim.view import Endpoint

# --- rules between keys: called with the named keys' values, return a problem or None ---


def _ttl_covers_interval(ttl: int, interval: int) -> Optional[str]:
    """Three refreshes per TTL, so one late or lost refresh never lets a mark expire."""
    if ttl < 3 * interval:
        return f"must be at least 3 x interval ({3 * interval} ms), got {ttl}"
    return None


def _probe_within_interval(probe: int, interval: int) -> Optional[str]:
    """A take round probes once; it must not outlast the interval it runs in."""
    if probe >= interval:
        return f"must be less than interval ({interval} ms), got {probe}"
    return None


def _ahead_needs_the_probe(ahead: str, probe: int) -> Optional[str]:
    """Probing ahead gathers the conflict probe's evidence earlier: nothing without it."""
    if ahead == "on" and probe <= 0:
        return "on needs probe-timeout > 0: it probes ahead what the conflict probe would"
    return None


def _refresh_not_below_interval(refresh: int, interval: int) -> Optional[str]:
    """Announcements go out in the actuator's rounds: a shorter period is no period."""
    if 0 < refresh < interval:
        return f"must be 0 (off) or at least interval ({interval} ms), got {refresh}"
    return None


def _cert_with_key(cert: Optional[str], key: Optional[str]) -> Optional[str]:
    if (cert is None) != (key is None):
        return "must be given together with etcd-key-file (only one of them is set)"
    return None


def _password_with_user(password: Optional[str], user: Optional[str]) -> Optional[str]:
    if password is not None and user is None:
        return "is set but etcd-user is not"
    return None


def _label_fits(label: str, interface: str) -> Optional[str]:
    full = f"{interface}:{label}"
    if len(full.encode()) > IFNAMSIZ:
        return f"{brief(full)} is longer than {IFNAMSIZ} characters; shorten label (or interface)"
    return None


def _required_by(kind: str) -> Callable[[Any, str], Optional[str]]:
    """A rule: the key must be set when `checker-type` is `kind`."""

    def check(value: Any, checker: str) -> Optional[str]:
        if value is None and checker == kind:
            return f"required when checker-type is {kind}"
        return None

    return check


def _secret_for_failsafe(failsafe: str, secret_file: Optional[str]) -> Optional[str]:
    """No unauthenticated host may make a node keep or drop anything (yaim.peers)."""
    if failsafe == "on" and secret_file is None:
        return "needs peer-secret-file: the peers' messages are authenticated with it"
    return None


def _published_peer(peer_listen: Optional[str], failsafe: str) -> Optional[str]:
    """The others ask at this very address (yaim.view.Endpoint): no name, no wildcard."""
    if failsafe != "off" and peer_listen is not None and Endpoint.parse(peer_listen) is None:
        return (
            "must be IP:PORT ([IP]:PORT for IPv6) of this node's own address, which the"
            f" others ask at (no host name, no 0.0.0.0 or ::), got {brief(peer_listen)}"
        )
    return None


def _migrate_from_v2(migrate_from: Optional[str], dcs_type: str) -> Optional[str]:
    """A node that also honours the v2 layout moves to the v3 one (yaim.dcs.migrating):
    with dcs-type etcd it would be a v2 node twice over."""
    if migrate_from is not None and dcs_type != "etcd3":
        return (
            f"{migrate_from} needs dcs-type: etcd3 (a node moving from the v2 layout to the"
            f" v3 one), got dcs-type: {dcs_type}"
        )
    return None


def _ip_allowed(ip: Optional[Any], allowed: Tuple[IPNetwork, ...]) -> Optional[str]:
    """The one address of a vip-manager file must be one the pool would accept."""
    if ip is not None and allowed and not any(ip in network for network in allowed):
        return f"{ip} is outside allowed-networks ({some([str(n) for n in allowed], ', ')})"
    return None


class Rule(NamedTuple):
    """A rule and the keys whose values it is called with."""

    keys: Tuple[str, ...]  # field names; the problem is reported on the first
    check: Callable[..., Optional[str]]


RULES = (
    Rule(("dcs_migrate_from", "dcs_type"), _migrate_from_v2),
    Rule(("ttl", "interval"), _ttl_covers_interval),
    Rule(("probe_timeout", "interval"), _probe_within_interval),
    Rule(("probe_ahead", "probe_timeout"), _ahead_needs_the_probe),
    Rule(("announce_refresh", "interval"), _refresh_not_below_interval),
    Rule(("etcd_cert_file", "etcd_key_file"), _cert_with_key),
    Rule(("etcd_password", "etcd_user"), _password_with_user),
    Rule(("label", "interface"), _label_fits),
    Rule(("http_url", "checker_type"), _required_by("http")),
    Rule(("postgres_dsn", "checker_type"), _required_by("postgres")),
    Rule(("shell_command", "checker_type"), _required_by("shell")),
    Rule(("trigger_key", "checker_type"), _required_by("dcs-key")),
    Rule(("ip", "allowed_networks"), _ip_allowed),
    Rule(("failsafe", "peer_secret_file"), _secret_for_failsafe),
    Rule(("peer_listen", "failsafe"), _published_peer),
)


# --- risks: settings that work, but put something at risk; warned about at start ---


# The ranges behind ipaddress's is_unspecified, is_loopback, ... (what yaim.view refuses
# as pool addresses unless allowed-networks names them), as networks: those predicates
# say whether a whole network is special, not whether it holds a special address.
SPECIAL = tuple(
    (kind, ipaddress.ip_network(cidr))
    for kind, cidrs in (
        ("unspecified", "0.0.0.0/8 ::/128"),
        ("loopback", "127.0.0.0/8 ::1/128"),
        ("IPv4-mapped", "::ffff:0:0/96"),
        ("link-local", "169.254.0.0/16 fe80::/10"),
        ("multicast", "224.0.0.0/4 ff00::/8"),
        (
            "reserved",
            "240.0.0.0/4 ::/8 100::/8 200::/7 400::/6 800::/5 1000::/4 4000::/3 6000::/3"
            " 8000::/3 a000::/3 c000::/3 e000::/4 f000::/5 f800::/6 fe00::/9",
        ),
    )
    for cidr in cidrs.split()
)


def special_kinds(network: IPNetwork) -> List[str]:
    """The kinds of special address (loopback, multicast, ...) a network holds any of."""
    found = (
        kind
        for kind, special in SPECIAL
        if special.version == network.version and network.overlaps(special)
    )
    return list(dict.fromkeys(found))


def _and(words: List[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join(filter(None, (", ".join(words[:-1]), words[-1])))


class Risk(NamedTuple):
    """A warning, and the key (field name) it is about."""

    key: str
    warning: str


def risks(values: Mapping[str, Any]) -> List[Risk]:
    """The risks of these parsed values: special addresses allowed, credentials sent in clear."""
    found = []
    for network in values["allowed_networks"]:
        kinds = special_kinds(network)
        if kinds:
            risk = f"{network} holds {_and(kinds)} addresses: yaim will put them on the interface"
            found.append(Risk("allowed_networks", risk))
    plain = [shown(url) for url in values["dcs_endpoints"] if urlsplit(url).scheme == "http"]
    if values["etcd_user"] is not None and plain:
        risk = f"etcd-password is sent in clear to {some(plain, ', ')}; use https:// endpoints"
        found.append(Risk("etcd_user", risk))
    url = values["http_url"] if values["checker_type"] == "http" else None
    if url and url_password(url) and urlsplit(url).scheme == "http":
        risk = f"its password is sent in clear to {shown(mask_url(url))}; use https://"
        found.append(Risk("http_url", risk))
    failsafe = values["failsafe"]
    wanted = failsafe == "on" or (failsafe == "auto" and values["peer_secret_file"])
    if wanted and values["probe_timeout"] <= 0:
        risk = (
            "off: it needs probe-timeout > 0, as the conflict probe is what holds off a node"
            " that knows nothing of the peers' promises"
        )
        found.append(Risk("failsafe", risk))
    return found
