"""The job-hash fields claim.lua hands the worker are the ones ``CLAIMED_FIELDS`` names, in its order
(the script's ``claimed_slots``): a field the worker reads but the claim leaves out would read as unset."""

from __future__ import annotations

import re

from asyncsched.rq import _scripts
from asyncsched.rq.jobhash import CLAIMED_FIELDS, JOB_FIELDS


def test_claim_script_returns_the_claimed_fields() -> None:
    source = _scripts.source("claim")
    table = re.search(r"local function claimed_slots\(\).*?return \{(.*?)\}", source, re.S)
    assert table is not None
    slots = {name: int(n) for name, n in re.findall(r"(\w+) = (\d+)", table.group(1))}
    assert sorted(slots, key=slots.__getitem__) == list(CLAIMED_FIELDS)
    assert sorted(slots.values()) == list(range(1, len(CLAIMED_FIELDS) + 1))
    assert set(CLAIMED_FIELDS) <= set(JOB_FIELDS)
