"""The backtest report: actions' parameters previewed, a dry run's actions collected (bounded), and
the HTML page (``replay --dry-run --html``), read as text and opened in a headless browser."""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.pages import CHROMIUM, chromium, colour, console_messages, external_references, pixels, sections
from worker.actions.base import PlannedAction
from worker.actions.preview import HIDDEN, render_params
from worker.actions.secrets import Placeholders
from worker.cli import main
from worker.core.accounting import Fate, Skip, Tally
from worker.core.decoding import decode_body
from worker.core.memos import Expiry, Notification
from worker.core.rules import RulesTable
from worker.events import Event, Position
from worker.masking import MASKER
from worker.replay.backtest import MAX_BUCKETS, WIDTHS, Backtest, Histogram, display_width
from worker.replay.backtest_page import BAR_COLOUR, render_html
from worker.rulefiles.loading import load_rules

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "rules" / "examples.yaml"
SAMPLE = ROOT / "worker" / "samples" / "capture"
START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ml-prod"

RULES = """\
rules:
  - name: mail-failed
    description: Mail when a run fails.
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]}
    actions:
      - type: email
        host: smtp.example.com
        username: alerts@example.com
        password: ${env:SMTP_PASSWORD}
        sender: alerts@example.com
        to: [oncall@example.com]
        subject: "Run {{ data.runId }} failed"
        text: "{{ data.missing }}"
        timeout: 5
      - type: webhook
        url: https://hooks.example.com/runs
        headers: {X-Run: "{{ data.runId }}"}
        secret_headers: {x-functions-key: "${env:FUNCTION_KEY}"}
        signature: {secret: "${env:HMAC_KEY}"}
        body: {run: "{{ data.runId }}", attempt: "{{ data.attempt }}", note: "{{ data.note | default('') }}"}
  - name: run-stuck
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]}
    expect:
      within: 6h
      filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunCompleted]}
    actions:
      - type: email
        host: smtp.example.com
        sender: alerts@example.com
        to: [oncall@example.com]
        subject: "Run {{ data.runId }} has been running for {{ expectation.within }}"
        text: "{{ expectation.key }} was due by {{ expectation.deadline }}"
  - name: digest
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.RunStatusChanged]}
    group: {by: "{{ data.experimentName }}", wait: 2m, interval: 30m}
    actions:
      - type: webhook
        url: https://hooks.example.com/digest
        body: {count: "{{ group.count }}", key: "{{ group.key }}", first: "{{ events[0].id }}"}
  - name: never-matched
    filter: {includedEventTypes: [Microsoft.MachineLearningServices.ModelDeployed]}
    actions:
      - {type: log}
"""


@pytest.fixture
def table(tmp_path: Path) -> RulesTable:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    return load_rules([path], env=Placeholders())


def event(
    number: int, *, at: datetime | None = None, subject: str | None = None, data: dict[str, object] | None = None
) -> Event:
    moment = at or START + timedelta(seconds=number)
    envelope = {
        "id": f"ev-{number}",
        "topic": TOPIC,
        "subject": subject or f"experiments/e/runs/run-{number}",
        "eventType": "Microsoft.MachineLearningServices.RunStatusChanged",
        "eventTime": moment.isoformat(),
        "data": {"runId": f"run-{number}", "attempt": number, "experimentName": "churn", **(data or {})},
        "dataVersion": "2",
    }
    (decoded,) = decode_body(json.dumps([envelope]), Position("0", str(number), number, moment))
    assert isinstance(decoded, Event)
    return decoded


def planned(
    table: RulesTable, rule: str, item: Event, memo: Expiry | Notification | None = None
) -> list[PlannedAction]:
    (found,) = [r for r in table.rules if r.name == rule]
    return [PlannedAction(rule, spec, item, memo=memo) for spec in found.actions]


def group_of(*events: Event, total: int) -> Notification:
    times = [e.position.enqueued_time.timestamp() for e in events if e.position.enqueued_time is not None]
    return Notification("digest", "churn", events, total, min(times), max(times))


# --- preview ----------------------------------------------------------------------------------------------


