"""The hook's commands: `ownvol watch | status | doctor | repair | history | explain` (dispatched by ownvol/cli.py)."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
import docker

from ownvol.dockertime import state_time

from . import assembly, connection, patterns
from .actions import repair_route
from .drift import watchable
from .executor import DockerExecutor
from .journal import Journal
from .model import ActionRecord, Incident
from .recovery import Recovery
from .services import by_family, plan_of, services
from .shared import advice, recurring
from .strategies import StrategyError, load
from .targets import engine_node, engine_paths_reachable
from .telemetry import Telemetry
from .watcher import INCIDENT_STATES

if TYPE_CHECKING:  # rich draws the CLI's tables and bars; `watch` never loads it (its start is a heal's time)
    from rich.console import Console  # types only
    from rich.progress import Progress, TaskID  # types only
    from rich.table import Table  # types only

_state = click.option("--state-dir", envvar="OWNVOL_HOOK_STATE", default=assembly.DEFAULT_STATE_DIR,
                      show_default=True, help="Where the hook keeps its journal.")
_db = click.option("--db", envvar="OWNVOL_HOOK_DB", default=None,
                   help="The journal (default STATE_DIR/journal.sqlite).")
_via = click.option("--repair-via", type=click.Choice(["auto", "local", "helper"]), envvar="OWNVOL_REPAIR_VIA",
                    default="auto", show_default=True,
                    help="Repair mounts here, or in a helper container (auto: helper when the path is out of reach).")


_TONES = {"healthy": "green", "resolved": "green", "ok": "green", "failed": "red", "gave-up": "red",
          "latent": "yellow", "loading": "yellow", "unknown": "yellow", "open": "yellow"}
_VERIFIED = {True: " verified", False: " not verified", None: ""}


def console() -> Console:
    """rich's console on stdout; a pipe gets 160 columns (or $COLUMNS) rather than rich's 80, so rows stay whole."""
    from rich.console import Console  # rich: CLI output only, not on `watch`'s start
    return Console(width=shutil.get_terminal_size((160, 24)).columns, highlight=False)


def _selector(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{v!r}: want KEY=VALUE", param_hint="--selector")
        out[key] = value
    return out


@click.command()
@_state
@_db
@click.option("--metrics-addr", envvar="OWNVOL_METRICS_ADDR", default=assembly.DEFAULT_METRICS, show_default=True,
              help="host:port for the status page (/), /status and /metrics; 'off' for none.")
@click.option("--webhook", envvar="OWNVOL_WEBHOOK", default=None, help="POST incident/recovered/gave-up JSON here.")
@click.option("--selector", multiple=True, metavar="KEY=VALUE", envvar="OWNVOL_HOOK_SELECTOR",
              help="Only containers with this label (repeatable; the variable: space-separated).")
@click.option("--strategies", type=click.Path(dir_okay=False), envvar="OWNVOL_STRATEGIES", default=None,
              help="A strategies YAML (default: the packaged hooks/strategies.yaml).")
@click.option("--interval", type=float, envvar="OWNVOL_HOOK_INTERVAL", default=5.0, show_default=True,
              help="Seconds between health probes.")
@_via
@click.option("--helper-image", envvar="OWNVOL_IMAGE", default="ownvol/ownvol:latest", show_default=True)
@click.option("--fill-warning-hours", type=click.FloatRange(min=0, min_open=True), envvar="OWNVOL_FILL_WARNING_HOURS",
              default=assembly.DEFAULT_THRESHOLD_HOURS, show_default=True,
              help="A `latent` event when a data mount would be full within this many hours at the last hour's rate.")
@click.option("--drift-watch", type=click.Choice(["on", "off"]), envvar="OWNVOL_DRIFT_WATCH", default="on",
              show_default=True, help="Watch the data dirs with inotify: a chown or chmod wakes that container's probe "
                                      "at once (off: the periodic probe finds it).")
@click.option("--log-files", type=click.Choice(["on", "off"]), envvar="OWNVOL_LOG_FILES", default="on",
              show_default=True, help="Read json-file logs in the engine's own files as they are written, where this "
                                      "process sees them (off: always through the engine's logs endpoint, which "
                                      "answers only between a container's starts).")
def watch(state_dir, db, metrics_addr, webhook, selector, strategies, interval, repair_via, helper_image,
          fill_warning_hours, drift_watch, log_files) -> None:
    """Watch Redis containers, heal persistence failures, prove Redis healthy (JSON events on stdout)."""
    try:
        load(strategies)
    except StrategyError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        connection.endpoint()  # where the log streams connect: refused here, not in every stream's event
    except (connection.UnsupportedHost, docker.errors.DockerException, OSError) as exc:
        raise click.ClickException(f"cannot reach the engine as configured: {exc}") from None
    options = assembly.Options(state_dir, db, None if metrics_addr in ("", "off") else metrics_addr, webhook,
                              _selector(selector), strategies, interval, repair_via, helper_image, fill_warning_hours,
                              drift_watch == "on", log_files == "on")
    try:
        assembly.run(options)
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--addr", envvar="OWNVOL_METRICS_ADDR", default=assembly.DEFAULT_METRICS, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def status(addr, as_json) -> None:
    """The running hook's watched containers and their health."""
    from rich import box  # rich: CLI output only, not on `watch`'s start
    from rich.table import Table  # rich: CLI output only, not on `watch`'s start
    from rich.text import Text  # rich: CLI output only, not on `watch`'s start
    try:
        with urllib.request.urlopen(f"http://{addr}/status", timeout=5) as reply:
            data = json.load(reply)
    except OSError as exc:
        raise click.ClickException(f"no hook answers on {addr} ({exc}); is `ownvol watch` running?") from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table("container", "health", "incident", "drift watch", "reasons", box=box.SIMPLE_HEAD,
                  title="watched containers", title_justify="left")
    for c in data["containers"]:
        table.add_row(c["name"], Text(c["health"], style=_TONES.get(c["health"], "red")),
                      "recovering" if c["incident"] else "-", c.get("drift", "-"), "; ".join(c["reasons"])[:120] or "-")
    out = console()
    out.print(table)
    if data["open_incidents"]:
        opened = Table("incident", "container", "type", "origin", box=box.SIMPLE_HEAD, title="open incidents",
                       title_justify="left")
        for i in data["open_incidents"]:
            opened.add_row(f"#{i['id']}", i["container"], i["type"], i["origin"])
        out.print(opened)


