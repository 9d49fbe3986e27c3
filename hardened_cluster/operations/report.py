"""What every day-2 operation's report shares: it is a dataclass, written as JSON (`--json`, and the state
directory's reports/)."""
from __future__ import annotations

import json
from dataclasses import asdict


class JsonReport:
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"