def test_parameters_render_as_the_executor_would_and_secrets_never_show(table: RulesTable) -> None:
    mail, hook = planned(table, "mail-failed", event(7))
    shown = render_params(mail)
    assert shown["subject"] == "Run run-7 failed"
    assert shown["to"] == ["oncall@example.com"]
    assert shown["host"] == "smtp.example.com"
    assert shown["timeout"] == 5  # given
    assert "retry" not in shown  # unset, None: left out
    assert "ca_file" not in shown
    assert shown["password"] == HIDDEN
    params = render_params(hook)
    assert params["url"] == "https://hooks.example.com/runs"
    assert params["headers"] == {"X-Run": "run-7"}
    # A JSON template keeps the expression's type: the attempt is a number.
    assert params["body"] == {"run": "run-7", "attempt": 7, "note": ""}
    assert params["secret_headers"] == {"x-functions-key": HIDDEN}
    assert params["signature"] == {"secret": HIDDEN, "header": "X-Signature-256", "prefix": "sha256="}
    text = json.dumps([shown, params])  # JSON-ready, and no placeholder of a secret in it
    assert "<SMTP_PASSWORD>" not in text
    assert "<FUNCTION_KEY>" not in text
    assert "<HMAC_KEY>" not in text


def test_a_template_that_fails_on_the_event_shows_its_error_in_its_place(table: RulesTable) -> None:
    mail, _ = planned(table, "mail-failed", event(7))
    shown = render_params(mail)
    error = shown["text"]
    assert isinstance(error, dict)
    assert set(error) == {"error"}
    assert "missing" in str(error["error"])
    assert shown["subject"] == "Run run-7 failed"  # the others still render


def test_an_expiry_and_a_notification_render_with_what_they_remember(table: RulesTable) -> None:
    start = event(1)
    deadline = START.timestamp() + 6 * 3600
    (expired,) = planned(table, "run-stuck", start, Expiry("run-stuck", start.subject or "", deadline, "6h", start))
    shown = render_params(expired)
    assert shown["subject"] == "Run run-1 has been running for 6h"
    assert shown["text"] == f"{start.subject} was due by 2026-11-01T15:00:00Z"
    first, second = event(2), event(3)
    notification = group_of(first, second, total=5)
    (notified,) = planned(table, "digest", first, notification)
    assert render_params(notified)["body"] == {"count": 5, "key": "churn", "first": "ev-2"}


# --- the collector ----------------------------------------------------------------------------------------


def test_the_actions_of_one_occurrence_are_listed_together_and_rows_are_bounded(table: RulesTable) -> None:
    backtest = Backtest(rows_per_rule=3)
    for number in range(10):
        for action in planned(table, "mail-failed", event(number)):
            backtest.add(action)
    record = backtest.rules["mail-failed"]
    assert [row.event_id for row in record.rows] == ["ev-0", "ev-1", "ev-2"]
    assert [[a.action_type for a in row.actions] for row in record.rows] == [["email", "webhook"]] * 3
    assert record.unlisted == 7
    # The counts cover every action, listed or not.
    assert record.actions == {("email", "event"): 10, ("webhook", "event"): 10}
    assert record.occurrences == {"event": 10}
    assert record.times.total == 10
    assert backtest.total == 20
    row = record.rows[1]
    assert row.subject == "experiments/e/runs/run-1"
    assert row.enqueued_time == START + timedelta(seconds=1)
    assert row.partition_id == "0"
    assert row.actions[0].params["subject"] == "Run run-1 failed"


def test_expiries_and_notifications_are_recorded_with_their_keys(table: RulesTable) -> None:
    backtest = Backtest()
    start = event(1)
    deadline = START.timestamp() + 6 * 3600
    for action in planned(table, "run-stuck", start, Expiry("run-stuck", "K", deadline, "6h", start)):
        backtest.add(action)
    notification = group_of(event(2), event(3), total=3)
    for action in planned(table, "digest", event(2), notification):
        backtest.add(action)
    (expiry,) = backtest.rules["run-stuck"].rows
    assert (expiry.kind, expiry.expectation_key, expiry.deadline, expiry.within) == ("expiry", "K", deadline, "6h")
    assert expiry.moment == deadline  # it acts at its deadline
    (group,) = backtest.rules["digest"].rows
    assert (group.kind, group.group_key, group.count, group.event_ids) == ("group", "churn", 3, ("ev-2", "ev-3"))
    assert backtest.rules["digest"].actions == {("webhook", "group"): 1}


def test_a_histogram_widens_its_buckets_to_stay_bounded_and_keeps_every_count() -> None:
    times = Histogram()
    base = START.timestamp()
    for i in range(MAX_BUCKETS + 1):
        times.add(base + i * WIDTHS[0])
    assert times.width > WIDTHS[0]
    assert len(times.buckets) <= MAX_BUCKETS
    for i in range(24 * 365):  # a year, hourly
        times.add(base + i * 3600)
    times.add(None)
    assert len(times.buckets) <= MAX_BUCKETS
    assert times.total == MAX_BUCKETS + 1 + 24 * 365 + 1
    assert times.untimed == 1
    span = times.span()
    assert span is not None
    width = display_width(span, times.width)
    bars = times.bars(*span, width)
    assert len(bars) <= 60
    assert sum(n for _, n in bars) == times.total - times.untimed