def _executor(repair_via: str) -> DockerExecutor:
    client = assembly.engine()
    return DockerExecutor(lambda: client, repair_via)


def diagnose(executor: DockerExecutor, name: str, journal_path: str | None = None) -> dict:
    """What `ownvol doctor` shows of a container (its facts, health, the lines of its run, the plan, the other
    containers on its data mount's source and, from the journal at journal_path when there is one, a foreign
    owner that keeps coming back); raises click.ClickException when there is no such container."""
    try:
        container, target = executor.target(name)
    except docker.errors.NotFound:
        raise click.ClickException(f"no container {name}") from None
    health = executor.health(container.id)
    catalogue = by_family(target.service).catalogue
    state = container.attrs.get("State") or {}
    since = run_began(state)
    logs = container.logs(tail=200, since=since) if since else container.logs(tail=200)
    seen = [d.as_dict() for _, d in patterns.read_log(logs.decode(errors="replace").splitlines(), catalogue)]
    engine_error = state.get("Error") or ""
    error_type: str | None = None  # what the hook would open an incident for: a line of its own, else its probe
    if seen:
        error_type = seen[-1]["error_type"]
    elif health.owner and not health.owner.get("ok", True) and target.persists is not False:
        error_type = "permission-denied"
    elif health.state in INCIDENT_STATES:
        error_type = "persistence-failed"
    if health.healthy or (engine_error and not seen):
        error_type = None  # never acted on while healthy; an engine that cannot start it is not ours to fix
    strategy = load().strategy(error_type or "persistence-failed", target.service, plan_of)
    about = seen[-1] if seen and error_type else ({**health.about, "context": {}} if health.about and error_type
                                                   else None)
    path_plan = executor.for_path(target, about).path_plan if about else None
    return {"container": target.as_dict(), "node": engine_node(executor.client()), "health": health.as_dict(),
            "path_plan": path_plan,
            "detections": seen[-10:], "engine_error": engine_error, "error_type": error_type,
            "repair_route": repair_route(executor.context(target)), "plan": list(strategy.actions),
            "drift_watch": _drift_watch(executor, target), "shared": _shared(executor, container.id, journal_path)}


