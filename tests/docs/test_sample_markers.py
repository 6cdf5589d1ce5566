"""The sample runner's own parts: reading the markers, and telling a drifted answer from a fresh one."""

from __future__ import annotations

from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring

from tests.docs.test_merchant_api_samples import differences
from tests.support import doc_samples

PAGE = """# page

<!-- run
payment: pg_amount=700 "pg_description=Two mugs" card=5367654276102126
request: get_status2.php pg_payment_id={payment_id}
-->

```xml
<?xml version="1.0" encoding="utf-8"?>
<response><pg_status>ok</pg_status><pg_salt>a</pg_salt></response>
```

<!-- not run: needs a payout -->

```xml
<response><pg_status>ok</pg_status></response>
```

```xml
<response><pg_status>error</pg_status></response>
```

```xml
<pg_refund_payments></pg_refund_payments>
```
"""


def test_markers_are_read_into_steps_reasons_and_unmarked_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doc_samples, "DOCS", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(PAGE)

    run, not_run, unmarked = doc_samples.samples(page)

    assert [s.kind for s in run.steps] == ["payment", "request"]
    assert run.steps[0].words == ("pg_amount=700", "pg_description=Two mugs", "card=5367654276102126")
    assert not_run.not_run == "needs a payout" and not_run.steps == ()
    assert unmarked.answer is None


def test_a_sample_must_end_with_the_request_it_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doc_samples, "DOCS", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("<!-- run\npayment: pg_amount=1\n-->\n\n```xml\n<response></response>\n```\n")

    with pytest.raises(ValueError, match="ends with the request"):
        doc_samples.samples(page)


def test_differences_ignore_volatile_values_but_not_names_order_or_other_values() -> None:
    shown = fromstring(
        "<response><pg_status>ok</pg_status><pg_amount>7.00</pg_amount><pg_salt>x</pg_salt></response>"
    )
    fresh_salt = fromstring(
        "<response><pg_status>ok</pg_status><pg_amount>7.00</pg_amount><pg_salt>y</pg_salt></response>"
    )
    other_amount = fromstring(
        "<response><pg_status>ok</pg_status><pg_amount>8.00</pg_amount><pg_salt>x</pg_salt></response>"
    )
    reordered = fromstring(
        "<response><pg_amount>7.00</pg_amount><pg_status>ok</pg_status><pg_salt>x</pg_salt></response>"
    )

    assert differences(shown, fresh_salt) == []
    assert differences(shown, other_amount) == ["/response/pg_amount: '8.00', the page shows '7.00'"]
    assert len(differences(shown, reordered)) == 1


CALLBACK_AND_BROWSER = """# page

<!-- callback
payment: pg_amount=10 pg_result_url={shop}/r.php card=4405645000006150
receive: /r.php
-->

```
POST /r.php HTTP/1.1

pg_payment_id=1&pg_result=1
```

<!-- run
browser: payment.php pg_amount=99
-->

```
HTTP/1.1 303 See Other
location: http://127.0.0.1:8000/pay/abc
```
"""


def test_callback_and_browser_blocks_are_read_with_their_own_last_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(doc_samples, "DOCS", tmp_path)
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "page.md").write_text(CALLBACK_AND_BROWSER)

    [callback] = doc_samples.callback_samples("api")
    [browser] = doc_samples.http_samples("api")

    assert [s.kind for s in callback.steps] == ["payment", "receive"]
    assert callback.message == "pg_payment_id=1&pg_result=1"
    assert [s.kind for s in browser.steps] == ["browser"]
    assert browser.answer.startswith("HTTP/1.1 303 See Other\nlocation: ")
    assert doc_samples.samples(tmp_path / "api" / "page.md") == []  # neither is an XML answer


def test_a_callback_sample_must_end_by_receiving() -> None:
    with pytest.raises(ValueError, match="receive"):
        doc_samples._steps("payment: pg_amount=1\nrequest: get_status.php", last=("receive",))
