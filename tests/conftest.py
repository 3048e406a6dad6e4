"""Fixtures that own the engine, the image, names, ports and cleanup.

Every container, volume and plugin a test makes through `tracked` is removed after it,
also when it fails; a session-end sweep removes anything labelled with this session's id.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.support.common import ROOT, SESSION, SESSION_LABEL, Tracked, free_port, image_lock, new_name
from tests.support.engine import ENGINES, PrivateEngine, engines_failed, settle_logs

pytest_plugins = ["tests.support.fixtures_plugin", "tests.support.fixtures_hook", "tests.support.walks"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--engine", choices=ENGINES, default=os.environ.get("OWNVOL_ENGINE") or ENGINES[0],
                     help="dockerd version of the private engines (scripts/dockerd.sh): 20 (bookworm), 26 (trixie)"
                     " or 28 (forky)")


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_ROOM = 1024  # each private dockerd holds about 20 inotify instances, each hook one (hooks/drift.py)
_inotify_before: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    os.environ["OWNVOL_ENGINE"] = config.getoption("--engine")
    if hasattr(config, "workerinput") or os.geteuid() != 0 or not INOTIFY_INSTANCES.exists():
        return
    before = INOTIFY_INSTANCES.read_text().strip()
    if int(before) < INOTIFY_ROOM:  # Debian's 128 is used up by a few private engines and the hooks beside them
        INOTIFY_INSTANCES.write_text(str(INOTIFY_ROOM))
        _inotify_before.append(before)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _inotify_before:
        INOTIFY_INSTANCES.write_text(_inotify_before.pop())


def pytest_report_header(config: pytest.Config) -> str:
    return f"private engines: dockerd {config.getoption('--engine')} (--engine)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failed phase keeps the dockerd logs of the private engines running (named in its report); after the
    teardown, the logs of the engines destroyed without a failure are removed."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and (logs := engines_failed()):
        report.sections.append(("private engines' dockerd logs (kept)", "\n".join(logs)))
    if call.when == "teardown":
        settle_logs()


def pytest_sessionfinish(session: pytest.Session) -> None:
    settle_logs()


# The files that take longest (`make test PYTEST_ARGS=--durations=50`, 2026-12-07), collected first: pytest-xdist's
# loadfile hands files out in collection order, so the longest start at once and none is left alone at the end.
LONGEST_FIRST = (
    "tests/engine/test_chaos.py", "tests/engine/test_managed_plugin.py", "tests/engine/test_host_install.py",
    "tests/hostile/test_hook.py", "tests/hostile/test_crash.py", "tests/engine/test_hook_databases.py",
    "tests/engine/test_plugin_idmap.py", "tests/engine/test_hook_db_paths.py", "tests/engine/test_hook_failed_start.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(pytest.mark.timeout(900))

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"no Docker engine answers ({exc}); run `make engine` first", pytrace=False)
    yield client
    for c in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={SESSION}"}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": f"{SESSION_LABEL}={SESSION}"}):
        try:
            v.remove(force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def redis_image(docker_client: docker.DockerClient) -> str:
    """The Redis image under test (REDIS_IMAGE, default the offline ownvol/redis:7), built if missing."""
    tag = os.environ.get("REDIS_IMAGE", "ownvol/redis:7")
    with image_lock(tag):
        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            subprocess.run([str(ROOT / "scripts" / "images.sh")], check=True, env={**os.environ, "REDIS_IMAGE": tag})
    return tag


@pytest.fixture
def unique_name() -> callable:
    """unique_name(prefix='ovt') -> a name no other test or run uses."""
    return new_name


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def tracked(docker_client: docker.DockerClient) -> Tracked:
    t = Tracked(docker_client)
    yield t
    t.cleanup()


@pytest.fixture
def private_engine() -> PrivateEngine:
    """A dockerd of the test's own (own data root and socket), for restart tests; destroyed after."""
    engine = PrivateEngine(new_name("eng"))
    yield engine
    engine.destroy()


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A root-owned directory on the host, as a bind-mount source; tmp_path is cleaned by pytest."""
    d = tmp_path / "data"
    d.mkdir()
    os.chown(d, 0, 0)
    d.chmod(0o755)
    return d


@pytest.fixture
def decoys(tmp_path):
    """Host files and a host directory outside the volume, owned root:root, mode 0644/0755."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "shadow").write_text("secret")
    (host / "passwd").write_text("root")
    return host
