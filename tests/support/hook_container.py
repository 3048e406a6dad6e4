"""The hook as the Compose and Swarm examples run it: in a container of ownvol/hook:latest.

The image is the ownvol image of this checkout, copied into the test's own engine: an image
built before a change to `hooks/` or `ownvol/` would test old code, so its installed packages
are compared with this tree, file by file. The hook's events are the JSON lines of its log.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import docker

from tests.support.common import PACKAGE_DIRS, ROOT, SOURCE_SUFFIXES, image_lock
from tests.support.engine import PrivateEngine

HOOK_IMAGE = "ownvol/hook:latest"  # what examples/compose.yaml and examples/stack.yaml name
_DIGESTS = (
    "import hashlib, importlib, json, pathlib\n"
    "out = {}\n"
    f"for p in {tuple(PACKAGE_DIRS)!r}:\n"
    "    for f in pathlib.Path(importlib.import_module(p).__file__).parent.iterdir():\n"
    f"        if f.suffix in {SOURCE_SUFFIXES!r}:\n"
    "            out[p + '/' + f.name] = hashlib.sha256(f.read_bytes()).hexdigest()\n"
    "print(json.dumps(out))\n"
)


def _tree_digests() -> dict[str, str]:
    return {f"{p}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
            for p, d in PACKAGE_DIRS.items() for f in (ROOT / d).iterdir() if f.suffix in SOURCE_SUFFIXES}


def _image_digests(client: docker.DockerClient, tag: str) -> dict[str, str]:
    out = client.containers.run(tag, ["python3", "-c", _DIGESTS], network_mode="none", remove=True,
                                labels={"ownvol.watch": "false"})
    return json.loads(out)


def this_tree_image(client: docker.DockerClient, tag: str) -> str:
    """tag, rebuilt by scripts/images.sh if its ownvol packages are not this checkout's."""
    with image_lock(tag):
        if _image_digests(client, tag) != _tree_digests():
            subprocess.run([str(ROOT / "scripts" / "images.sh"), "ownvol"], check=True, cwd=ROOT, capture_output=True)
            stale = {k for k, v in _image_digests(client, tag).items() if _tree_digests().get(k) != v}
            assert not stale, f"{tag} still differs from this checkout after a rebuild: {sorted(stale)}"
    return tag


def load_hook_image(engine: PrivateEngine, source: str) -> str:
    """Copy source into the engine and tag it as the examples' hook image (`make hook-image` does the same)."""
    engine.load_image(source)
    repository, tag = HOOK_IMAGE.split(":")
    engine.client().images.get(source).tag(repository, tag)
    return HOOK_IMAGE


def hook_events(container) -> list[dict]:
    """The JSON events a hook container has printed so far."""
    events = []
    for line in container.logs(stdout=True, stderr=False).decode(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events
