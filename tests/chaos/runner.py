"""One chaos run: the seeded schedule, the checks after every fault, the summary."""

from __future__ import annotations

import random
import statistics
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

from tests.chaos.faults import KINDS, REHELD, SHARE, TAKEN_OVER
from tests.chaos.model import CLEAN, Bounds, Fault, Ledger, Timeline
from tests.chaos.world import (
    INTERVAL,
    MEMBERS,
    NODES,
    POOL,
    RETRY_AFTER,
    RETRY_NUM,
    TTL,
    ChaosAbort,
    World,
)

LOG_PROBLEMS = ("Traceback", "CRITICAL")


# etcd's default election timeout: what a new leader adds to every lease beyond its TTL.
ETCD_ELECTION_TIMEOUT = 1.0


# The bounds of the world's daemons (the failsafe on: tests/chaos/world.py). A new
# leader's lease renewal counts in a v2 world too: its migrating nodes hold v3 marks.
BOUNDS = Bounds.for_config(
    INTERVAL / 1000,
    TTL / 1000,
    INTERVAL / 1000,
    RETRY_NUM,
    RETRY_AFTER / 1000,
    ETCD_ELECTION_TIMEOUT,
    failsafe=True,
)


def schedule(rng: random.Random, kinds: Sequence[str]) -> Iterator[str]:
    """Rounds of every kind once, each round in a new random order."""
    while True:
        order = list(kinds)
        rng.shuffle(order)
        yield from order


@dataclass
class Result:
    """What a run did and found."""

    seed: int
    dcs_type: str
    ledger: Ledger
    faults: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    samples: int = 0
    mean_period: float = 0.0
    longest_gap: float = 0.0
    notes: List[str] = field(default_factory=list)
    aborted: str = ""

    @property
    def ok(self) -> bool:
        return self.ledger.ok and not self.aborted


def run(
    seed: int,
    dcs_type: str,
    workdir: Path,
    duration: float = 0.0,
    rounds: Optional[int] = None,
    out: Callable[[str], None] = print,
    only: Sequence[str] = (),
) -> Result:
    """Faults until `duration` seconds have passed, or `rounds` rounds of every kind
    (of the kinds in `only`, when given)."""
    rng = random.Random(f"{seed}/{dcs_type}")
    timeline = Timeline(BOUNDS)
    result = Result(seed, dcs_type, Ledger())
    with World(dcs_type, workdir, timeline, result.ledger, out) as world:
        if world.impairment_note:
            result.notes.append(world.impairment_note)
            out("note: " + world.impairment_note)
        kinds = [
            k
            for k, kind in KINDS.items()
            if (not kind.needs or world.has(kind.needs)) and (not only or k in only)
        ]
        try:
            _start(world)
            for n, kind in enumerate(schedule(rng, kinds)):
                if rounds is not None and n >= rounds * len(kinds):
                    break
                if rounds is None and world.elapsed() >= duration:
                    break
                fault = KINDS[kind].inject(world, rng)
                result.faults[kind] += 1
                _after(world, fault)
                world.sleep(rng.uniform(0.0, 1.0))
        except ChaosAbort as exc:
            result.aborted = str(exc)
            out(f"ABORTED: {exc}")
        except Exception as exc:  # the lab's own failure: reported, and the run fails
            result.aborted = f"the harness failed: {exc!r}"
            out(traceback.format_exc())
        world.analyse()
        _scan_logs(world)
        result.notes += [f"operator, after a violation: {a}" for a in world.operator_actions]
        result.notes += [f"{n} x {issue}" for issue, n in world.known_issues.items()]
        result.seconds = world.elapsed()
        result.samples = world.analyser.samples
        result.longest_gap = world.analyser.longest_gap
        result.mean_period = world.analyser.mean_period
        if not result.ok:
            out(world.lab.base_dir.parent.as_posix() + ": logs of the run")
    return result


def _start(world: World) -> None:
    """The daemons start with an empty pool; once each has its node key the pool is
    added, address by address, and must be taken within the bound for added addresses."""
    world.start_daemons()
    fault = Fault("start", CLEAN, world.now(), f"{len(POOL)} addresses added")
    world.timeline.faults.append(fault)
    world.add_pool(POOL)
    _after(world, fault)


def _after(world: World, fault: Fault) -> None:
    """The checks after a fault: settled, daemons alive, etcd matching, every sample."""
    settled = world.settle(fault)
    world.check_running()
    world.check_marks()
    world.check_notify()
    world.analyse()
    fault.end = world.now()
    found = len(world.ledger.violations)
    for violation in world.ledger.violations[world.reported :]:
        at = f" at {violation.time - world.started:.2f}s" if violation.time else ""
        world.out(f"VIOLATION{at} {violation.check}: {violation.text}")
    world.reported = found
    world.out(
        f"[{world.elapsed():7.1f}s] {fault.kind:<12} {fault.detail.strip():<40} "
        f"settled {settled - fault.start:5.1f}s after it began; violations so far: {found}"
    )


