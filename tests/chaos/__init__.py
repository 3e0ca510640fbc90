"""Fault injection with invariant checking: yaim in a namespace lab under a seeded storm.

A lab of 5 nodes with the failsafe hold on, a 3-member etcd cluster and 12
addresses; an observer samples every interface every 40 ms while a seeded random
schedule kills, stops, pauses, cuts off and sickens nodes, kills etcd members (the
leader too) or the whole cluster (then the pool must stay where it is, also when
etcd comes back for one node first or a holder dies meanwhile), removes held
addresses by hand and edits the pool. After every fault
the contract's invariants are checked with their time bounds (tests/chaos/model.py
says which bound applies when), and every running node's notify events must add
up to the addresses on its interface; a summary is printed.

    python -m tests.chaos --seed S --duration SECONDS [--dcs etcd|etcd3|both]

`make chaos SEED=... DURATION=...` runs it long; tests/chaos/test_chaos.py runs one
seeded round of every fault kind as part of the test suite.
"""