def test_the_display_width_is_the_narrowest_that_fits() -> None:
    assert display_width((0, 360), 10) == 10  # six minutes: 36 bars of 10 s
    assert display_width((0, 360), 60) == 60  # never narrower than the data's buckets
    assert display_width((0, 30 * 86_400), 10) == 86_400  # a month: a bar a day


# --- the page -----------------------------------------------------------------------------------------------


def page_of(table: RulesTable, tally: Tally | None = None, *actions: PlannedAction) -> str:
    backtest = Backtest()
    for action in actions:
        backtest.add(action)
    return render_html(backtest, tally or Tally(), title="Backtest <of> rules", rules=table)


def test_the_page_shows_every_rule_its_chart_what_it_acted_on_and_the_counts(table: RulesTable) -> None:
    tally = Tally(read=12)
    tally.counts["0", "t", Fate.MATCHED] = 6
    tally.counts["0", "t", Fate.SKIPPED] = 3
    tally.counts["0", "t", Fate.INVALID] = 1
    tally.skipped[Skip.DUPLICATE] = 2
    tally.skipped[Skip.FOREIGN_TOPIC] = 1
    tally.invalid["not_json"] = 1
    tally.rule_matches.update({"mail-failed": 3, "run-stuck": 3, "digest": 3})
    tally.pending["run-stuck", "expect"] = 2
    tally.pending["digest", "group"] = 1
    start = event(1)
    deadline = START.timestamp() + 45  # within the minute: every chart keeps bars of 10 seconds
    notification = group_of(event(2), event(3), total=3)
    actions = [
        *planned(table, "mail-failed", event(1)),
        *planned(table, "mail-failed", event(2)),
        *planned(table, "mail-failed", event(30)),
        *planned(table, "run-stuck", start, Expiry("run-stuck", "experiments/e/runs/run-1", deadline, "44s", start)),
        *planned(table, "digest", event(2), notification),
    ]
    page = page_of(table, tally, *actions)
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Backtest &lt;of&gt; rules</title>" in page
    summary = page.split('<section class="rule"')[0]
    assert '<th>events read</th><td class="n">12</td>' in summary
    assert '<table id="skipped">' in summary
    assert "<th>duplicate</th>" in summary
    assert "<th>foreign_topic</th>" in summary
    assert '<table id="invalid">' in summary
    assert "<th>not_json</th>" in summary
    found = sections(page)
    assert list(found) == ["mail-failed", "run-stuck", "digest", "never-matched"]  # the table's order
    mail = found["mail-failed"]
    assert "Mail when a run fails." in mail
    assert "Run run-1 failed" in mail
    assert "Run run-30 failed" in mail
    assert "experiments/e/runs/run-2" in mail
    assert "ev-30" in mail
    assert 'class="error"' in mail  # the text template that fails on these events
    assert "&#34;attempt&#34;: 30" in mail or "&#34;attempt&#34;:30" in mail  # the webhook's body, as JSON
    # Matches over time: the first two in one 10-second bucket, the third in another; axes labelled.
    assert mail.count('<rect class="bar"') == 2
    assert "<title>2026-11-01 09:00:00 UTC: 2</title>" in mail
    assert "<title>2026-11-01 09:00:30 UTC: 1</title>" in mail
    assert "time (UTC), one bar per 10 seconds" in mail
    assert "events matched</text>" in mail
    stuck = found["run-stuck"]
    assert "Run run-1 has been running for 44s" in stuck
    assert "2026-11-01T09:00:45Z" in stuck
    assert "<title>2026-11-01 09:00:40 UTC: 1</title>" in stuck  # charted at its deadline
    assert "pending at the end: 2 expectations" in stuck
    assert "expectations expired" in stuck
    digest = found["digest"]
    assert "<b>group</b> churn" in digest
    assert "ev-2, ev-3" in digest
    assert "pending at the end: 1 groups" in digest
    assert "It would have done nothing." in found["never-matched"]
    assert external_references(page) == []


