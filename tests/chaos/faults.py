"""The fault kinds: each injects one fault, lets it play, heals it, and returns its record.

Every random choice comes from the run's seeded generator, so a seed replays the
same schedule (the cluster's timing, and so who holds what, still varies a little).
Faults that leave the DCS working may edit the pool in the middle of the fault.
"""

from __future__ import annotations

import contextlib
import random
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, NamedTuple, Set, Tuple

from lab.observer import Holders, format_holders
from lab.rtnl import IPAddress
from lab.util import wait_until
from tests.chaos.analysis import first_move, full_share
from tests.chaos.model import CLEAN, HARD, UNHEALTHY, Fault
from tests.chaos.world import MEMBERS, SIGTERM_EXIT, World, format_addresses
from yaim.claims import fence_margin

EDIT_CHANCE = 0.35


def begin(world: World, kind: str, fault_class: str, detail: str = "") -> Fault:
    fault = Fault(kind, fault_class, world.now(), detail)
    world.timeline.faults.append(fault)
    return fault


def play(world: World, rng: random.Random, fault: Fault, seconds: float) -> None:
    """Let the fault last `seconds`; maybe edit the pool somewhere in the middle."""
    if rng.random() >= EDIT_CHANCE:
        world.sleep(seconds)
        return
    first = rng.uniform(0, seconds)
    world.sleep(first)
    fault.detail += f" pool {world.edit_pool(rng)}"
    world.sleep(seconds - first)


def victims(world: World, rng: random.Random, most: int = 1) -> List[int]:
    count = rng.randint(1, most)
    return sorted(rng.sample(list(world.lab.node_indexes), count))


def names(nodes: List[int]) -> str:
    return ",".join(f"n{i}" for i in nodes)


# Figures: seconds from the kill until each of the victims' addresses was held by
# another node (the slowest of them), after a SIGKILL (its cleanup hook hands them over)
# and after a crash (their marks expire: the crash failover).
TAKEN_OVER = {"sigkill": "SIGKILL until held by another", "crash": "crash until held by another"}


def _own(world: World, nodes: List[int]) -> Set[IPAddress]:
    """The addresses that only `nodes` hold now."""
    return {a for a, holders in world.holders().items() if set(holders) <= set(nodes)}


def _taken_over(world: World, fault: Fault, nodes: List[int], addresses: Set[IPAddress]) -> None:
    """Note TAKEN_OVER[fault.kind]: from the samples since the kill at `fault.start`,
    waiting up to the crash bound from it. An address a victim held again itself, or
    that left the pool meanwhile, is not counted (the invariants judge those)."""

    def firsts() -> Dict[IPAddress, float]:
        times: Dict[IPAddress, float] = {}
        for sample in world.observer.window(fault.start, world.now()):
            for address in addresses - set(times):
                on = sample.holders.get(address, ())
                if len(on) == 1 and on[0] not in nodes:
                    times[address] = sample.time
        return times

    left = fault.start + world.bounds.crash - world.now()
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: len(firsts()) == len(addresses), max(0.0, left), interval=0.1)
    times = firsts()
    if times:
        slowest = max(times.values()) - fault.start
        context = f"{names(nodes)}, {len(times)} of {len(addresses)} addresses"
        world.ledger.note(TAKEN_OVER[fault.kind], slowest, context)


def sigkill(world: World, rng: random.Random) -> Fault:
    """SIGKILL with the links up, then the service manager's post-stop `yaim --cleanup`
    (as the packaged unit runs it), and a restart a little later."""
    nodes = victims(world, rng, most=2)
    down = rng.uniform(0.5, 4.0)
    mine = _own(world, nodes)
    fault = begin(world, "sigkill", HARD, f"{names(nodes)} for {down:.1f}s")
    for i in nodes:
        world.stopped.add(i)
        world.nodes[i].signal(signal.SIGKILL)
    for i in nodes:
        world.nodes[i].wait_exit(5)
        ok = world.cleanup_hook(i)
        world.ledger.check("yaim --cleanup exits 0", ok, f"n{i}: cleanup failed", world.now())
        world.timeline.stopped.begin(i, world.now())
    play(world, rng, fault, fault.start + down - world.now())
    for i in nodes:
        world.start(i)
    _taken_over(world, fault, nodes, mine)
    return fault


def crash(world: World, rng: random.Random) -> Fault:
    """The machine dies: SIGKILL and both links down; it reboots later."""
    (i,) = victims(world, rng)
    down = rng.uniform(1.0, 8.0)
    mine = _own(world, [i])
    fault = begin(world, "crash", HARD, f"n{i} for {down:.1f}s")
    world.cut.add(i)
    world.stopped.add(i)
    world.nodes[i].crash()
    world.nodes[i].wait_exit(5)
    play(world, rng, fault, down)
    world.reboot(i)
    _taken_over(world, fault, [i], mine)
    return fault


