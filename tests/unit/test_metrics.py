"""The node's metrics table and registry (node/metrics.py), read back with prometheus_client's own parser."""

from __future__ import annotations

import ast
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wwwserve.node.metrics import METRICS, Metrics

ROOT = Path(__file__).resolve().parents[2]


def samples(metrics: Metrics) -> list[Sample]:
    return [s for family in text_string_to_metric_families(metrics.render()) for s in family.samples]


def test_every_declared_metric_is_on_the_page_with_its_type_and_help() -> None:
    metrics = Metrics()
    bare = {s.name for f in text_string_to_metric_families(metrics.render()) for s in f.samples}
    assert bare == {"wwwserve_http_requests_in_flight"}  # sampled gauges without a source are absent, not 0
    for name, spec in METRICS.items():
        if spec.sampled:
            metrics.sample(name, lambda spec=spec: {tuple("x" for _ in spec.labels): 1.0})
    families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
    for name, spec in METRICS.items():
        family = families[name.removesuffix("_total") if spec.kind == "counter" else name]
        assert (family.type, family.documentation) == (spec.kind, spec.help), name


def test_sampled_gauges_are_read_at_scrape_time_and_absent_when_their_source_says_none() -> None:
    metrics = Metrics()
    queue = {"user": 2, "node": 0}
    kv: dict[str, float] = {}
    metrics.sample("wwwserve_requests_waiting", lambda: {(source,): n for source, n in queue.items()})
    metrics.sample("wwwserve_engine_kv_cache_usage_ratio", lambda: {(name,): v for name, v in kv.items()} or None)
    metrics.sample("wwwserve_stake_wei", lambda: None)
    metrics.sample("wwwserve_credit_wei", lambda: 1 / 0)  # a failing source leaves its series out
    assert metrics.reading("wwwserve_requests_waiting", source="user") == 2
    queue["user"] = 5
    kv["vllm"] = 0.25
    page = {(s.name, tuple(s.labels.values())): s.value for s in samples(metrics)}
    assert page[("wwwserve_requests_waiting", ("user",))] == 5
    assert page[("wwwserve_engine_kv_cache_usage_ratio", ("vllm",))] == 0.25
    assert not {"wwwserve_stake_wei", "wwwserve_credit_wei"} & {name for name, _ in page}
    assert metrics.reading("wwwserve_stake_wei") is None
    with pytest.raises(ValueError, match="unknown sampled gauge"):
        metrics.sample("wwwserve_delegations_total", lambda: 1.0)


def test_record_observes_a_declared_histogram_with_its_labels() -> None:
    metrics = Metrics(buckets_s=(0.1, 1.0))
    labels = {"kind": "chat", "stream": "true", "executor": "peer"}
    metrics.record("wwwserve_generation_duration_seconds", 0.5, **labels)
    assert metrics.value("wwwserve_generation_duration_seconds_bucket", **labels, le="0.1") == 0
    assert metrics.value("wwwserve_generation_duration_seconds_bucket", **labels, le="1.0") == 1
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.record("wwwserve_time_to_first_token_seconds", 0.1, kind="chat")
    with pytest.raises(ValueError, match="unknown histogram"):
        metrics.record("wwwserve_delegations_total", 0.1, outcome="ok")


def test_count_keeps_one_series_per_label_set() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.count("wwwserve_delegations_total", outcome="ok")
    metrics.count("wwwserve_delegations_total", outcome="failed")
    metrics.count("wwwserve_peer_messages_total", path='/peer/"odd"\npath', outcome="rejected")
    counted = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(metrics)}
    assert counted[("wwwserve_delegations_total", (("outcome", "ok"),))] == 3
    assert counted[("wwwserve_delegations_total", (("outcome", "failed"),))] == 1
    assert counted[("wwwserve_peer_messages_total", (("outcome", "rejected"), ("path", '/peer/"odd"\npath')))] == 1
    assert metrics.value("wwwserve_delegations_total", outcome="ok") == 3
    assert metrics.value("wwwserve_delegations_total", outcome="unverified") == 0  # not counted yet


def test_an_undeclared_name_or_label_is_an_error_not_a_new_series() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="unknown counter 'wwwserve_delegation_total'"):
        metrics.count("wwwserve_delegation_total", outcome="ok")
    with pytest.raises(ValueError, match=r"takes the labels \['outcome'\]"):
        metrics.count("wwwserve_delegations_total", result="ok")
    with pytest.raises(ValueError, match="takes the labels"):
        metrics.count("wwwserve_peer_messages_total", outcome="accepted")  # path missing
    with pytest.raises(ValueError, match="unknown counter"):
        metrics.count("wwwserve_http_requests_in_flight")  # a gauge, not a counter
    with pytest.raises(ValueError, match="unknown metric sample"):
        metrics.value("wwwserve_nothing_total")
    assert {s.name for s in samples(metrics)} == {"wwwserve_http_requests_in_flight"}


