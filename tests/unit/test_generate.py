"""packaging/generate.py: the manual pages and yaimctl's bash completion, made from the code
(the packages' tests check they are installed: tests/integration/test_packaging.py)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("generate", ROOT / "packaging" / "generate.py")
generate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generate)  # type: ignore[union-attr]

EXAMPLE = (ROOT / "conf" / "yaim.yml").read_text()
OPTIONS = {"-h", "--help", "--json"}
COMMANDS = {"ips", "nodes", "drain", "undrain", "status", "why", "rebalance", "migrate"}


def test_every_key_of_the_config_is_on_the_page_with_its_comment():
    found = generate.documented(EXAMPLE)
    assert "dcs-endpoints" in found and "fails over between them" in found["dcs-endpoints"]
    assert found["etcd-user"] == found["etcd-password"], "one comment above a run of keys"
    page = generate.pages()["yaim.yml.5"]
    assert all(f"**{key}**" in page for key in found)


def test_a_key_missing_from_the_example_or_without_a_comment_is_an_error():
    without = EXAMPLE.replace("\nttl:", "\nttl-typo:")
    with pytest.raises(ValueError, match=r"missing \['ttl'\]"):
        generate.documented(without)
    bare = EXAMPLE.replace("dcs-namespace: service", "\ndcs-namespace: service")
    with pytest.raises(ValueError, match=r"without a comment \['dcs-namespace'\]"):
        generate.documented(bare)


def test_the_pages_render_as_roff_without_a_warning(tmp_path):
    assert generate.main([str(tmp_path)]) == 0
    for name in ("yaim.8", "yaimctl.8", "yaim.yml.5"):
        roff = (tmp_path / name).read_text()
        assert roff.startswith(".") and ".SH" in roff and "/etc/yaim/yaim.yml" in roff
    assert "\\-\\-remove\\-v2" in (tmp_path / "yaimctl.8").read_text()
    assert "\\-\\-check\\-config" in (tmp_path / "yaim.8").read_text()


@pytest.mark.parametrize(
    "line, offered",
    [
        ("yaimctl ", {*OPTIONS, "--config", "-c", "--version", *COMMANDS}),
        ("yaimctl i", {"ips"}),
        ("yaimctl ips ", {*OPTIONS, "add", "remove"}),
        ("yaimctl -c x.yml ips a", {"add"}),
        ("yaimctl migrate --", {"--dry-run", "--remove-v2", "--json", "--help"}),
        ("yaimctl drain add ", OPTIONS),  # a node named add
    ],
)
def test_the_completion_offers_what_the_parser_takes(tmp_path, line, offered):
    generate.main([str(tmp_path)])
    words = line.split(" ")
    script = f"""
source {tmp_path / "bash-completion" / "yaimctl"}
COMP_WORDS=({" ".join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
_yaimctl
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == offered
