"""finish.lua's arguments come from typed records: one FinishRecord per job, in the order the script's header
lists its fields, in a FinishCall (its header, then the KEYS of every execution it records)."""

from __future__ import annotations

import re

from asyncsched._lifecycle import Lifecycle
from asyncsched.rq._calls import FinishCall
from asyncsched.rq._scripts import source
from asyncsched.rq.keys import RQKeys
from asyncsched.worker._finish import FIELDS, SEP, FinishRecord
from asyncsched.worker._job import ClaimedJob, Outcome, OutcomeKind
from asyncsched.worker._rqjob import JobOutcome


def _header_numbers() -> set[int]:
    """The field numbers of finish.lua's header comment (``1 id  2 exec ...``)."""
    text = source("finish")
    head = text[text.index("in this order:") : text.index("-- Returns")]
    return {int(n) for n in re.findall(r"(?<![-\w])(\d+) [A-Za-z]", head)} - {0}


def test_the_record_has_the_scripts_fields_in_its_order() -> None:
    assert _header_numbers() == set(range(1, FIELDS + 1))
    assert FIELDS == len(FinishRecord._fields) == 30
    assert FinishRecord._fields[:4] == ("id", "execution_id", "queue", "kind")
    assert FinishRecord._fields[-4:] == ("repeats_left", "repeat_intervals", "repeat_at", "limits")


def test_a_record_packs_to_one_argument_and_the_batch_to_the_scripts_arguments() -> None:
    job = ClaimedJob("j1", "e1", "default", {"asyncsched_task": b"nightly", "asyncsched_attempt": b"2"})
    out = Outcome(job, OutcomeKind.FAILED, exc_text="Traceback\nValueError: a\x1eb", error="ValueError")
    out.life_kind = Lifecycle.FAILED
    record = FinishRecord.of(out)
    assert (record.kind, record.attempt, record.task_name) == ("failed", "2", "nightly")
    assert record.kind is OutcomeKind.FAILED
    assert record.life_kind is Lifecycle.FAILED
    assert record.traceback == "Traceback\nValueError: a\x1eb"  # a failure carries its traceback
    packed = record.pack()
    fields = packed.split(SEP)
    assert len(fields) == FIELDS
    assert fields[FinishRecord._fields.index("traceback")] == "Traceback\nValueError: a b"  # 0x1e escaped
    jobs = (("j1", "e1", "default"), ("j2", "e2", "other"))
    batch = FinishCall(RQKeys("rq"), "w1", "stream", 100, "ts", 1.5, FIELDS, jobs, (packed, packed))
    head = ["rq", "w1", 100, "ts", "1.5", FIELDS]
    assert batch.to_args() == [*head, 2, "default", "other", 2, packed, packed]
    assert batch.one(1).to_args() == [*head, 1, "other", 1, packed]
    worker = ["stream", "rq:worker:w1", "rq:worker:w1:executions"]
    registries = [f"rq:{r}:other" for r in ("queue", "wip", "finished", "failed", "scheduled")]
    execution = ["rq:job:j2", "rq:execution:j2:e2", "rq:executions:j2", "rq:results:j2"]
    execution.append("rq:job:j2:dependents")
    assert batch.one(1).to_keys() == [*worker, *registries, *execution]
    assert len(batch.to_keys()) == 3 + 5 * 2 + 5 * 2
    assert OutcomeKind("finished") is OutcomeKind.FINISHED
    assert record.limits == ""  # claimed without limits: finish.lua does not look for them
    limited = ClaimedJob("j3", "e3", "default", {"rate_limit_key": b"api"})
    assert FinishRecord.of(Outcome(limited, OutcomeKind.FINISHED)).limits == "1"


def test_hooks_see_the_outcome_as_an_enum() -> None:
    """``current_job().outcome`` in an after_job hook is a :class:`JobOutcome` (a ``str``, as before)."""
    assert [JobOutcome(k) for k in OutcomeKind] == [
        JobOutcome.FINISHED, JobOutcome.FAILED, JobOutcome.STOPPED, JobOutcome.REQUEUE, JobOutcome.SCHEDULE,
    ]  # fmt: skip
    assert JobOutcome.RETRY == "retry"