def _terminate(world: World, i: int) -> None:
    """SIGTERM node i: everything released at once, exit 0 within about a second."""
    sent = world.now()
    world.stopped.add(i)
    world.nodes[i].signal(signal.SIGTERM)
    code = world.nodes[i].wait_exit(10)
    took = world.now() - sent
    world.timeline.stopped.begin(i, world.now())
    world.ledger.note("SIGTERM exit", took, f"n{i}")
    world.ledger.check(
        f"SIGTERM: exit 0 within {SIGTERM_EXIT:.0f} s",
        code == 0 and took <= SIGTERM_EXIT,
        f"n{i} exited with {code} after {took:.2f} s",
        world.now(),
    )


def sigterm(world: World, rng: random.Random) -> Fault:
    """SIGTERM (`_terminate`); restart later."""
    (i,) = victims(world, rng)
    fault = begin(world, "sigterm", CLEAN, f"n{i}")
    _terminate(world, i)
    play(world, rng, fault, rng.uniform(0.5, 3.0))
    world.start(i)
    return fault


DROPPED = re.compile(r"(?:fenced|fencing|released) (\S+) on node ")
LOG_TIME = "%Y-%m-%d %H:%M:%S"


def log_since(node, wall: float) -> List[Tuple[float, str]]:
    """(wall time, message) of the node's log lines from `wall` (time.time()) on."""
    found = []
    for line in node.log().splitlines():
        stamp, _, rest = line[:23], line[23:24], line[24:]
        try:
            when = time.mktime(time.strptime(stamp[:19], LOG_TIME)) + int(stamp[20:23]) / 1000
        except ValueError:
            continue
        if when >= wall - 0.001:
            found.append((when, rest))
    return found


# The analyser lets an address be on a SIGSTOPped node and another (a stopped process
# removes nothing); yet its kernel answers for its addresses, so the conflict probe and
# the lookout (probe-ahead) must keep every other node off them: checked by `pause`.
PAUSED_KEPT = "a SIGSTOPped holder's addresses are taken by nobody while its kernel answers"


def pause(world: World, rng: random.Random) -> Fault:
    """SIGSTOP for longer than the TTL, then SIGCONT: the paused node's addresses stay in
    its kernel meanwhile, which answers for them, so nobody takes them (PAUSED_KEPT);
    once continued it must drop every one of them (their fence times have all passed)
    before it does anything else. How long that takes comes from the node's own log:
    the observer may never see an address gone that the node takes again a moment
    later."""
    (i,) = victims(world, rng)
    length = world.bounds.ttl + rng.uniform(0.5, 3.0)
    fault = begin(world, "pause", HARD, f"n{i} for {length:.1f}s")
    held = {str(a) for a in world.held_by(i)}
    world.paused.add(i)
    world.timeline.paused.begin(i, world.now())
    world.nodes[i].signal(signal.SIGSTOP)
    play(world, rng, fault, length)
    # Before the signal: the node may drop its addresses before this process runs again.
    resumed, wall = world.now(), time.time()
    world.nodes[i].signal(signal.SIGCONT)
    world.timeline.paused.end(i, resumed)
    world.paused.discard(i)

    def dropped() -> Dict[str, float]:
        times: Dict[str, float] = {}
        for when, message in log_since(world.nodes[i], wall):
            found = DROPPED.search(message)
            if found and found.group(1) in held:
                times.setdefault(found.group(1), when)
        return times if set(times) == held else {}

    try:
        times = wait_until(dropped, 5.0, what=f"n{i} to drop {sorted(held)}") if held else {}
    except TimeoutError:
        times = {}
    last = max(times.values(), default=wall)
    took_first = [m for when, m in log_since(world.nodes[i], wall) if when < last and " took " in m]
    world.ledger.note("SIGCONT drop", last - wall, f"n{i}, {len(times)} of {len(held)} addresses")
    taken = [
        (sample.time, address, on)
        for sample in world.observer.window(fault.start, world.now())
        for address, on in sample.holders.items()
        if i in on and len(on) > 1
    ]
    text = ""
    if taken:
        when, address, on = taken[0]
        text = f"{address} on {names(on)} {when - fault.start:.2f} s after n{i} was stopped"
    world.ledger.check(PAUSED_KEPT, not taken, text, resumed)
    world.ledger.check(
        f"after SIGCONT every expired address dropped first, within {world.bounds.sigcont} s",
        set(times) == held and last - wall <= world.bounds.sigcont and not took_first,
        f"n{i} dropped {sorted(times)} of {sorted(held)} in {last - wall:.2f} s"
        + (f", after: {took_first[0]}" if took_first else ""),
        resumed,
    )
    return fault


