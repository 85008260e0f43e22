# app/main.py — the spec's "3. Integrate into App".
# Renames: `from core import scheduler_router, TaskScheduler` -> `from asyncsched import scheduler_router,
# init_db` and `from asyncsched.sync import TaskScheduler` (the spec calls it without `await`).
from pathlib import Path

from fastapi import FastAPI

from asyncsched import init_db, scheduler_router
from asyncsched.sync import TaskScheduler

app = FastAPI(title="spec app")

app.include_router(scheduler_router, prefix="/api/scheduler", tags=["scheduler"])


@app.on_event("startup")
async def startup():
    init_db()

    # Load and register tasks from YAML
    scheduler = TaskScheduler()
    yaml_path = Path(__file__).parent.parent / "tasks.yaml"
    if yaml_path.exists():
        tasks = scheduler.load_tasks_from_yaml(str(yaml_path), agent_name="your-agent")
        for task in tasks:
            scheduler.register_task(task)
