"""The API's row schemas are made from the SQL models: they list what the serializers return."""

from __future__ import annotations

from datetime import UTC, datetime

from asyncsched.store.models import EventMessage, ScheduledTask, TaskExecution
from asyncsched.web._live import event_to_dict
from asyncsched.web._schemas import SCHEMAS
from asyncsched.web._serialize import execution_to_dict, task_to_dict


def _properties(name: str) -> set[str]:
    return set(SCHEMAS[name]["properties"]) - {"degraded"}


def test_row_schemas_list_the_serialized_fields() -> None:
    now = datetime.now(UTC)
    task = ScheduledTask(id="t", agent_name="a", name="n", type="interval", schedule="5 minutes")
    execution = TaskExecution(id="e", job_id="j", queue="default", status="queued", attempt=1)
    event = EventMessage(id="v", event_type="x", source_agent="a", payload={}, created_at=now)
    assert set(task_to_dict(task)) == _properties("Task")
    assert set(execution_to_dict(execution)) == _properties("Execution")
    assert set(event_to_dict(event)) == _properties("Event")


def test_row_schema_types_follow_the_columns() -> None:
    task, execution = SCHEMAS["Task"]["properties"], SCHEMAS["Execution"]["properties"]
    assert task["description"] == {"type": ["string", "null"]}  # Text, nullable
    assert task["enabled"] == {"type": "boolean"}
    assert execution["attempt"] == {"type": "integer"}
    assert execution["started_at"] == {"type": ["string", "null"], "format": "date-time"}