def test_every_count_call_in_the_code_names_a_declared_counter_with_its_labels() -> None:
    """Catches a misspelt name or label on paths the other tests never reach (a rare duel step, say)."""
    seen = 0
    for path in [*(ROOT / "node").rglob("*.py"), *(ROOT / "judge").rglob("*.py")]:
        for call in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant)):
                continue
            name = call.args[0].value
            func = call.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called not in ("count", "_count") or not (isinstance(name, str) and name.startswith("wwwserve_")):
                continue
            seen += 1
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            assert name in METRICS and METRICS[name].kind == "counter", f"{where}: {name} is not a declared counter"
            assert {k.arg for k in call.keywords} == set(METRICS[name].labels), f"{where}: labels of {name}"
    assert seen >= 10  # the scan found the calls (dispatch, duels, peer messages: 14 call sites in December)


def test_requests_are_counted_and_timed_per_route() -> None:
    metrics = Metrics(known_routes=["/v1/models"], buckets_s=(0.1, 0.5))
    assert (metrics.route_label("/v1/models"), metrics.route_label("/wp-admin")) == ("/v1/models", "other")
    metrics.observe("/v1/models", "GET", 200, 0.3)
    metrics.observe("/v1/models", "GET", 200, 0.05)
    metrics.observe("other", "GET", 404, 2.0)
    route = {"route": "/v1/models"}
    assert metrics.value("wwwserve_http_requests_total", **route, method="GET", status="200") == 2
    assert metrics.value("wwwserve_http_requests_total", route="other", method="GET", status="404") == 1
    assert metrics.value("wwwserve_http_request_duration_seconds_bucket", **route, le="0.1") == 1
    assert metrics.value("wwwserve_http_request_duration_seconds_bucket", **route, le="0.5") == 2
    assert metrics.value("wwwserve_http_request_duration_seconds_bucket", route="other", le="+Inf") == 1
    assert metrics.value("wwwserve_http_request_duration_seconds_sum", **route) == pytest.approx(0.35)
    assert metrics.value("wwwserve_http_request_duration_seconds_count", route="other") == 1


def test_each_node_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # a second node in the same process: no "Duplicated timeseries" error
    a.count("wwwserve_judge_steps_total", step="commit")
    assert a.value("wwwserve_judge_steps_total", step="commit") == 1
    assert b.value("wwwserve_judge_steps_total", step="commit") == 0
    global_page = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "wwwserve_" not in global_page


def test_histogram_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Metrics(buckets_s=(0.5, 0.1))
    with pytest.raises(ValueError, match="strictly increasing"):
        Metrics(buckets_s=(0.1, 0.1, 0.5))


def _dashboard_panels() -> list[dict[str, object]]:
    import json

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_grafana_dashboard_charts_exactly_the_declared_metrics_with_their_labels() -> None:
    """docs/grafana-dashboard.json cannot drift from METRICS: every expression names declared metrics (a
    histogram by its _bucket series) and groups by their declared labels; every declared metric is charted."""
    import re

    charted: set[str] = set()
    panels = _dashboard_panels()
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert isinstance(targets, list) and targets, panel["title"]
        for target in targets:
            expr = target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            names = set(re.findall(r"\bwwwserve_[a-z0-9_]+", expr))
            assert names, f"{panel['title']}: {expr} charts no wwwserve metric"
            labels: set[str] = {"le", "instance"}
            for sample in names:
                base = next((sample.removesuffix(s) for s in ("_bucket", "_sum", "_count")
                             if sample.endswith(s) and sample.removesuffix(s) in METRICS), sample)
                assert base in METRICS, f"{panel['title']}: {sample} is not declared in node.metrics.METRICS"
                assert (METRICS[base].kind == "histogram") == (base != sample), f"{sample}: use a histogram's series"
                charted.add(base)
                labels |= set(METRICS[base].labels)
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                used = {label.strip() for label in group.split(",")}
                assert used <= labels, f"{panel['title']}: {expr} groups by undeclared labels {used - labels}"
    assert charted == set(METRICS), f"not charted: {sorted(set(METRICS) - charted)}"


def test_the_module_docstring_and_the_readme_list_every_declared_metric_and_no_other() -> None:
    import re

    import wwwserve.node.metrics as module

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Metrics and logs"):]
    section = section[:section.index("\n## ") if "\n## " in section else len(section)]
    section = section[:section.index("\n### ", 1) if "\n### " in section[1:] else len(section)]
    for where, text in (("node/metrics.py's docstring", module.__doc__ or ""), ("README's Metrics and logs", section)):
        named = set(re.findall(r"\bwwwserve_[a-z0-9_]+", text))
        missing, extra = sorted(set(METRICS) - named), sorted(named - set(METRICS))
        assert not missing and not extra, f"{where}: missing {missing}, extra {extra}"
