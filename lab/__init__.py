"""The lab: network namespaces, real etcd members, yaim daemons, an observer of every
interface, throw-away certificates, PostgreSQL servers and a systemd-nspawn container,
for the tests (tests/) and the benchmarks (bench/), which both import it.

Development only: the installed package holds yaim alone (setup.cfg finds `yaim`, `yaim.*`).
"""
