"""The rerun fingerprint notices each kind of change it claims: runtime sysctls, the live nftables table,
packages (dpkg's status), files and modes. Sysctls and nftables are real ones, in a network namespace of
this machine made for the test (net.* is per namespace; nothing outside it changes)."""
import shutil
import subprocess

import pytest

from hardened_cluster.deliver.rerun import DPKG_STATUS, parse_fingerprint, script

NEEDS = [shutil.which(t) for t in ("unshare", "nft", "sysctl")]
pytestmark = pytest.mark.skipif(not all(NEEDS), reason="scripts/bootstrap.sh installs util-linux, nftables, procps")
SYSCTL = "net.ipv4.conf.all.log_martians"
TABLE = "table inet hardened_cluster { chain input { type filter hook input priority 0; policy drop; }; }"


def _in_netns(setup: str, request: dict) -> str:
    """The fingerprint taken in a fresh network namespace after `setup` ran there."""
    run = subprocess.run(["unshare", "--net", "sh", "-ec", f"{setup}\nexec sh -s"], input=script(request),
                         capture_output=True, text=True, timeout=60)
    found = parse_fingerprint((run.returncode, run.stdout, run.stderr))
    assert found is not None, run.stdout[-500:] + run.stderr[-500:]
    return found


@pytest.fixture
def request_(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "planned.conf").write_text("a = 1\n")
    status = tmp_path / "dpkg-status"
    status.write_text("Package: age\nStatus: install ok installed\n")
    return {"walk": [str(etc)], "stat": [], "files": [str(etc / "planned.conf"), str(status)],
            "sysctl": [SYSCTL], "units": [], "disabled": []}


def test_request_names_dpkg_status_and_fingerprint_covers_it(request_, tmp_path):
    assert DPKG_STATUS == "/var/lib/dpkg/status"
    base = f"sysctl -qw {SYSCTL}=1; nft -f - <<'NFT'\n{TABLE}\nNFT"
    first = _in_netns(base, request_)
    assert _in_netns(base, request_) == first, "the fingerprint must be stable while nothing changes"
    # A package removed: dpkg rewrites its status file.
    (tmp_path / "dpkg-status").write_text("Package: age\nStatus: deinstall ok config-files\n")
    assert _in_netns(base, request_) != first


def test_fingerprint_notices_a_runtime_sysctl_changed_back(request_):
    hardened = _in_netns(f"sysctl -qw {SYSCTL}=1", request_)
    assert _in_netns(f"sysctl -qw {SYSCTL}=1", request_) == hardened
    assert _in_netns(f"sysctl -qw {SYSCTL}=0", request_) != hardened


def test_fingerprint_notices_the_live_firewall_table_changed_or_gone(request_):
    loaded = f"nft -f - <<'NFT'\n{TABLE}\nNFT"
    first = _in_netns(loaded, request_)
    assert _in_netns(loaded, request_) == first
    opened = loaded + "\nnft add rule inet hardened_cluster input tcp dport 10250 accept"
    assert _in_netns(opened, request_) != first
    assert _in_netns("true", request_) != first  # flushed: no table at all
    policy = loaded.replace("policy drop", "policy accept")
    assert _in_netns(policy, request_) != first


def test_fingerprint_notices_file_content_and_mode(request_, tmp_path):
    first = _in_netns("true", request_)
    (tmp_path / "etc" / "planned.conf").chmod(0o644 ^ 0o004)
    moded = _in_netns("true", request_)
    assert moded != first
    (tmp_path / "etc" / "planned.conf").write_text("a = 2\n")
    assert _in_netns("true", request_) != moded