def _shared(executor: DockerExecutor, container_id: str, journal_path: str | None) -> dict:
    """{"others": the other containers on the data mount's source (DockerExecutor.sharers; None when the engine
    did not answer), "conflict": the foreign owner the hook's journal shows coming back to it within the breaker's
    window (hooks/shared.py recurring, with its "message"), or None}."""
    try:
        others: list[dict] | None = executor.sharers(container_id)
    except docker.errors.DockerException:
        others = None
    conflict = None
    if journal_path and os.path.exists(journal_path):
        journal = Journal(journal_path)
        try:
            repairs = journal.foreign_owners(container_id, time.time() - load().breaker_window)
        finally:
            journal.close()
        conflict = recurring(repairs, repairs[-1][0]) if repairs else None
        if conflict is not None:
            conflict["message"] = advice(conflict, others)
    return {"others": others, "conflict": conflict}


def _drift_watch(executor: DockerExecutor, target) -> str:
    """"on: PATH" when a hook here would watch the data dir with inotify (hooks/drift.py), else "off: why"."""
    why = watchable(target.mount, executor.repair_via != "helper" and engine_paths_reachable())
    if why:
        return f"off: {why}; the periodic probe (--interval) finds a change"
    return f"on: {target.mount.host_path} (a chown or chmod there wakes its probe at once)"


def run_began(state: dict) -> float | None:
    """Where the container's last run's log begins (epoch seconds), to read its lines and not an earlier run's:
    while it runs, the end of the run before (State.FinishedAt; the server may log before the engine records
    StartedAt), else a second before StartedAt; None when it never started (every line is then its own)."""
    started, finished = state_time(state.get("StartedAt")), state_time(state.get("FinishedAt"))
    if started is None:
        return None
    if state.get("Running") and finished and finished < started:
        return finished
    return started - 1.0


@click.command()
@click.argument("container")
@_state
@_db
@_via
@click.option("--json", "as_json", is_flag=True)
def doctor(container, state_dir, db, repair_via, as_json) -> None:
    """Diagnose a container: facts, health, Redis's own messages, the plan, who else mounts its data. Changes
    nothing."""
    report = diagnose(_executor(repair_via), container, db or os.path.join(state_dir, "journal.sqlite"))
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    t, h = report["container"], report["health"]
    click.echo(f"{t['name']} ({t['id']}) image {t['image']}: {h['state']}")
    for r in h["reasons"]:
        click.echo(f"  - {r}")
    write = (h.get("persistence") or {}).get("write")
    if write and write != "committed":
        click.echo(f"write check: {write}")
    click.echo(f"{t['service']}: {t['redis_url']}   data: {t['data_dir']} ({t['origins'].get('dir', 'default')})   "
               f"owner wanted: {t['owner']} ({t['owner_source']})")
    node = report["node"]
    click.echo(f"node: {node['name'] or '?'}{' (swarm node ' + node['swarm_node'] + ')' if node['swarm_node'] else ''}"
               "; its volumes live on this node only")
    if t["mount"]:
        m = t["mount"]
        click.echo(f"mount: {m['type']} {m['source']} at {m['destination']} (repair route: {report['repair_route']})")
        if "mount" in t["origins"] or m["subpath"]:
            path = posixpath.join(m["source"], m["subpath"]) if m["subpath"] else m["source"]
            click.echo(f"repair path: {path} ({t['origins'].get('mount', 'the data dir on its mount')})")
    shown = ("mount",) if t["mount"] else ()
    click.echo("facts from: " + "; ".join(f"{k}: {v}" for k, v in sorted(t["origins"].items()) if k not in shown))
    click.echo(f"drift watch: {report['drift_watch']}")
    shared = report["shared"]
    if shared["others"]:
        others = ", ".join(f"{o['name']} ({o['status']}) at {o['destination']}" for o in shared["others"])
        click.echo(f"shared: {others} mount the same source")
    if shared["conflict"]:
        click.echo(f"conflict: {shared['conflict']['message']}")
    for note in t["notes"]:
        click.echo(f"note: {note}")
    for d in report["detections"]:
        click.echo(f"seen since this start: [{d['error_type']}] {d['message']}")
    if report["engine_error"]:
        click.echo(f"engine: {report['engine_error']}")
    plan = _echo_path_plan(report.get("path_plan"), t["owner"])
    if report["error_type"] and plan and not plan["mount"]:
        click.echo(f"diagnosis: {report['error_type']} on {plan['path']}; the hook changes nothing there (above)")
    elif report["error_type"]:
        click.echo(f"diagnosis: {report['error_type']}; the hook would try: {', '.join(report['plan'])}")
    elif report["engine_error"] and not h["state"] == "healthy":
        click.echo("diagnosis: the engine could not start it (above); nothing ownvol repairs")
    elif h["state"] == "healthy":
        click.echo("diagnosis: nothing to do")
    else:
        click.echo(f"diagnosis: nothing the hook acts on while it is {h['state']} with no error of its own "
                   "in the current run's log")