def _scan_logs(world: World) -> None:
    """A daemon that logged a traceback or a critical error has a bug, whatever the checks say."""
    for node in world.nodes.values():
        lines = [line for line in node.log().splitlines() if any(p in line for p in LOG_PROBLEMS)]
        text = f"{node.name}: {lines[0].strip() if lines else ''} ({len(lines)} such lines)"
        world.ledger.check("no traceback or critical error in the logs", not lines, text)


def _figure(ledger: Ledger, name: str, what: str) -> str:
    values = [v for v, _ in ledger.figures.get(name, ())]
    if not values:
        return f"{what}: none measured"
    longest, context = ledger.longest(name)
    median = statistics.median(values)
    return f"{what}: max {longest:.2f} s ({context}), median {median:.2f} s, n={len(values)}"


def _share(ledger: Ledger, name: str) -> str:
    """The failsafe figure: in how much of each outage's samples the whole pool was held."""
    values = [v for v, _ in ledger.figures[name]]
    low, context = min(ledger.figures[name], key=lambda v: v[0])
    return (
        f"{name}: {statistics.mean(values):.1%} of the samples on average, lowest"
        f" {low:.1%} ({context}), n={len(values)}"
    )


def summary(result: Result) -> str:
    """The report printed at the end of a run."""
    b = BOUNDS
    ledger = result.ledger
    lines = [
        "",
        "=== yaim chaos summary ===",
        f"seed {result.seed}, dcs-type {result.dcs_type}, ran {result.seconds:.0f} s: "
        f"{NODES} nodes, {MEMBERS} etcd members, {len(POOL)} addresses at start, "
        f"interval {INTERVAL} ms, ttl {TTL} ms",
        f"bounds: crash {b.crash:.1f} s, clean {b.clean:.1f} s, unhealthy {b.unhealthy:.1f} s "
        f"(from the endpoint failing), SIGCONT drop {b.sigcont:.1f} s; "
        f"while etcd is down: {b.after_outage:.1f} s from when it answers again"
        f" (of which {b.promise:.1f} s while the failsafe's promises end)",
        "faults injected ({}): {}".format(
            sum(result.faults.values()),
            ", ".join(f"{k} {n}" for k, n in sorted(result.faults.items())) or "none",
        ),
        f"invariant checks: {sum(ledger.made.values())} made, {sum(ledger.failed.values())} failed",
    ]
    for name in sorted(ledger.made):
        lines.append(
            f"  {ledger.made[name]:8d} made {ledger.failed.get(name, 0):4d} failed  {name}"
        )
    unheld, context = ledger.longest("unheld")
    down, down_context = ledger.longest("unheld, etcd down")
    outside, where = ledger.longest("overlap")
    inside, during = ledger.longest("overlap while SIGSTOPped")
    lines += [
        f"longest time an address was unheld: {unheld:.2f} s ({context})",
        f"  and where etcd itself was down meanwhile: {down:.2f} s ({down_context})",
        f"longest overlap outside SIGSTOP: {outside:.2f} s ({where})",
        f"longest overlap with a SIGSTOPped node: {inside:.2f} s ({during})",
        _figure(ledger, "SIGCONT drop", "SIGCONT until the expired addresses were dropped"),
        _figure(ledger, "SIGTERM exit", "SIGTERM until exit"),
        _figure(ledger, "etcd election", "etcd leader killed until a new one answered"),
        _figure(ledger, "hand-removed address back", "address removed by hand until back"),
        _figure(ledger, REHELD, "a holder crashed in an etcd outage: etcd back until held"),
    ]
    lines += [_figure(ledger, name, name) for name in TAKEN_OVER.values()]
    lines += [_share(ledger, name) for name in sorted(ledger.figures) if name.startswith(SHARE)]
    lines += [
        f"observer: {result.samples} samples, every {1000 * result.mean_period:.0f} ms on"
        f" average, longest gap {1000 * result.longest_gap:.0f} ms",
    ]
    lines += [f"note: {note}" for note in result.notes]
    if ledger.violations:
        lines.append(f"VIOLATIONS ({len(ledger.violations)}):")
        lines += [f"  {v.check}: {v.text}" for v in ledger.violations[:50]]
    if result.aborted:
        lines.append("ABORTED: " + result.aborted)
    verdict = "PASS" if result.ok else "FAIL"
    lines.append(
        f"{verdict}: replay with make chaos SEED={result.seed} "
        f"DURATION={max(1, round(result.seconds))} DCS={result.dcs_type}"
    )
    return "\n".join(lines)
