"""The API's and /metrics' list of execution statuses is the store's: a new status shows in both."""

from asyncsched.store.models import ExecutionStatus
from asyncsched.web._schemas import STATUSES


def test_the_api_lists_every_execution_status_of_the_store() -> None:
    assert [s.value for s in ExecutionStatus] == STATUSES