def _echo_path_plan(plan: dict | None, owner: str | None) -> dict | None:
    """doctor's lines for the path a failure names beside the data dir (hooks/paths.py PathPlan.as_dict): the
    path, the mount that holds it, and the repair or the diagnosis; plan as given."""
    if not plan:
        return plan
    where = f"on the mount {plan['where']}" if plan["where"] else "on no mount"
    doing = "create files in" if plan["needs"] == "create" else "read"
    click.echo(f"path: {plan['path']} (the server must {doing} {plan['target']}), {where}")
    if plan["mount"]:
        m = plan["mount"]
        host = posixpath.join(m["source"], m["subpath"]) if m["subpath"] else m["source"]
        click.echo(f"path plan: repair {host} ({m['type']} {m['source']} at {m['destination']}"
                   f"{', the file alone' if m.get('file') else ''}) for {owner}")
    else:
        click.echo(f"path plan: nothing done; {plan['diagnosis']}")
    return plan


@click.command("repair")
@click.argument("container")
@_state
@_db
@_via
@click.option("--strategies", type=click.Path(dir_okay=False), envvar="OWNVOL_STRATEGIES", default=None)
def repair_cmd(container, state_dir, db, repair_via, strategies) -> None:
    """Recover a container now, by its strategy, in the foreground; journaled like the hook's own.

    A local repair shows its progress (entries walked, changed, rate); a summary of every action follows.
    The hook's JSON events go to stderr."""
    from rich import progress as bars  # rich: CLI output only, not on `watch`'s start
    executor = _executor(repair_via)
    report = diagnose(executor, container)
    options = assembly.Options(state_dir=state_dir, db=db)
    os.makedirs(state_dir, exist_ok=True)
    cid = executor.target(container)[0].id
    name = report["container"]["name"]
    out = console()
    with bars.Progress(bars.SpinnerColumn(), bars.TextColumn("{task.description}"),
                       bars.TextColumn("{task.fields[walked]:>10} walked"),
                       bars.TextColumn("{task.fields[changed]:>10} changed"),
                       bars.TextColumn("{task.fields[rate]:>14}"),
                       bars.TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task(f"recovering {name}", walked=0, changed=0, rate="")
        executor.progress = _meter(bar, task)
        executor.start_stopped = True
        recovery = Recovery(Journal(options.db_path), load(strategies), Telemetry(out=sys.stderr), executor,
                            plans=plan_of)
        incident = recovery.report(cid, name, report["error_type"] or "persistence-failed", "manual",
                                   {"message": "ownvol repair", "health": report["health"]["state"],
                                    "service": report["container"]["service"]},
                                   background=False)
    if incident is None:
        raise click.ClickException("an incident is already open for it: the running hook is on it")
    final = recovery.journal.incident(incident.id)
    out.print(_summary(final, recovery.journal.actions(final.id)))
    if final.status != "resolved":
        raise click.ClickException(f"incident #{final.id} {final.status}: {final.outcome}")


def _meter(bar: Progress, task: TaskID) -> Callable[[int, int], None]:
    """A repair's progress callback drawing on bar: counts, and the rate since the previous call."""
    last = [time.monotonic(), 0]

    def progress(walked: int, changed: int) -> None:
        now = time.monotonic()
        rate = (walked - last[1]) / (now - last[0]) if now > last[0] else 0
        last[:] = [now, walked]
        bar.update(task, walked=f"{walked:,}", changed=f"{changed:,}", rate=f"{rate:,.0f} entries/s")

    return progress


def _summary(incident: Incident, actions: list[ActionRecord]) -> Table:
    from rich import box  # rich: CLI output only, not on `watch`'s start
    from rich.table import Table  # rich: CLI output only, not on `watch`'s start
    from rich.text import Text  # rich: CLI output only, not on `watch`'s start
    took = f" in {incident.closed_at - incident.detected_at:.2f} s" if incident.closed_at else ""
    table = Table("step", "action", "result", "verified", "seconds", "detail", box=box.SIMPLE_HEAD,
                  title=f"incident #{incident.id} {incident.container_name}: {incident.status}{took}"
                        f" ({incident.outcome or ''})", title_justify="left")
    for a in actions:
        d = a.detail
        if a.action == "repair-ownership" and "visited" in d:
            seconds = d.get("seconds") or 0
            rate = f", {d['visited'] / seconds:,.0f} entries/s" if seconds else ""
            what = f"{d['visited']:,} walked, {d['changed']:,} changed in {seconds:.2f} s{rate} ({d.get('route')})"
        else:
            what = str(d.get("why") or d.get("error") or (d.get("verify") or {}).get("state") or "")
        table.add_row(str(a.step), a.action, Text(a.result or "interrupted", style=_TONES.get(a.result or "", "")),
                      _VERIFIED[a.verified].strip() or "-",
                      f"{a.finished_at - a.started_at:.2f}" if a.finished_at else "-", what[:100])
    return table


@click.command()
@_state
@_db
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def history(state_dir, db, limit, as_json) -> None:
    """Incidents, their actions and outcomes, and success rates per (error type, action)."""
    from rich import box  # rich: CLI output only, not on `watch`'s start
    from rich.table import Table  # rich: CLI output only, not on `watch`'s start
    from rich.text import Text  # rich: CLI output only, not on `watch`'s start
    path = db or os.path.join(state_dir, "journal.sqlite")
    if not os.path.exists(path):
        raise click.ClickException(f"no journal at {path}")
    journal = Journal(path)
    incidents = journal.history(limit)
    rates = journal.rates()
    if as_json:
        click.echo(json.dumps({"incidents": [{**i.__dict__, "actions": [a.__dict__ for a in journal.actions(i.id)]}
                                             for i in incidents],
                               "success_rates": [{"type": t, "action": a, "succeeded": ok, "failed": bad}
                                                 for (t, a), (ok, bad) in sorted(rates.items())]}, default=str))
        return
    table = Table("incident", "container", "type", "origin", "status", "seconds", "actions", box=box.SIMPLE_HEAD,
                  title="incidents", title_justify="left")
    for i in incidents:
        steps = [f"{a.step}. {a.action}: {a.result or 'interrupted'}{_VERIFIED[a.verified]}"
                 for a in journal.actions(i.id)]
        table.add_row(f"#{i.id}", i.container_name, i.error_type, i.origin,
                      Text(i.status, style=_TONES.get(i.status, "yellow")),
                      f"{i.closed_at - i.detected_at:.2f}" if i.closed_at else "open", "\n".join(steps) or "-")
    rated = Table("type", "action", "verified after it", "rate", box=box.SIMPLE_HEAD,
                  title="success rates (verified healthy after the action / finished)", title_justify="left")
    for (t, a), (ok, bad) in sorted(rates.items()):
        rated.add_row(t, a, f"{ok}/{ok + bad}", f"{100 * ok / (ok + bad):.0f}%" if ok + bad else "-")
    out = console()
    out.print(table)
    out.print(rated)


@click.command()
@click.argument("file", type=click.File("r", errors="replace"), default="-")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failure, a line each.")
def explain(file, as_json) -> None:
    """What the hook makes of a server's log (FILE, or - for stdin, as `docker logs` prints it): each failure
    it recognises, with its pattern, error type, phase and the versions that print it, read with the catalogue
    of the first family (hooks/services, Redis's first) that recognises any. Changes nothing."""
    lines = file.read().splitlines()
    found, family = [], ""
    for service in services():
        found = patterns.read_log(lines, service.catalogue)
        if found:
            family = service.family
            break
    if as_json:
        for number, d in found:
            click.echo(json.dumps({**d.as_dict(), "service": family, "line": d.line, "line_number": number}))
        return
    if not found:
        click.echo("no known failure in this log")
        return
    click.echo(f"{'LINE':>5} {'PATTERN':<24} {'ERROR TYPE':<21} {'PHASE':<8} {'EXITS':<5} MESSAGE")
    for number, d in found:
        click.echo(f"{number:>5} {d.pattern.id:<24} {d.error_type:<21} {d.pattern.phase:<8} "
                   f"{'yes' if d.pattern.fatal else 'no':<5} {d.message[:100]}")
        context = ", ".join(f"{k}={v}" for k, v in d.context.items())
        click.echo(f"{'':>5} context: {context or '-'}; printed by {', '.join(d.pattern.versions)}")
        if d.pattern.needs:
            named = d.context.get("path") or f"the server's `{d.pattern.path_of}` setting"
            what = "the directory that holds it" if d.pattern.needs == "create" else "it"
            click.echo(f"{'':>5} path: {named}; the hook repairs {what} on the container mount that holds it "
                       "(`ownvol doctor` names the mount), or says what to change when no mount it may touch does")


commands: list[click.Command] = [watch, status, doctor, repair_cmd, history, explain]
