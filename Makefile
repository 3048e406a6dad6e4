# ownvol: `make up` runs the driver and the hook on this machine's engine; `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
REDIS_IMAGE ?= ownvol/redis:7
BASE_IMAGE ?= ownvol/debian-base:bookworm
export REDIS_IMAGE BASE_IMAGE

.PHONY: tools venv engine images ownvol-image hook-image plugin plugin-rootfs plugin-set up down install uninstall \
	systemd-tools rootless-tools fs-tools lint shellcheck-tool redis-image test test-unit test-hostile test-swarm test-matrix bench \
	chaos clean-machine demo
# The tests that run private engines (fixtures of tests/support: PrivateEngine, PluginEngine): both versions in test-matrix.
ENGINE_TESTS = $(shell grep -lE 'private_engine|plugin_engine|engine_client|ptracked|make_plugin|ownvol_plugin|PrivateEngine|PluginEngine' \
	tests/engine/test_*.py tests/hostile/test_*.py | grep -v test_swarm_nodes)

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml setup.py ownvol/_entries.c scripts/venv.sh
	scripts/venv.sh
	touch $@

## engine: make sure a Docker engine answers (installs docker.io and starts dockerd without a bridge if none does)
engine:
	scripts/engine.sh

## tools: Debian's chromium and promtool (prometheus), for the status page's browser test and the alert rules' checks
tools:
	scripts/apt-tools.sh /usr/bin/chromium=chromium promtool=prometheus

## images: build the offline server images: Redis 6.2/7.0/8.0, Valkey 8.0/8.1, official-style variants (README)
images: venv engine
	scripts/images.sh servers

## redis-image: only the offline Redis image (REDIS_IMAGE, ownvol/redis:7) and its base, for make demo (2 min on a new machine)
redis-image: engine
	scripts/images.sh redis

## ownvol-image: ownvol installed in an image (hook, repair helper, managed plugin rootfs)
OWNVOL_IMAGE ?= ownvol/ownvol:latest
export OWNVOL_IMAGE
ownvol-image: venv images
	scripts/images.sh ownvol

## hook-image: the hook's image, for compose and swarm
hook-image: ownvol-image
	docker tag $(OWNVOL_IMAGE) ownvol/hook:latest

## plugin: the driver as the managed plugin `ownvol` (replaces make up's driver; data in /var/lib/ownvol)
plugin: ownvol-image
	scripts/plugin.sh install ownvol

## plugin-rootfs: the managed plugin's directory (rootfs/ and config.json) in build/plugin, nothing installed
plugin-rootfs: ownvol-image
	scripts/plugin.sh rootfs build/plugin

## plugin-set: SETTINGS=FILE (`docker plugin set` arguments, one a line) applied to the plugin on every engine of
## NODES (DOCKER_HOST values, e.g. "ssh://node1 ssh://node2"; default the current engine); PLUGIN=ownvol
plugin-set:
	scripts/plugin.sh set "$(SETTINGS)" $(or $(PLUGIN),ownvol)

## up: the driver on /run/docker/plugins/ownvol.sock and the hook, in the background
up: venv engine
	scripts/plugin.sh retire ownvol
	scripts/daemon.sh start driver $(BIN)/ownvol driver
	scripts/daemon.sh start hook $(BIN)/ownvol watch

## demo: right after make up: a Redis whose data dir belongs to root crashes as in the seed, make up's hook heals it;
## prints the hook's events, the incident and the status page's address, and removes what it made (Ctrl-C too)
demo: venv redis-image
	scripts/demo.sh

down:
	-scripts/daemon.sh stop hook
	-scripts/daemon.sh stop driver
	-scripts/daemon.sh stop plugin  # a driver started by make up before it was named driver
	@echo "down: dockerd keeps the driver it activated until dockerd restarts: while the driver is stopped, each" \
	  "docker volume ls waits about 30 s for it (dockerd's retries); make up again ends that"

## install: ownvol on this host under systemd, from a wheel built here: /opt/ownvol, the units, /etc/ownvol/ownvol.env
## (PREFIX=DIR installs below DIR and tells systemd nothing); an upgrade keeps volumes, references, journal, settings
PREFIX ?= /
install: venv
	rm -rf build/dist build/lib build/bdist.*  # setuptools reuses build/lib: no module removed since may ship
	$(BIN)/python -m build --wheel --outdir build/dist . >/dev/null
	if [ "$(PREFIX)" = / ]; then scripts/daemon.sh stop hook; scripts/daemon.sh stop driver; scripts/daemon.sh stop plugin; fi
	$(BIN)/ownvol install --wheel build/dist/ownvol-*.whl --prefix $(PREFIX)

## uninstall: stops and removes what `make install` installed; keeps every volume and the state (/var/lib/ownvol)
uninstall: venv
	$(BIN)/ownvol install --uninstall --prefix $(PREFIX)

## systemd-tools: systemd-analyze and systemd-socket-activate for the tests (Debian's systemd; nothing started)
systemd-tools:
	scripts/apt-tools.sh systemd-analyze=systemd systemd-socket-activate=systemd