def flap(world: World, rng: random.Random) -> Fault:
    """The health endpoint flaps; the last failing stretch outlasts the unhealthy bound,
    and then the node must hold nothing and have no node key."""
    (i,) = victims(world, rng)
    flaps = rng.randint(2, 5)
    fault = begin(world, "flap", UNHEALTHY, f"n{i} x{flaps}")
    for n in range(flaps):
        last = n == flaps - 1
        world.set_health(i, False)
        if last:
            play(world, rng, fault, world.bounds.unhealthy + rng.uniform(0.3, 1.5))
            nodes = world.keys().nodes()
            world.ledger.check(
                "no node key for an unhealthy node",
                world.name(i) not in nodes,
                f"n{i} unhealthy for {world.bounds.unhealthy:.1f}s+ but its node key is there",
                world.now(),
            )
        else:
            world.sleep(rng.uniform(0.2, 2.0))
        world.set_health(i, True)
        world.sleep(rng.uniform(0.2, 2.0))
    return fault


def dcs_cut(world: World, rng: random.Random) -> Fault:
    """A node's link to etcd goes down and comes back."""
    (i,) = victims(world, rng)
    length = rng.uniform(0.5, 6.0)
    fault = begin(world, "dcs-cut", HARD, f"n{i} for {length:.1f}s")
    world.cut.add(i)
    world.lab.link(i, "dcs0", up=False)
    cut = world.now()
    play(world, rng, fault, length)
    restored = world.now()
    world.lab.link(i, "dcs0", up=True)
    world.cut.discard(i)
    world.check_fenced([i], cut, restored, "its DCS link went down")
    return fault


HISTORY = "a pool change made while a watch was away and its events were lost takes effect"


def history_lost(world: World, rng: random.Random) -> Fault:
    """A node's watch breaks (its etcd link down for a moment), one of its addresses leaves
    the pool meanwhile and etcd drops the events since (v3 compacts its history, v2 goes
    past the 1000 events it keeps): the watch cannot go on where it was, the node lists
    the cluster again, and the address goes from it too."""
    (i,) = victims(world, rng)
    mine = world.held_by(i)
    if not mine or len(world.pool) <= 10:
        world.add_address(world.spare.pop(rng.randrange(len(world.spare))))
        world.sleep(1.0)
        mine = world.held_by(i)
    fault = begin(world, "history-lost", HARD, f"n{i}")
    world.cut.add(i)
    world.lab.link(i, "dcs0", up=False)
    address = rng.choice(mine) if mine else None
    if address is not None:
        world.remove_address(address)
        fault.detail += f" pool -{address}"
    world.keys().lose_history()
    world.lab.link(i, "dcs0", up=True)
    world.cut.discard(i)
    if address is not None:
        bound = world.bounds.crash
        try:
            world.observer.wait_for(lambda h: not h.get(address), bound, f"{address} off n{i}")
            gone = True
        except TimeoutError:
            gone = False
        world.ledger.check(HISTORY, gone, f"{address} still on n{i}", world.now())
    return fault


def loss(world: World, rng: random.Random) -> Fault:
    """Packet loss (and delay, with netem) on a node's links."""
    (i,) = victims(world, rng)
    length = rng.uniform(4.0, 12.0)
    fault = begin(world, "loss", HARD, f"n{i} for {length:.1f}s")
    world.cut.add(i)
    world.lab.impair(i)
    play(world, rng, fault, length)
    world.lab.clear_impairment(i)
    world.cut.discard(i)
    return fault


LINK_EMPTY = "nothing on a node whose link is down, nor when it returns"


def _lan_empty(world: World, i: int, when: str) -> None:
    """Check that node i's lan0 has no pool address (the observer sees none on a lan0
    that is down or gone, so this looks at the interface itself)."""
    left = set(world.lab.addresses(i)) & world.pool
    text = f"n{i} has {sorted(map(str, left))} {when}" if left else ""
    world.ledger.check(LINK_EMPTY, not left, text, world.now())


def _service_link(
    world: World, rng: random.Random, kind: str, cut: Callable[[int], None], heal
) -> Fault:
    """Node i's service link (lan0) goes away for a while; its DCS link stays. It must
    take its addresses off and hand them over at once (its addresses are held elsewhere
    within the clean bound: the fault's class), and hold none until it is back."""
    (i,) = victims(world, rng)
    length = rng.uniform(1.0, 5.0)
    fault = begin(world, kind, CLEAN, f"n{i} for {length:.1f}s")
    world.cut.add(i)
    world.timeline.link_down.begin(i, world.now())
    cut(i)
    play(world, rng, fault, length)
    _lan_empty(world, i, "while its link is down")
    heal(i)
    _lan_empty(world, i, "when its link returns")
    world.timeline.link_down.end(i, world.now())
    world.cut.discard(i)
    return fault


def link_down(world: World, rng: random.Random) -> Fault:
    """`ip link set lan0 down` on a node, later up again."""
    lab = world.lab
    return _service_link(
        world, rng, "link-down", lambda i: lab.link(i, "lan0", up=False), lab.lan_up
    )


