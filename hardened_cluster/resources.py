"""Where the files the code reads live: templates, roles, playbooks, ansible.cfg and the artifacts tree.

In a checkout (and an editable install) they are the repository's own directories; a wheel carries
copies under hardened_cluster/data (setup.py puts them there), so nothing assumes the checkout.
"""
from pathlib import Path

# Relative to ROOT: what the wheel ships.
SHIPPED = ("templates", "roles", "playbooks", "ansible.cfg", "artifacts")
INSTALLED = "data"

_PACKAGE = Path(__file__).resolve().parent
ROOT = _PACKAGE / INSTALLED if (_PACKAGE / INSTALLED).is_dir() else _PACKAGE.parent
TEMPLATES = ROOT / "templates"
ROLES = ROOT / "roles"
PLAYBOOKS = ROOT / "playbooks"
ANSIBLE_CFG = ROOT / "ansible.cfg"
ARTIFACTS = ROOT / "artifacts"