## rootless-tools: Debian's rootlesskit, slirp4netns and uidmap (newuidmap, newgidmap), for the rootless engine's test
## (tests/engine/test_rootless.py runs docker.io's contrib/dockerd-rootless.sh as a user it adds; nothing started here)
rootless-tools:
	scripts/apt-tools.sh rootlesskit=rootlesskit slirp4netns=slirp4netns newuidmap=uidmap newgidmap=uidmap

## fs-tools: Debian's xfsprogs, btrfs-progs and bindfs, for the idmap tests on xfs and btrfs (loop images the tests
## make and remove) and on FUSE (tests/engine/test_plugin_idmap_filesystems.py; nothing mounted here)
fs-tools:
	scripts/apt-tools.sh mkfs.xfs=xfsprogs mkfs.btrfs=btrfs-progs bindfs=bindfs

## lint: ruff over the tree, mypy over the three packages as the tree holds them (ownvol/, plugin/, hooks/), shellcheck
## over every shell script of the tree (SHELL_SCRIPTS); seconds
# Every shell script: files whose first line names sh or bash (*.sh, .ci/run), outside .git, .venv and build/.
SHELL_SCRIPTS = $(shell find . \( -name .git -o -name .venv -o -name build -o -name .mypy_cache \) -prune -o -type f \
	-exec awk 'FNR == 1 { if ($$0 ~ /^\#!.*[/ ](ba)?sh( |$$)/) print FILENAME; nextfile }' {} +)
lint: venv shellcheck-tool
	$(BIN)/ruff check .
	$(BIN)/mypy --cache-dir .mypy_cache ownvol plugin hooks
	shellcheck --external-sources $(sort $(SHELL_SCRIPTS))

shellcheck-tool:
	scripts/apt-tools.sh shellcheck=shellcheck

## test: lint, then the whole suite, engine tests included (ENGINE=26: private engines run trixie's dockerd 26.1,
## ENGINE=28 forky's 28.5;
## the three-node swarm is left to test-swarm, matrix members to test-matrix); TEST_JOBS workers (pytest-xdist,
## a test file per worker at a time; TEST_JOBS=0 runs it in this one process)
ENGINE ?= 20
TEST_JOBS ?= 2
XDIST = $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile)
test: lint venv engine images systemd-tools tools rootless-tools fs-tools
	$(BIN)/python -m pytest $(XDIST) --engine $(ENGINE) $(PYTEST_ARGS)

## test-swarm: examples/stack.yaml on three engines in their own namespaces, plugin and images from a registry
test-swarm: venv engine images
	$(BIN)/python -m pytest --engine $(ENGINE) -m swarm tests/engine/test_swarm_nodes.py $(PYTEST_ARGS)

## test-matrix: every matrix member (marker matrix) on 20.10, then the private-engine tests and the three-node swarm
## on dockerd 26.1 and on 28.5 (make test runs them all on 20.10)
test-matrix: venv engine images
	$(BIN)/python -m pytest --engine 20 -m matrix $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: no matrix member here
	$(BIN)/python -m pytest --engine 26 -m "not swarm" $(ENGINE_TESTS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest --engine 26 -m swarm tests/engine/test_swarm_nodes.py $(PYTEST_ARGS)
	$(BIN)/python -m pytest --engine 28 -m "not swarm" $(ENGINE_TESTS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest --engine 28 -m swarm tests/engine/test_swarm_nodes.py $(PYTEST_ARGS)

## test-hostile: hostile input, link attacks, crashes, hook faults and load (SECURITY.md says what each proves); the
## tests marked load (many containers or cycles at once) run only here
test-hostile: venv engine images
	$(BIN)/python -m pytest $(XDIST) -m "not swarm and not matrix" tests/hostile $(PYTEST_ARGS)

## test-unit: lint, then the quick run, no engine (without the slow packaging test, which `make test` runs)
test-unit: lint venv
	$(BIN)/python -m pytest tests/unit -m "not slow" $(PYTEST_ARGS)

## bench: every performance figure beside its anchor (minutes; not part of `make test`); writes bench/results.json
bench: venv engine images
	$(BIN)/python -m bench.run $(BENCH)

## chaos: a seeded fault schedule against a private dockerd, driver and hook of its own for DURATION seconds (600),
## SEED (27; printed first): prints a table per fault kind, writes build/chaos/*.json, fails on a broken invariant
DURATION ?= 600
SEED ?= 27
chaos: venv engine images
	$(BIN)/python -m tests.chaos --duration $(DURATION) --seed $(SEED) $(CHAOS_ARGS)

## clean-machine: remove what the project put on this machine (its images, /var/cache/ownvol, build outputs, the
## venv, the tests' leftovers), keeping apt packages, the engine and every volume; DRY_RUN=1 only says what it would
clean-machine:
	DRY_RUN=$(DRY_RUN) scripts/clean-machine.sh