def carrier_lost(world: World, rng: random.Random) -> Fault:
    """The hub's end of a node's lan0 goes down: no carrier, lan0 itself stays up."""
    lab = world.lab
    return _service_link(
        world, rng, "carrier-lost", lambda i: lab.carrier(i, False), lambda i: lab.carrier(i, True)
    )


def interface_deleted(world: World, rng: random.Random) -> Fault:
    """A node's lan0 is deleted, and made again later (with no address but its own)."""
    lab = world.lab
    return _service_link(world, rng, "interface-deleted", lab.delete_lan, lab.create_lan)


FLAP_EVERY = 0.3  # seconds between a flapping link's changes


def link_flap(world: World, rng: random.Random) -> Fault:
    """A node's carrier flaps every FLAP_EVERY s for a few seconds: after the first drop
    nothing more may move until it stays up for link-rise."""
    (i,) = victims(world, rng)
    flaps = rng.randint(6, 16)
    fault = begin(world, "link-flap", CLEAN, f"n{i} x{flaps}")
    world.cut.add(i)
    world.timeline.link_down.begin(i, world.now())
    world.lab.carrier(i, False)
    up = True
    for _ in range(flaps):
        world.sleep(FLAP_EVERY)
        world.lab.carrier(i, up)
        up = not up
    world.lab.carrier(i, True)
    _lan_empty(world, i, "when its flapping link returns")
    world.timeline.link_down.end(i, world.now())
    world.cut.discard(i)
    return fault


MEMBER_LOST = "one etcd member lost changes nothing"
HOSTILE = "hostile keys change nothing"


def unchanged(world: World, before, since: float, what: str, rule: str = MEMBER_LOST) -> None:
    """Check (as `rule`) that the holders stayed `before` from `since` until now."""
    changed = [s for s in world.observer.window(since, world.now()) if s.holders != before]
    text = f"the holders changed {changed[0].time - since:.2f} s after {what}" if changed else ""
    world.ledger.check(rule, not changed, text, world.now())


def etcd_member(world: World, rng: random.Random) -> Fault:
    """A follower etcd member is killed and restarted: that changes nothing for the pool."""
    leader = world.leader()
    member = rng.choice([m for m in range(MEMBERS) if m != leader])
    length = rng.uniform(1.0, 5.0)
    before = world.at_rest()
    fault = begin(world, "etcd-member", HARD, f"m{member} for {length:.1f}s")
    world.etcd.stop_member(member, sig=signal.SIGKILL)
    world.sleep(length)
    world.etcd.start_member(member)
    unchanged(world, before, fault.start, f"m{member} died")
    return fault


def etcd_freeze(world: World, rng: random.Random) -> Fault:
    """An etcd member hangs (SIGSTOP: connections are accepted, nothing answers), then
    goes on, with the requests it took meanwhile. A hung follower changes nothing for
    the pool; a hung leader is as if killed until the others elect a new one, and once
    the pool has settled again its return must change nothing either.

    Found so (v2, CI and seed 7001): every node went into the failsafe hold; a node whose
    watch still waited on the hung leader kept its last look of the cluster, so the
    mark it had kept through the hold, expired meanwhile, was never made again and the
    address was fenced with etcd answering. The heartbeat's word now makes the balancer
    read (yaim.threads.watch.Behind)."""
    leader = world.leader()
    member = rng.randrange(MEMBERS)
    others = [m for m in range(MEMBERS) if m != member]
    length = rng.uniform(2.0, 6.0)
    role = "leader" if member == leader else "follower"
    before = world.at_rest()
    fault = begin(world, "etcd-freeze", HARD, f"{role} m{member} for {length:.1f}s")
    since = fault.start
    proc = world.etcd.members[member].proc
    if member == leader:
        world.timeline.dcs_down.begin("etcd", world.now())
    proc.send_signal(signal.SIGSTOP)
    if member == leader:
        world.timeline.dcs_down.end("etcd", world.wait_etcd(others))
        world.settle(fault)
        world.at_rest()
    world.sleep(fault.start + length - world.now())
    if member == leader:
        since, before = world.now(), world.holders()
    wall = time.time()
    proc.send_signal(signal.SIGCONT)
    world.wait_etcd(list(range(MEMBERS)))
    world.sleep(2 * world.bounds.ttl)  # what it kept is applied now, if ever
    if member == leader and leases_revoked(world, wall):
        world.known_issues[REVOKED_BY_OLD_LEADER] += 1  # the holders moved; safety still checked
        return fault
    unchanged(world, before, since, f"m{member} hung ({role})")
    return fault


REVOKED_BY_OLD_LEADER = (
    "etcd revoked the nodes' leases when its hung leader came back (etcd-io/etcd#15247,"
    " fixed upstream by etcd-io/etcd#16822, which this etcd predates): every address moved"
)
LEASE_GONE = re.compile(r"lease \S+ of node \S+ is gone")


