"""The job-hash fields claim.lua hands the worker are the ones ``CLAIMED_FIELDS`` names, in its order
(the script's ``claimed_slots``): a field the worker reads but the claim leaves out would read as unset."""

from __future__ import annotations

import re

from asyncsched.rq import _scripts
from asyncsched.rq.jobhash import CLAIMED_FIELDS, JOB_FIELDS


def test_claim_script_returns_the_claimed_fields() -> None:
    source = _scripts.source("claim")
    listed = re.search(r"local function claimed_slots\(\).*?ipairs\(\{(.*?)\}\)", source, re.S)
    assert listed is not None
    names = re.findall(r"'(\w+)'", listed.group(1))
    assert names == list(CLAIMED_FIELDS)
    assert set(CLAIMED_FIELDS) <= set(JOB_FIELDS)
