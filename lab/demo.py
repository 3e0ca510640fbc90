"""`python -m lab.demo` (as root, from the repo root): three yaim nodes share six
addresses through one etcd; one node crashes and the others take its addresses over.

Everything runs in throw-away network namespaces and is torn down at the end, also
on failure or Ctrl-C.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import time
from collections import Counter
from contextlib import ExitStack
from typing import Callable, List, NoReturn

from lab.daemon import YaimNode, dump_logs, start_nodes
from lab.etcd import EtcdCluster
from lab.netns import HUB_DCS, Lab
from lab.observer import Holders, Observer

INTERVAL, TTL = 1000, 3000
POOL = [ipaddress.ip_address(f"198.51.100.{100 + i}") for i in range(6)]
SETTLE_TIMEOUT = 30.0
FAILOVER_BOUND = (TTL + 2 * INTERVAL) / 1000 + 1


def spread_over(nodes: List[YaimNode]) -> Callable[[Holders], bool]:
    """A predicate: every pool address on exactly one of `nodes`, evenly spread.
    Raises at once if one of them has exited."""
    indexes = [n.i for n in nodes]

    def check(holders: Holders) -> bool:
        dead = [n.name for n in nodes if not n.running]
        if dead:
            raise RuntimeError("yaim exited on " + ", ".join(dead))
        owners = [holders.get(a, []) for a in POOL]
        if any(len(o) != 1 or o[0] not in indexes for o in owners):
            return False
        counts = Counter(o[0] for o in owners)
        spread = [counts.get(i, 0) for i in indexes]
        return max(spread) - min(spread) <= 1

    return check


def print_table(holders: Holders) -> None:
    print("  {:<16}| holder".format("address"))
    for address in POOL:
        names = ",".join(f"n{n}" for n in holders.get(address, [])) or "-"
        print(f"  {address!s:<16}| {names}")


def run(stack: ExitStack) -> None:
    lab = stack.enter_context(Lab(nodes=3))
    print(f"lab {lab.prefix}: nodes n1 n2 n3 on lan 198.51.100.0/24, etcd on {HUB_DCS}:2379")
    etcd = stack.enter_context(
        EtcdCluster(netns=lab.hub, host=HUB_DCS, base_dir=lab.base_dir / "etcd")
    )
    observer = stack.enter_context(Observer(lab))
    stack.callback(lab.stop_processes)
    nodes: List[YaimNode] = []
    try:
        nodes += start_nodes(lab, etcd.endpoints, interval=INTERVAL, ttl=TTL)
        print(f"started yaim on n1 n2 n3 (interval {INTERVAL} ms, ttl {TTL} ms)")
        for address in POOL:
            url = f"http://{HUB_DCS}:2379/v2/keys/service/yaim/ips/{address}"
            args = ["-s", url, "-XPUT", "-d", "dir=true"]
            print("$ curl " + " ".join(args))
            lab.curl(*args)
        observer.wait_for(spread_over(nodes), SETTLE_TIMEOUT, "the pool to settle 2/2/2")
        print_table(observer.holders())

        victim, survivors = nodes[1], [nodes[0], nodes[2]]
        print(f"crashing {victim.name} (links down + SIGKILL) ...")
        crashed_at = time.monotonic()
        victim.crash()
        sample = observer.wait_for(
            spread_over(survivors), FAILOVER_BOUND + 10, "n1 and n3 to take over"
        )
        print_table(sample.holders)
        took = sample.time - crashed_at
        print(f"failover took {took:.1f} s (bound: ttl + 2 x interval + 1 s = {FAILOVER_BOUND} s)")
        if observer.violations:
            raise RuntimeError(f"two holders seen: {observer.violations[:3]}")
    except Exception:
        print(dump_logs(nodes, lines=15) + etcd.logs(lines=15), file=sys.stderr)
        raise


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main() -> int:
    if os.geteuid() != 0:
        print("demo: needs root (it builds network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            run(stack)
    except KeyboardInterrupt:
        print("interrupted; lab torn down", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print("lab torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