def leases_revoked(world: World, wall: float) -> bool:
    """Whether the v3 nodes lost their leases since `wall` (time.time())."""
    return world.dcs_type == "etcd3" and any(
        LEASE_GONE.search(message)
        for node in world.nodes.values()
        for _, message in log_since(node, wall)
    )


def etcd_leader(world: World, rng: random.Random) -> Fault:
    """The etcd leader is killed; the others elect a new one; it comes back later."""
    leader = world.leader()
    others = [m for m in range(MEMBERS) if m != leader]
    fault = begin(world, "etcd-leader", HARD, f"m{leader}")
    world.timeline.dcs_down.begin("etcd", world.now())
    world.etcd.stop_member(leader, sig=signal.SIGKILL)
    elected = world.wait_etcd(others)
    world.timeline.dcs_down.end("etcd", elected)
    world.ledger.note("etcd election", elected - fault.start, f"after m{leader} died")
    world.sleep(rng.uniform(1.0, 3.0))
    world.etcd.start_member(leader)
    return fault


# The whole-etcd faults: the failsafe hold keeps the pool where it is (README.rst,
# "Failsafe hold"). Each waits first until every node has a good view, as a node without
# one refuses to promise (then every node fences, as without the failsafe: by design).
# What these checks found, and yaim then fixed:
# - HELD_THROUGH: a node fenced at a mark's deadline before it was granted a hold, as it
#   asked only once its latest DCS success was ttl / 2 old and a peer said yes only then
#   too (v2 seed 1: a refresh failed as etcd went while another request still worked).
#   Now the first failed try counts at once (Daemon._reaches_etcd).
# - NOTHING_MOVED, OTHERS_KEPT: etcd back, the balancer acted on a read sent before the
#   heartbeat had made a kept mark again and fenced it once. Now the balancer alone
#   makes it again (BalancerThread._remark).
HELD_THROUGH = "whole-etcd outage: every address stays on its holder (failsafe hold)"
NOTHING_MOVED = "etcd back after a whole-etcd outage: nothing moves"
OTHERS_KEPT = "whole-etcd outage, a holder crashed: the others keep theirs while they may"
SHARE = "pool fully held during "  # + the fault kind: a figure, the share of the samples
REHELD = "crashed in an outage: addresses held again"  # a figure: seconds from etcd back
CALM = 2.0  # x ttl after etcd is back: marks made again and every promise ended


def _etcd_down(world: World, rng: random.Random, kind: str, detail: str) -> Tuple[Fault, Holders]:
    """Once every node has a good view, stop every etcd member (SIGKILL or SIGTERM); the
    fault, and the holders when it began."""
    world.wait_views()
    how = rng.choice([signal.SIGKILL, signal.SIGTERM])
    before = world.at_rest()
    fault = begin(world, kind, HARD, f"{how.name} {detail}")
    world.timeline.dcs_down.begin("etcd", world.now())
    for m in range(MEMBERS):
        world.etcd.stop_member(m, sig=how)
    return fault, before


def _etcd_up(world: World) -> float:
    """Start every member again; when all were healthy."""
    back = world.now()
    world.etcd.start_members(list(range(MEMBERS)))
    up = world.now()
    world.timeline.dcs_down.end("etcd", up)
    world.ledger.note("etcd restart", up - back, "all members healthy")
    return up


def _kept(world: World, before: Holders, since: float, until: float, rule: str, what: str) -> None:
    """Check (as `rule`) that every address of `before` stayed on its node in [since, until]."""
    moved = first_move(world.observer.window(since, until), before)
    text = ""
    if moved is not None:
        sample, address = moved
        on = ",".join(f"n{n}" for n in sample.holders.get(address, [])) or "no node"
        was = ",".join(f"n{n}" for n in before[address])
        text = f"{address} on {on} {sample.time - since:.2f} s after {what}, was on {was}"
    world.ledger.check(rule, moved is None, text, world.now())


def _share(world: World, fault: Fault, since: float, until: float) -> None:
    """Record the share of the samples in [since, until] with the whole pool held."""
    share = full_share(world.observer.window(since, until), world.pool)
    world.ledger.note(SHARE + fault.kind, share, fault.detail)


def etcd_all(world: World, rng: random.Random) -> Fault:
    """The whole etcd cluster stops for longer than the TTL and starts again: every
    address stays on its holder throughout, and once etcd is back nothing moves."""
    length = world.bounds.ttl + rng.uniform(0.5, 4.0)
    fault, before = _etcd_down(world, rng, "etcd-all", f"for {length:.1f}s")
    world.sleep(fault.start + length - world.now())
    up = _etcd_up(world)
    _share(world, fault, fault.start, up)
    _kept(world, before, fault.start, up, HELD_THROUGH, "etcd stopped")
    world.sleep(up + CALM * world.bounds.ttl - world.now())
    _kept(world, before, up, world.now(), NOTHING_MOVED, "etcd came back")
    return fault


