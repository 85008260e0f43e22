"""Function references cannot be steered: one rule, in the API, the YAML loader, enqueue and the worker.

The victim is ``tests.hostile.funcapp.services`` (allow-listed), which imports ``os``, ``subprocess``,
``asyncio`` and a module that is not allow-listed, as real application modules do.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import Mount

from asyncsched.config import Settings
from asyncsched.exceptions import ConfigurationError, FunctionNotAllowed, InvalidJob
from asyncsched.queue import TaskQueue
from asyncsched.queue._functions import func_name, import_function, resolve_function
from asyncsched.rq import codec
from asyncsched.runtime import Runtime
from asyncsched.scheduler import validate_file
from asyncsched.testing import run_burst
from asyncsched.web import create_router
from asyncsched.worker._arq import arq_functions

from .funcapp import services

S = "tests.hostile.funcapp.services"
ALLOW = (S,)
NEVER = "tests.hostile.funcapp.never"

STEERED = [
    f"{S}:os.system",  # the four
    f"{S}.os:system",
    f"{S}:subprocess.run",
    f"{S}:asyncio.subprocess.create_subprocess_shell",
    f"{S}:system",  # from os import system
    f"{S}:run_command",  # from subprocess import run as run_command
    f"{S}:subprocess.Popen",
    f"{S}:os.popen",
    f"{S}:functools.partial",
    f"{S}:other.touch_other",  # a module not on the allow-list, through an allowed one
    f"{S}:touch_other",
    f"{S}:Child.inherited",  # inherited from a class of another module
    f"{S}:Base.inherited",
    f"{S}:alias_touch",  # a second name for a function defined here
    f"{S}:partial_system",  # functools.partial of os.system
    f"{S}:wrapped_system",  # functools.wraps(os.system) copies posix:system's identity
    f"{S}:lambda_touch",
    f"{S}:instance.static",  # through an instance, not a class
    f"{S}:NOT_CALLABLE",
    f"{S}:anything",  # the module's __getattr__ would hand out os.system
    f"{S}:touch.__globals__",
    f"{S}:__class__",
    f"{S}:__builtins__",
    f"{S}:__getattr__",
    f"{S}:__loader__.load_module",
    f"{S}:Jobs.__init__",
    f"{S}:Jobs.__class__",
    f"{S}:Jobs._Jobs__x",
    f"{S}:print",  # builtins are not defined in the module
    f"{S}:eval",
    f"{S}:exec",
    f"{S}:touch\n",  # a trailing newline (a `$`-anchored pattern lets it through)
    f"{S}:touch ",
    f" {S}:touch",
    f"{S}:touch\x00",
    f"{S}::touch",
    f"{S}:",
    f"{S}.__init__:touch",
    f"{S}:Jobs..static",
    f"{S}:tóuch",
    "os:system",  # not allowed at all
    "posix:system",
    "subprocess:run",
    "builtins:eval",
    "builtins:exec",
    "__main__:touch",
    "tests.hostile.funcapp.other:touch_other",
    f"{NEVER}:f",
    "tests.hostile.funcapp:services.touch",  # the package is not allowed, only the module
]
ALLOW_LIST_ONLY = {
    "posix:system",
    "subprocess:run",
    "builtins:eval",
    "builtins:exec",
    "tests.hostile.funcapp.other:touch_other",
    f"{NEVER}:f",
}
"""Refused only by the allow-list: defined where they are named, so trusted configuration may use them."""
HONEST = [f"{S}:touch", f"{S}:atouch", f"{S}:Jobs.static", f"{S}:Jobs.klass", f"{S}:Jobs.Inner.deep"]


def _refused(reference: str, allow: tuple[str, ...] | None) -> str:
    with pytest.raises((InvalidJob, FunctionNotAllowed)) as info:
        resolve_function(reference, allow=allow)
    return str(info.value)


@pytest.mark.parametrize("reference", STEERED)
def test_steered_references_are_refused(reference: str) -> None:
    message = _refused(reference, ALLOW)
    assert "\n" not in message.strip()


@pytest.mark.parametrize("reference", HONEST)
def test_functions_defined_in_the_allowed_module_resolve(reference: str) -> None:
    func = resolve_function(reference, allow=ALLOW)
    module, _, qualname = reference.partition(":")
    assert (func.__module__, func.__qualname__) == (module, qualname)


def test_a_module_that_is_not_allowed_is_never_imported() -> None:
    sys.modules.pop(NEVER, None)
    for reference in (f"{NEVER}:f", f"{NEVER}:IMPORTED", f"{NEVER}.f"):
        with pytest.raises(FunctionNotAllowed):
            resolve_function(reference, allow=ALLOW) if ":" in reference else import_function(
                reference, allow=ALLOW
            )
    assert NEVER not in sys.modules


def test_the_allow_list_is_judged_on_dotted_boundaries_and_exact_entries() -> None:
    assert resolve_function(f"{S}:touch", allow=(f"{S}:touch",)) is services.touch
    _refused(f"{S}:atouch", (f"{S}:touch",))
    _refused(f"{S}:touch", ("tests.hostile.funcapp.serv",))
    assert resolve_function(f"{S}:touch", allow=("tests.hostile",)) is services.touch
    assert resolve_function(f"{S}:touch", allow=("*",)) is services.touch
    _refused(f"{S}:os.system", ("*",))  # '*' allows functions, not attribute chains
    _refused(f"{S}:touch", ())


@pytest.mark.parametrize("reference", [r for r in STEERED if r not in ALLOW_LIST_ONLY])
def test_without_an_allow_list_the_definition_rule_still_holds(reference: str) -> None:
    """Task files and workers have no allow-list; no chain out of a module passes there either."""
    _refused(reference, None)


def test_without_an_allow_list_functions_defined_where_named_resolve() -> None:
    """Documented: without an allow-list (task files, workers) any function defined in its module resolves;
    what may name them (the files, Redis) is trusted configuration."""
    import posix

    assert resolve_function("posix:system") is posix.system
    _refused("os:system", None)  # os.system is posix.system: not defined in os


RQ_STEERED = [
    f"{S}.os.system",
    f"{S}.system",
    f"{S}.subprocess.run",
    f"{S}.asyncio.subprocess.create_subprocess_shell",
    f"{S}.Child.inherited",
    f"{S}.partial_system",
    f"{S}.wrapped_system",
    f"{S}.anything",
    f"{S}.__class__",
    "os.system",
    "json.JSONEncoder.encode",  # defined in json.encoder
    f"{S}.touch\n",
    "nodots",
]


@pytest.mark.parametrize("name", RQ_STEERED)
def test_rq_dotted_names_follow_the_same_rule(name: str) -> None:
    with pytest.raises(InvalidJob):
        import_function(name)


def test_rq_dotted_names_of_defined_functions_resolve() -> None:
    assert import_function(f"{S}.touch") is services.touch
    assert import_function(f"{S}.Jobs.Inner.deep") is services.Jobs.Inner.deep
    assert import_function(f"{S}:touch") is services.touch


@pytest.mark.parametrize(
    "reference",
    [f"{S}:ArqSettings", f"{S}.ArqSettings", f"{S}:other.ArqSettings", f"{S}:ArqSettings.__class__", f"{S}:"],
)
def test_arq_settings_references_follow_the_same_rule(reference: str) -> None:
    """``Worker(arq="module:WorkerSettings")`` resolves by the one rule: a settings class imported into
    ``services`` from another module is not ``services``' own, whatever its attributes."""
    with pytest.raises(ConfigurationError, match="cannot read arq functions"):
        arq_functions(reference)


