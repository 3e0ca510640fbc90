"""yaim's benchmarks: failover against keepalived and vip-manager, scale, profile.

`python -m bench [PART ...]` (as root, from the repo root; `make bench`) builds the
namespace lab (lab/), runs the parts and writes `bench/results/PART.json` and
`bench/RESULTS.md` (every part's tables, with the date and the machine).
"""