def etcd_all_one_back(world: World, rng: random.Random) -> Fault:
    """etcd stops for longer than the TTL (the nodes hold on each other's word); before it
    starts again the DCS links of all nodes but one go down, so etcd comes back for that
    one alone, and the others' return a second or two later. The one keeps the promises
    it gave, the others fence once it says no, and it takes over: never an address on
    two nodes (the analyser's check); the pool settles within the after-outage bound of
    every node reaching etcd again."""
    length = world.bounds.ttl + rng.uniform(0.5, 2.0)
    first = rng.choice(list(world.lab.node_indexes))
    others = [i for i in world.lab.node_indexes if i != first]
    apart = rng.uniform(1.0, 2.0)
    detail = f"for {length:.1f}s, back for n{first} {apart:.1f}s before the others"
    fault, _ = _etcd_down(world, rng, "etcd-all-one-back", detail)
    world.sleep(fault.start + length - world.now())
    for i in others:
        world.cut.add(i)
        world.lab.link(i, "dcs0", up=False)
    up = _etcd_up(world)
    world.sleep(up + apart - world.now())
    for i in others:
        world.lab.link(i, "dcs0", up=True)
        world.cut.discard(i)
    restored = world.now()
    _share(world, fault, fault.start, restored)
    bound = world.bounds.after_outage
    try:
        settled = world.wait_settled(restored + bound - world.now(), "the pool to settle").time
    except TimeoutError:
        settled = None
    world.ledger.check(
        f"etcd back for one node first: the pool settles within {bound:.1f} s of every node"
        " reaching etcd (the crash bound, + ttl while the promises end, + etcd's"
        " lease renewal)",
        settled is not None,
        f"not settled {bound:.1f} s after the DCS links came back: "
        f"{world.settled_problem(world.holders())}",
        world.now(),
    )
    return fault


ASK_SLACK = 0.1  # s: how long an ask may take to be sent after its round begins


def _cleaned_up(world: World, i: int) -> Tuple[bool, float]:
    """The cleanup hook of node i: whether it exited 0, and when it was done."""
    ok = world.cleanup_hook(i)
    return ok, world.now()


def etcd_all_crash(world: World, rng: random.Random) -> Fault:
    """etcd stops for longer than the TTL; once the nodes hold on each other's word a
    holder is SIGKILLed (its cleanup hook follows, as in `sigkill`) and etcd is started
    again at once. The others keep theirs until etcd is back or their holds end, a ttl
    less the margin from their last ask the victim answered (etcd usually starts sooner;
    on a loaded machine they may fence first, as they must); the dead one's addresses
    are held again within the crash bound of etcd being back, plus up to one ttl while
    the promises given to it end."""
    length = world.bounds.ttl + rng.uniform(0.5, 2.0)
    fault, before = _etcd_down(world, rng, "etcd-all-crash", f"for {length:.1f}s")
    victim = rng.choice(sorted({n for nodes in before.values() for n in nodes}))
    fault.detail += f", n{victim} killed"
    mine = [a for a, nodes in before.items() if nodes == [victim]]
    world.sleep(fault.start + length - world.now())
    world.stopped.add(victim)
    # The others' holds last a ttl less the margin from their last ask the victim
    # answered, sent an interval before the kill at most (a little more: ASK_SLACK).
    b = world.bounds
    holds_end = world.now() - b.interval - ASK_SLACK + b.ttl - fence_margin(b.ttl)
    world.nodes[victim].signal(signal.SIGKILL)
    world.nodes[victim].wait_exit(5)
    with ThreadPoolExecutor(1) as pool:  # the hook runs while etcd starts, as on a host
        cleanup = pool.submit(_cleaned_up, world, victim)
        up = _etcd_up(world)
        ok, cleaned = cleanup.result()
    world.ledger.check("yaim --cleanup exits 0", ok, f"n{victim}: cleanup failed", world.now())
    world.timeline.stopped.begin(victim, cleaned)
    others = {a: nodes for a, nodes in before.items() if nodes != [victim]}
    _kept(world, others, fault.start, min(up, holds_end), OTHERS_KEPT, "etcd stopped")
    bound = world.bounds.after_outage

    def held(holders: Holders) -> bool:
        return all(len(holders.get(a, ())) == 1 and victim not in holders[a] for a in mine)

    try:
        taken = world.observer.wait_for(held, up + bound - world.now(), "the takeover").time
    except TimeoutError:
        taken = None
    # Until the takeover: the hook ends while etcd starts, the addresses go only then.
    _share(world, fault, fault.start, max(up, taken or world.now()))
    if taken is not None:
        world.ledger.note(REHELD, taken - up, f"n{victim}")
    world.ledger.check(
        f"a holder crashed in a whole-etcd outage: its addresses held again within {bound:.1f}"
        " s of etcd back (the crash bound, + ttl while the promises to it end, +"
        " etcd's lease renewal)",
        taken is not None,
        f"n{victim}'s {format_addresses(set(mine))} not all held {bound:.1f} s after etcd was"
        f" back: holders {format_holders(world.holders())}",
        world.now(),
    )
    world.start(victim)
    return fault