def test_arq_settings_defined_where_named_resolve_colon_or_dotted() -> None:
    other = "tests.hostile.funcapp.other"
    assert list(arq_functions(f"{other}:ArqSettings")) == ["touch_other"]
    assert list(arq_functions(f"{other}.ArqSettings")) == ["touch_other"]  # arq's own spelling


def test_enqueue_checks_references_by_the_same_rule() -> None:
    assert func_name(services.touch) == f"{S}.touch"
    assert func_name(services.alias_touch) == f"{S}.touch"  # the same object as touch
    assert func_name(services.Jobs.Inner.deep) == f"{S}.Jobs.Inner.deep"
    assert func_name(f"{S}:touch") == f"{S}.touch"
    for bad in (
        services.partial_system,
        services.wrapped_system,
        services.lambda_touch,
        f"{S}:touch\n",
        f"{S}:__class__",
        f"{S}.__init__:touch",
        " x:y",
    ):
        with pytest.raises(InvalidJob):
            func_name(bad)  # type: ignore[arg-type]


# -- end to end: the API ---------------------------------------------------------------------------


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    hostile = settings.replace(allowed_functions=ALLOW, agent="hostile")
    async with Runtime(hostile, tasks_files=[], http=False, worker=False) as runtime:
        assert runtime.services is not None
        app = Starlette(routes=[Mount("/api", create_router(runtime.services))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost/api", timeout=30
        ) as client:
            yield client


def _names_function(response: httpx.Response) -> bool:
    detail = response.json()["detail"]
    if response.status_code == 403:
        return "function" in detail
    return any(e["loc"][-1] == "function" for e in detail)


async def test_api_refuses_every_steered_function(api: httpx.AsyncClient, tmp_path: Path) -> None:
    sys.modules.pop(NEVER, None)
    marker = tmp_path / "marker"
    for reference in STEERED:
        job = await api.post("/jobs", json={"function": reference, "args": [f"id > {marker}"]})
        assert job.status_code in (403, 422), (reference, job.status_code, job.text)
        assert _names_function(job), (reference, job.text)
        task = {"name": "steered", "type": "interval", "schedule": "1 hour", "function": reference}
        created = await api.post("/tasks", json={**task, "args": [f"id > {marker}"]})
        assert created.status_code in (403, 422), (reference, created.status_code, created.text)
        assert _names_function(created), (reference, created.text)
    assert (await api.get("/tasks")).json()["items"] == []
    assert NEVER not in sys.modules
    assert not marker.exists()
    # The same requests with an honest function are accepted: the checks above can fail.
    assert (
        await api.post("/jobs", json={"function": f"{S}:touch", "args": [str(marker)]})
    ).status_code == 202
    honest = {"name": "honest", "type": "interval", "schedule": "1 hour", "function": f"{S}:Jobs.static"}
    assert (await api.post("/tasks", json=honest)).status_code == 201


# -- end to end: the worker -------------------------------------------------------------------------


async def _steer(redis: aioredis.Redis, queue: TaskQueue, name: str, arg: str) -> str:
    """A queued job whose hash is then rewritten to call ``name`` (as anyone who can write Redis could)."""
    job_id = await queue.enqueue(services.touch, args=["unused"])
    await redis.hset(f"rq:job:{job_id}", "data", codec.encode_data(name, [arg], {}, "json"))
    return job_id


WORKER_STEERED = [
    f"{S}.os.system",
    f"{S}.system",
    f"{S}.subprocess.getoutput",
    f"{S}:os.system",
    f"{S}.os:system",
    f"{S}:system",
    f"{S}.wrapped_system",
    f"{S}.partial_system",
    f"{S}.anything",
    "os.system",
    "os:system",
]


async def test_worker_fails_jobs_with_steered_functions(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url)
    marker = tmp_path / "marker"
    async with TaskQueue(redis_url, settings=settings) as queue:
        ids = {name: await _steer(redis, queue, name, f"echo ran > {marker}") for name in WORKER_STEERED}
        honest = await _steer(redis, queue, f"{S}.touch", str(tmp_path / "honest"))
        await run_burst(redis=redis_url, settings=settings)
        for name, job_id in ids.items():
            record = await queue.job(job_id)
            assert str(getattr(record.status, "value", record.status)) == "failed", name
            assert "InvalidJob" in (record.error or ""), (name, record.error)
        assert (await queue.result(honest)) == "touched"
    assert not marker.exists()
    assert (tmp_path / "honest").read_text() == "touch ran"


async def test_worker_with_an_allow_list_never_imports_other_modules(
    redis_url: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    sys.modules.pop(NEVER, None)
    settings = Settings(redis_url=redis_url)
    marker = tmp_path / "marker"
    async with TaskQueue(redis_url, settings=settings) as queue:
        names = (f"{NEVER}.f", f"{NEVER}:f", "tests.hostile.funcapp.other.touch_other", "posix.system")
        refused = {name: await _steer(redis, queue, name, str(marker)) for name in names}
        honest = await _steer(redis, queue, f"{S}.touch", str(tmp_path / "honest"))
        await run_burst(redis=redis_url, settings=settings, allowed_functions=ALLOW)
        for name, job_id in refused.items():
            record = await queue.job(job_id)
            assert "FunctionNotAllowed" in (record.error or ""), (name, record.error)
        assert (await queue.result(honest)) == "touched"
    assert NEVER not in sys.modules
    assert not marker.exists()


async def test_enqueue_refuses_a_job_id_with_a_trailing_newline(redis_url: str) -> None:
    async with TaskQueue(redis_url, settings=Settings(redis_url=redis_url)) as queue:
        with pytest.raises(InvalidJob, match="job id"):
            await queue.enqueue(services.touch, args=["x"], job_id="abc\n")


# -- end to end: task files ---------------------------------------------------------------------------


def _task_file(tmp_path: Path, function: str) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_text(
        f"tasks:\n  - name: t\n    type: interval\n    schedule: 1 hour\n    function: {function!r}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("reference", [r for r in STEERED if r not in ALLOW_LIST_ONLY and "\x00" not in r])
def test_task_files_refuse_steered_functions(tmp_path: Path, reference: str) -> None:
    path = tmp_path / "tasks.yaml"
    quoted = reference.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    path.write_text(
        f'tasks:\n  - name: t\n    type: interval\n    schedule: 1 hour\n    function: "{quoted}"\n',
        encoding="utf-8",
    )
    tasks, problems = validate_file(path, "a")
    assert tasks == []
    assert [(p.line, p.field) for p in problems] == [(5, "function")], problems


def test_tasks_validate_cli_names_file_line_and_field(tmp_path: Path) -> None:
    path = _task_file(tmp_path, f"{S}:os.system")
    proc = subprocess.run(
        [sys.executable, "-m", "asyncsched", "tasks", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"{path}:5, task 't', field 'function': ")
    assert "Traceback" not in proc.stderr