def test_event_content_is_escaped_and_secrets_are_masked(table: RulesTable) -> None:
    secret = f"backtest-secret-{uuid.uuid4().hex}"
    MASKER.add(secret)
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    item = event(
        4,
        subject=f"experiments/{hostile}/{secret}",
        data={"runId": f"{hostile} AccountKey=c2VjcmV0LWtleS12YWx1ZQ==", "note": secret},
    )
    page = page_of(table, None, *planned(table, "mail-failed", item))
    assert "<script" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert secret not in page
    assert "c2VjcmV0LWtleS12YWx1ZQ" not in page  # a credential by its shape
    assert "AccountKey=***" in page
    assert external_references(page) == []


def test_the_reference_check_finds_what_it_looks_for() -> None:
    bad = (
        '<script src="https://cdn.example.com/x.js"></script><link rel="stylesheet" href="//fonts.example.com/f.css">'
        '<style>@import "https://x"; body { background: url(http://x/y.png) }</style><a href="http://x">x</a>'
    )
    found = external_references(bad)
    assert any("src=" in f for f in found)
    assert "@import" in found
    assert any(f.lower().startswith("url(") for f in found)
    assert any(f.startswith("href=") for f in found)
    assert external_references('<a href="#rule-1">r</a>') == []


# --- the command ------------------------------------------------------------------------------------------


def test_html_is_refused_without_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    code = main(["replay", "--log-level", "warning", "--html", str(out), "--rules", str(EXAMPLES), str(SAMPLE)])
    assert code == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not out.exists()


# --- in a browser -----------------------------------------------------------------------------------------


def test_the_png_reader_reads_what_it_is_given() -> None:
    def png(rows: list[bytes], filters: list[int]) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        header = struct.pack(">IIBBBBB", 2, len(rows), 8, 2, 0, 0, 0)
        data = b"".join(bytes([f]) + r for f, r in zip(filters, rows, strict=True))
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")

    # Row 0 unfiltered; row 1 "up" (+1 on each byte); row 2 "sub" (each byte + the pixel to its left).
    rows = [bytes([10, 20, 30, 40, 50, 60]), bytes([1] * 6), bytes([5, 6, 7, 1, 1, 1])]
    assert list(pixels(png(rows, [0, 2, 1]))) == [
        bytes([10, 20, 30]),
        bytes([40, 50, 60]),
        bytes([11, 21, 31]),
        bytes([41, 51, 61]),
        bytes([5, 6, 7]),
        bytes([6, 7, 8]),
    ]


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian's package: chromium)")
def test_the_console_check_catches_a_script_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><p>x</p><script>notDefinedAnywhere();</script></body></html>")
    done = chromium(tmp_path / "profile", broken, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<p>x</p>" in done.stdout
    messages = console_messages(done.stderr)
    assert any("notDefinedAnywhere" in line for line in messages), done.stderr[-2000:]


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian's package: chromium)")
def test_the_sample_backtest_report_opens_in_a_browser_with_its_charts(tmp_path: Path) -> None:
    out, counts = tmp_path / "deep" / "report.html", tmp_path / "report.json"
    options = ["--log-level", "warning", "--dry-run", "--html", str(out), "--report", str(counts)]
    code = main(["replay", *options, "--rules", str(EXAMPLES), str(SAMPLE)])
    assert code == 0
    page = out.read_text(encoding="utf-8")
    assert external_references(page) == []
    table = load_rules([EXAMPLES], env=Placeholders())
    found = sections(page)
    assert list(found) == [rule.name for rule in table.rules]
    # A chart for each rule that would have acted, and only for those.
    acted = {name for name, entry in json.loads(counts.read_bytes())["rules"].items() if entry["actions"]}
    assert len(acted) >= 6  # the examples' plain rules all match in the sample
    assert {name for name, section in found.items() if "<svg" in section} == acted

    done = chromium(tmp_path / "profile", out, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    dom = done.stdout
    assert dom.count('<section class="rule"') == len(table.rules)
    for rule in table.rules:
        assert f"<h2>{rule.name}</h2>" in dom
    assert dom.count("<svg") == len(acted)
    assert dom.count('<rect class="bar"') >= len(acted)
    assert "Run " in dom  # a mail's subject, rendered

    shot = tmp_path / "report.png"
    done = chromium(tmp_path / "profile", out, f"--screenshot={shot}", "--window-size=1200,2000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    bar = colour(BAR_COLOUR)
    painted = sum(1 for pixel in pixels(shot.read_bytes()) if pixel == bar)
    assert painted > 500, f"the chart's bars ({BAR_COLOUR}) cover {painted} pixels of the screenshot"