def hand_removal(world: World, rng: random.Random) -> Fault:
    """An operator removes a held address by hand (`ip addr del`): yaim puts it back."""
    holders = world.holders()
    candidates = sorted({n for nodes in holders.values() for n in nodes})
    i = rng.choice(candidates)
    address = rng.choice(world.held_by(i))
    fault = begin(world, "hand-removal", CLEAN, f"{address} from n{i}")
    prefix = 32 if address.version == 4 else 128
    world.lab.ip(world.lab.node_ns(i), "addr", "del", f"{address}/{prefix}", "dev", "lan0")
    try:
        back = world.observer.wait_for(lambda h: h.get(address), 5.0, f"{address} back")
        world.ledger.note("hand-removed address back", back.time - fault.start, str(address))
    except TimeoutError:
        pass  # the unheld check reports it
    return fault


def pool_edit(world: World, rng: random.Random) -> Fault:
    """Addresses are added to and removed from the pool."""
    fault = begin(world, "pool-edit", CLEAN)
    for _ in range(rng.randint(1, 3)):
        fault.detail += " " + world.edit_pool(rng)
        world.sleep(rng.uniform(0.0, 1.0))
    return fault


def drain(world: World, rng: random.Random) -> Fault:
    """`yaimctl drain NODE`, then `undrain`: meanwhile the node holds nothing."""
    (i,) = victims(world, rng)
    fault = begin(world, "drain", CLEAN, f"n{i}")
    world.drained.add(i)
    ok = world.yaimctl(i, "drain", world.name(i))
    world.timeline.drained.begin(i, world.now())
    play(world, rng, fault, rng.uniform(2.0, 5.0) + world.bounds.clean)
    world.timeline.drained.end(i, world.now())
    ok = world.yaimctl(i, "undrain", world.name(i)) and ok
    world.drained.discard(i)
    world.ledger.check("yaimctl drain and undrain exit 0", ok, f"n{i}", world.now())
    return fault


def _storm_crash(world: World, i: int) -> Callable[[], None]:
    world.cut.add(i)
    world.stopped.add(i)
    world.nodes[i].crash()
    world.nodes[i].wait_exit(5)
    return lambda: world.reboot(i)


def _storm_cut(world: World, i: int) -> Callable[[], None]:
    world.cut.add(i)
    world.lab.link(i, "dcs0", up=False)
    cut = world.now()

    def heal() -> None:
        restored = world.now()
        world.lab.link(i, "dcs0", up=True)
        world.cut.discard(i)
        world.check_fenced([i], _fence_from(world, cut), restored, "its DCS link went down")

    return heal


def _fence_from(world: World, cut: float) -> float:
    """When a node cut from etcd at `cut` starts its ttl to fence: then, unless the storm
    killed the etcd leader since. The election stops etcd for every node a moment, so the
    peers may promise the cut node a hold (failsafe, by design): they reach etcd again
    within an interval of the new leader and say yes until it has answered them for a
    whole ttl, and the last yes keeps the cut node for less than a ttl more. Its ttl
    counts from there (a run met a hold ended 2.04 s after the cut, legitimately)."""
    spans = world.timeline.dcs_down.spans("etcd")
    bounds = world.bounds
    settled = [up + bounds.interval + bounds.ttl for _, up in spans if up is not None and up >= cut]
    return max([cut, *settled])


def _storm_sick(world: World, i: int) -> Callable[[], None]:
    world.set_health(i, False)
    return lambda: world.set_health(i, True)


def _storm_term(world: World, i: int) -> Callable[[], None]:
    _terminate(world, i)
    return lambda: world.start(i)


def _storm_drain(world: World, i: int) -> Callable[[], None]:
    world.drained.add(i)
    world.yaimctl(i, "drain", world.name(i))
    world.timeline.drained.begin(i, world.now())

    def heal() -> None:
        world.timeline.drained.end(i, world.now())
        world.yaimctl(i, "undrain", world.name(i))
        world.drained.discard(i)

    return heal


STORM = {
    "crash": _storm_crash,
    "cut": _storm_cut,
    "sick": _storm_sick,
    "term": _storm_term,
    "drain": _storm_drain,
}


