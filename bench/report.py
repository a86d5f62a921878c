"""The results of `make bench` as Markdown, the issue's targets checked against them, and the section of
docs/performance.md that holds the latest table (between two markers; the rest of the file is left
as it is)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.env import REPO

DOCS = REPO / "docs" / "performance.md"
BEGIN = "<!-- make bench: begin (bench/report.py writes what is between these markers) -->"
END = "<!-- make bench: end -->"
BATCH_AGE_MS = 200  # ingest's write_batch_ms default, which the latency target is measured against
LATENCY_MARGIN_MS = 250


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _median(results: dict[str, Any], name: str) -> float | None:
    value = _get(results, "phases", "rates", name, "median")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def checks(results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (where, check) in the results: a check compares the points acknowledged to the broker (or
    written) with the points counted in the database."""

    def walk(where: str, data: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(data, dict):
            if {"expected", "counted", "ok"} <= data.keys():
                yield where, data
                return
            for key, value in data.items():
                yield from walk(f"{where}.{key}" if where else key, value)
        elif isinstance(data, list):
            for i, value in enumerate(data):
                yield from walk(f"{where}[{i}]", value)

    yield from walk("", results.get("phases", {}))


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: what each asks, the measured ratio or value, and whether it is met."""
    out: list[dict[str, Any]] = []
    bare_1, bare_60 = _median(results, "bare_1"), _median(results, "bare_60")
    fl_1, fl_60 = _median(results, "fieldlink_1"), _median(results, "fieldlink_60")
    diy_60 = _median(results, "diy_60")
    influx_60 = _median(results, "influx_60")

    def add(target: str, value: float | None, goal: float, *, at_most: bool = False, unit: str = "×") -> None:
        met = None if value is None else (value <= goal if at_most else value >= goal)
        out.append({"target": target, "value": value, "goal": goal, "unit": unit, "met": met})

    add("fieldlink ≥ 0.8 × bare subscriber, 1 reading/message", fl_1 / bare_1 if fl_1 and bare_1 else None, 0.8)
    if fl_60 and bare_60 and influx_60:
        limit = min(bare_60, influx_60 / 60)
        add("fieldlink ≥ 0.8 × min(bare subscriber, InfluxDB ceiling / 60), 60 readings/message", fl_60 / limit, 0.8)
    else:
        add("fieldlink ≥ 0.8 × min(bare subscriber, InfluxDB ceiling / 60), 60 readings/message", None, 0.8)
    add("fieldlink ≥ 10 × do-it-yourself, 60 readings/message", fl_60 / diy_60 if fl_60 and diy_60 else None, 10)
    for shape in (1, 60):
        p99 = _get(results, "phases", "latency", f"latency_{shape}", "latency_ms", "p99")
        add(
            f"p99 latency at half load ≤ {BATCH_AGE_MS} + {LATENCY_MARGIN_MS} ms, {shape} reading(s)/message",
            p99,
            BATCH_AGE_MS + LATENCY_MARGIN_MS,
            at_most=True,
            unit="ms",
        )
    w1 = _get(results, "phases", "workers", "workers_1", "median")
    w2 = _get(results, "phases", "workers", "workers_2", "median")
    add("two workers ≥ 1.3 × one", w2 / w1 if w1 and w2 else None, 1.3)
    found = list(checks(results))
    spool_checked = _get(results, "phases", "spool", "check") is not None
    bad = sum(1 for _, c in found if not c["ok"])
    out.append(
        {
            "target": "zero points lost or doubled in every phase"
            + ("" if spool_checked else " (the spool phase not run)"),
            "value": f"{len(found) - bad} of {len(found)} counts exact",
            "goal": "all",
            "unit": "",
            "met": (bad == 0 and spool_checked) if found else None,
        }
    )
    return out


def _cpu_row(label: str, cpu: dict[str, Any] | None) -> str:
    cores = (cpu or {}).get("cores", {})
    roles = ("broker", "database", "service", "consumer", "generator", "harness", "others")
    cells = [_num(cores.get(role), 2) if role in cores else "—" for role in roles]
    return f"| {label} | " + " | ".join(cells) + f" | {_num((cpu or {}).get('machine_busy'), 2)} |"


def _median_run(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The round whose rate is the median (for the CPU split shown beside it)."""
    entry = _get(results, "phases", "rates", name) or _get(results, "phases", "workers", name)
    if not entry or not entry.get("runs"):
        return None
    runs = sorted(entry["runs"], key=lambda r: r.get("msgs_per_s", r.get("points_per_s", 0)))
    run: dict[str, Any] = runs[len(runs) // 2]
    return run


def render(results: dict[str, Any], source: Path | str | None = None) -> str:
    phases = results.get("phases", {})
    m = results.get("machine", {})
    rounds = results.get("sizes", {}).get("repeat", 1)
    lines: list[str] = []
    w = lines.append
    w(
        f"<!-- produced by `{results.get('command', 'make bench')}` on {results.get('date')} at {results.get('commit')}"
        f"{f'; results in {source}' if source else ''} -->"
    )
    w("")
    w(
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB; Linux {m.get('kernel')}; "
        f"Python {m.get('python')}; {m.get('mosquitto')}; {m.get('influxdb')}. Load average "
        f"{_load(m.get('loadavg_start'))} at the start, {_load(m.get('loadavg_end'))} at the end "
        f"(the machine is shared); the run took {_num(results.get('seconds'))} s."
    )
    rates = phases.get("rates", {})
    if rates and "error" not in rates:
        w("")
        w(f"### Rates (50 devices over mutual TLS, QoS 1; median of {rounds} round(s))")
        w("")
        w("| consumer | 1 reading/message | 60 readings/message |")
        w("| --- | --- | --- |")

        def cell(name: str, points: bool = False) -> str:
            value = _median(results, name)
            if value is None:
                return "—"
            if points:
                return f"{_num(value)} points/s"
            shape = int(name.rsplit("_", 1)[1])
            extra = f" ({_num(value * shape)} points/s)" if shape > 1 else ""
            return f"{_num(value)} msg/s{extra}"

        w(f"| bare aiomqtt subscriber (receive and count) | {cell('bare_1')} | {cell('bare_60')} |")
        w(
            "| InfluxDB alone, 5,000-point batches (best of 1 and 2 connections) | "
            f"{cell('influx_1', True)} | {cell('influx_60', True)} |"
        )
        w(f"| do-it-yourself: aiomqtt + one HTTP write per message | {cell('diy_1')} | {cell('diy_60')} |")
        w(f"| **fieldlink ingest**, one worker, every check | **{cell('fieldlink_1')}** | **{cell('fieldlink_60')}** |")
        spread = []
        for name in ("bare_1", "fieldlink_1", "bare_60", "fieldlink_60", "diy_1", "diy_60"):
            values = _get(rates, name, "values") or []
            if len(values) > 1:
                spread.append(f"{name} {', '.join(_num(v) for v in values)}")
        others = [
            run["cpu"]["cores"].get("others", 0.0)
            for entry in rates.values()
            if isinstance(entry, dict)
            for run in entry.get("runs", [])
            if isinstance(run.get("cpu"), dict) and "cores" in run["cpu"]
        ]
        if others:
            others.sort()
            w("")
            w(
                f"Other work on the machine while these were measured (cores busy beyond the bench's own "
                f"processes, over {len(others)} measurements): median {others[len(others) // 2]:.2f}, "
                f"max {others[-1]:.2f}."
            )
        if spread:
            w("")
            w("Every round (msg/s): " + "; ".join(spread) + ".")
        w("")
        w("CPU split while each consumer drained its queue (cores, median round; 2 = the whole machine):")
        w("")
        w("| phase | broker | database | service | consumer | generator | harness | others | machine busy |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, label in (
            ("bare_1", "bare subscriber, 1 reading"),
            ("bare_60", "bare subscriber, 60 readings"),
            ("fieldlink_1", "fieldlink, 1 reading"),
            ("fieldlink_60", "fieldlink, 60 readings"),
        ):
            chosen = _median_run(results, name)
            if chosen:
                w(_cpu_row(label, chosen.get("cpu")))
    latency = phases.get("latency", {})
    if latency and "error" not in latency:
        w("")
        w("### Latency: device timestamp to queryable, at half of fieldlink's maximum")
        w("")
        w(
            "| readings/message | load (msg/s) | devices | p50 | p90 | p99 | max | probes "
            "| CPU: broker / database / service / generator / harness / others |"
        )
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for shape in (1, 60):
            entry = latency.get(f"latency_{shape}")
            if not entry:
                continue
            lat = entry["latency_ms"]
            cores = _get(entry, "load", "cpu", "cores") or {}
            split = " / ".join(
                _num(cores.get(r), 2) for r in ("broker", "database", "service", "generator", "harness", "others")
            )
            late = f" ({entry['probes_late']} late)" if entry.get("probes_late") else ""
            w(
                f"| {shape} | {_num(entry['load']['msgs_per_s'])} | {entry['load'].get('devices', '—')} | "
                f"{_num(lat['p50'])} ms | {_num(lat['p90'])} ms | {_num(lat['p99'])} ms | {_num(lat['max'])} ms | "
                f"{entry['probes']}{late} | {split} |"
            )
    workers = phases.get("workers", {})
    if workers:
        w("")
        w("### One worker against two (1 reading/message)")
        w("")
        if "skipped" in workers or "error" in workers:
            w(f"Not measured: {workers.get('skipped') or workers.get('error')}.")
        else:
            w("| workers | msg/s (median) | every round (others' load, cores) | CPU: broker / database / service |")
            w("| --- | --- | --- | --- |")
            for n in (1, 2):
                entry = workers.get(f"workers_{n}", {})
                chosen = _median_run(results, f"workers_{n}") or {}
                cores = _get(chosen, "cpu", "cores") or {}
                split = " / ".join(_num(cores.get(r), 2) for r in ("broker", "database", "service"))
                values = ", ".join(
                    f"{_num(r.get('msgs_per_s'))} ({_num(_get(r, 'cpu', 'cores', 'others'), 2)})"
                    for r in entry.get("runs", [])
                )
                w(f"| {n} | {_num(entry.get('median'))} | {values} | {split} |")
    storm = phases.get("storm", {})
    if storm and "error" not in storm:
        w("")
        w(f"### Reconnect storm: {storm['devices']} TLS devices dropped and reconnecting at once")
        w("")
        w(
            "| first connect (all) | all reconnected | median reconnect | all publishing again | median "
            "| failed connects |"
        )
        w("| --- | --- | --- | --- | --- | --- |")
        w(
            f"| {_num(storm['first_connect_s'], 2)} s | {_num(storm['all_connected_s'], 2)} s | "
            f"{_num(storm['connected_p50_s'], 2)} s | {_num(storm['all_publishing_s'], 2)} s | "
            f"{_num(storm['publishing_p50_s'], 2)} s | {storm['connect_failures']} |"
        )
    spool = phases.get("spool", {})
    if spool and "error" not in spool:
        w("")
        w("### Database outage during the load")
        w("")
        events = "; ".join(f"{e['event']} at {e['at_s']:.0f} s" for e in spool.get("events", []))
        counters = spool.get("counters", {})
        shown = {k: v for k, v in counters.items() if k.startswith(("spool", "write_retries", "stored_messages"))}
        w(
            f"60 readings/message at {_num(spool['load']['msgs_per_s'])} msg/s for "
            f"{_num(results.get('sizes', {}).get('spool_s'))} s; {events}. Every point stored "
            f"{_num(spool['caught_up_s'], 1)} s after the load ended: "
            f"{'yes' if spool['check']['ok'] else 'NO'} ({spool['check']['counted']:,} of "
            f"{spool['check']['expected']:,}). Service counters: `{shown}`"
            + ("" if spool.get("spool_supported") else " (no spool in this build: the service held and retried).")
        )
    clients = phases.get("clients", {})
    if clients and "error" not in clients:
        w("")
        w("### HTTP clients for the writer: identical batches, one at a time, as the writer task sends them")
        w("")
        w(
            "| batch | path | client | ms per batch (median) | client CPU ms per batch (median) "
            "| points/s (all rounds) | all stored |"
        )
        w("| --- | --- | --- | --- | --- | --- | --- |")
        for size in sorted(clients, key=lambda k: -int(k) if k.isdigit() else 0):
            sized = clients[size]
            if not isinstance(sized, dict) or "v1" not in sized:
                continue
            for path, label in (("v1", "v1 `/write`, InfluxDB 1.6.7"), ("v2", "v2 `/api/v2/write`, VictoriaMetrics")):
                for name, entry in sized.get(path, {}).items():
                    w(
                        f"| {int(size):,} points | {label} | {name} | {_num(entry['ms_per_batch'], 2)} | "
                        f"{_num(entry['cpu_ms_per_batch'], 2)} | {_num(_overall_rate(entry, int(size)))} | "
                        f"{'yes' if entry['correct'] else 'NO'} |"
                    )
    w("")
    w("### Targets (issue 9)")
    w("")
    w("| target | measured | met |")
    w("| --- | --- | --- |")
    for t in results.get("targets") or targets(results):
        value = t["value"]
        if isinstance(value, float):
            value = f"{value:.2f} {t['unit']}".strip()
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        w(f"| {t['target']} | {value if value is not None else '—'} | {met} |")
    crowded = _crowded(results)
    if crowded:
        w("")
        w(
            "Measured while other work on the machine took half a core or more (read these with care): "
            + "; ".join(crowded)
            + "."
        )
    errors = [f"{name}: {p['error']}" for name, p in phases.items() if isinstance(p, dict) and "error" in p]
    if errors:
        w("")
        w("Phases that failed: " + "; ".join(errors))
    return "\n".join(lines) + "\n"


def _crowded(results: dict[str, Any]) -> list[str]:
    """Where other work on the machine took half a core or more (a quarter of it)."""
    found = []

    def walk(where: str, data: Any) -> None:
        if isinstance(data, dict):
            cpu = data.get("cpu")
            if isinstance(cpu, dict) and "cores" in cpu:
                others = cpu["cores"].get("others", 0) or 0
                if others >= 0.5:
                    found.append(f"{where} (others {others:.2f} cores)")
            for key, value in data.items():
                if key not in ("cpu", "fill"):
                    walk(f"{where}.{key}" if where else key, value)
        elif isinstance(data, list):
            for i, value in enumerate(data):
                walk(f"{where}[{i}]", value)

    walk("", results.get("phases", {}))
    return found


def _overall_rate(entry: dict[str, Any], size: int) -> float | None:
    """Points per second over every round together: all points over all the time taken."""
    rounds = entry.get("rounds") or []
    points = sum(r["batches"] * size for r in rounds)
    seconds = sum(r["batches"] * size / r["points_per_s"] for r in rounds if r["points_per_s"])
    return points / seconds if seconds else None


def _load(value: Any) -> str:
    if not value:
        return "?"
    return " / ".join(f"{x:.1f}" for x in value)


def update_docs(text: str, path: Path = DOCS) -> None:
    """Put `text` between the markers in docs/performance.md (appended with its heading if missing)."""
    doc = path.read_text()
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n## The ingest pipeline (`make bench`)\n\n" + block + "\n"
    path.write_text(doc)