def storm(world: World, rng: random.Random) -> Fault:
    """Several faults at once on different nodes, a moment apart, maybe with the etcd
    leader killed among them; healed in a random order. With the leader killed, a node
    cut from etcd may be held on its peers' word through the election (`_fence_from`)."""
    nodes = victims(world, rng, most=3)
    what = [(i, rng.choice(sorted(STORM))) for i in nodes]
    leader = world.leader() if rng.random() < 0.4 else None
    detail = " ".join(f"{kind} n{i}" for i, kind in what)
    if leader is not None:
        detail += f" leader m{leader}"
    fault = begin(world, "storm", HARD, detail)
    heals = []
    for i, kind in what:
        heals.append(STORM[kind](world, i))
        world.sleep(rng.uniform(0.0, 0.7))
    if leader is not None:
        world.timeline.dcs_down.begin("etcd", world.now())
        world.etcd.stop_member(leader, sig=signal.SIGKILL)
        heals.append(lambda: world.etcd.start_member(leader))
        elected = world.wait_etcd([m for m in range(MEMBERS) if m != leader])
        world.timeline.dcs_down.end("etcd", elected)
    play(world, rng, fault, rng.uniform(1.0, 6.0))
    rng.shuffle(heals)
    for heal in heals:
        heal()
        world.sleep(rng.uniform(0.0, 0.7))
    return fault


HOSTILE_VALUES = (
    b'{"node":"x","mark":1e999}',
    b"[" * 100_000,
    b'{"node":5,"mark":true}',
    b"\xff\xfe\x1b[2J",
    b"x" * (1 << 20),
)
HOSTILE_NAMES = ("a?b&c=d", "%2e", "n\x1b[2J", "x" * 300, "white space")


def hostile(world: World, rng: random.Random) -> Fault:
    """Hostile keys written by hand into the cluster's directory, as an attacker or a
    careless operator could: node, drain and pool entries with names no node or address
    can have, unreadable `released` notes on held addresses. Nothing moves, every node
    keeps running and yaimctl answers; the keys are deleted at the end."""
    value, name = rng.choice(HOSTILE_VALUES), rng.choice(HOSTILE_NAMES)
    before, keys = world.at_rest(), world.keys()
    fault = begin(world, "hostile", CLEAN, f"name {name[:12]!r}, value {value[:12]!r}")
    held = sorted(str(a) for a, nodes in before.items() if nodes)
    notes = [f"/released/{address}" for address in rng.sample(held, min(2, len(held)))]
    pool_entry = None if world.dcs_type == "etcd" else b""
    written = [(f"/nodes/{name}", value), (f"/drain/{name}", value), (f"/ips/{name}", pool_entry)]
    written += [(note, value) for note in notes]
    for key, data in written:
        keys.put_raw(key, data)
    world.sleep(rng.uniform(1.0, 3.0))
    i = rng.choice(list(world.lab.node_indexes))
    ok = world.yaimctl(i, "status") and world.yaimctl(i, "nodes", "--json")
    for key, _ in written:
        keys.delete_raw(key)
    world.ledger.check(HOSTILE, ok, f"yaimctl on n{i}", world.now())
    unchanged(world, before, fault.start, "hostile keys were written", HOSTILE)
    return fault


MIGRATING = {"dcs-type": "etcd3", "dcs-migrate-from": "etcd"}


def migrate(world: World, rng: random.Random) -> Fault:
    """In a v2 world, a node restarts (SIGTERM, as the README's procedure) as a migrating
    one, on both layouts (dcs-migrate-from), or back as a v2 node: the faults after it
    meet a cluster of both kinds, as a rolling move from v2 to v3 (or its rollback) has
    for a while. The world keeps the v3 pool in step and checks the v3 marks."""
    (i,) = victims(world, rng)
    back = i in world.migrating
    fault = begin(world, "migrate", CLEAN, f"n{i} {'back to v2' if back else 'on both layouts'}")
    _terminate(world, i)
    config = world.nodes[i].config
    if back:
        world.migrating.discard(i)
        config.pop("dcs-migrate-from")
        config["dcs-type"] = "etcd"
    else:
        world.migrating.add(i)
        config.update(MIGRATING)
    play(world, rng, fault, rng.uniform(0.2, 1.0))
    world.start(i)
    return fault


class Kind(NamedTuple):
    inject: Callable[[World, random.Random], Fault]
    needs: str = ""  # a capability of the world (World.has), empty: none


KINDS: Dict[str, Kind] = {
    "sigkill": Kind(sigkill),
    "crash": Kind(crash),
    "sigterm": Kind(sigterm),
    "pause": Kind(pause),
    "flap": Kind(flap),
    "dcs-cut": Kind(dcs_cut),
    "history-lost": Kind(history_lost),
    "loss": Kind(loss, needs="impairment"),
    "etcd-member": Kind(etcd_member),
    "etcd-leader": Kind(etcd_leader),
    "etcd-freeze": Kind(etcd_freeze),
    "etcd-all": Kind(etcd_all),
    "etcd-all-one-back": Kind(etcd_all_one_back),
    "etcd-all-crash": Kind(etcd_all_crash),
    "hand-removal": Kind(hand_removal),
    "pool-edit": Kind(pool_edit),
    "drain": Kind(drain),
    "storm": Kind(storm),
    "hostile": Kind(hostile),
    "link-down": Kind(link_down),
    "carrier-lost": Kind(carrier_lost),
    "link-flap": Kind(link_flap),
    "interface-deleted": Kind(interface_deleted),
    "migrate": Kind(migrate, needs="v2"),
}
