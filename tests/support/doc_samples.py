"""Code samples in the documentation that the suite runs against the gateway.

A sample is an answer block in a Markdown page (a fenced ```xml block) preceded by an HTML comment
saying how to get that answer, one step a line:

    <!-- run
    payment: pg_amount=700 pg_order_id=1003 card=5367654276102126
    request: get_status2.php pg_payment_id={payment_id}
    -->

- `payment:` creates a payment with `init_payment.php` (the `pg_*` values given; `card=` then pays it on
  the hosted page, `3ds=` answers 3-D Secure with that password; with `pg_recurring_start=1` the
  profile it starts is `{profile_id}`);
- `funds:` credits the merchant's available test balance with that many whole units (KZT), as settled
  payments would, so that payouts have money to draw on;
- `payout:` creates a payout with `reg2nonreg` (the `pg_*` values given; `card=` then enters the
  recipient's card on the payout page);
- `card:` saves a card for `pg_user_id` with `cardstorage/add` and the card page (`number=` the card,
  `holder=` its holder; `payout=1`: with `cardstoragepayout/add`, a card that only receives payouts);
  its id and token are then `{card_id}` and `{card_token}`;
- `call:` sends a signed request whose answer is not shown (a step before the one that is); a payment
  id in its answer becomes `{payment_id}` (the payment `card/init` made);
- `request:` sends the signed request whose answer the block shows; `unsigned:` sends it as written.
  The payout scripts (`reg2nonreg`, `reg2reg`, `payment_status`) go to `/api/` and are signed with the
  payout secret, the others with the secret key; a script named by a path (`cardstorage/list`) goes to
  `/v1/merchant/{merchant_id}/` and is signed with its last segment (`cardstoragepayout/…` with the
  payout secret).

Values are split like a shell's words, so `pg_description="Two mugs"` keeps its space; `{payment_id}`,
`{payout_id}`, `{profile_id}`, `{card_id}`, `{card_token}` and `{merchant_id}` are replaced by the ids
of this run. An id of this run in an id field or inside a sentence (`payment 7`) matches whatever id the
page shows there. An answer block the suite cannot produce says why instead: `<!-- not run: reason -->`.
Every answer block carries one or the other.

A request the gateway sends to the shop (a callback) is shown as a plain ``` block whose last line is the
message; `<!-- callback ... -->` before it gives the steps, which end with `receive: <path>` (the last
request received at that path of the local shop, whose URL is `{shop}`).

An answer for the payer's browser (a plain ``` block starting with `HTTP/1.1`) is run the same way after a
`<!-- run ... -->` comment; its last step is `browser: <script> <values>`, the signed request sent as a
browser's GET with the values in the query string.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_CALLBACK = re.compile(r"<!--\s*callback\n(?P<steps>.*?)-->\s*\n```\n(?P<body>.*?)\n```", re.S)
_HTTP = re.compile(r"<!--\s*run\n(?P<steps>(?:(?!-->).)*?)-->\s*\n```\n(?P<answer>HTTP/1\.1 .*?)\n```", re.S)
_BLOCK = re.compile(r"(?:<!--(?P<comment>(?:(?!-->).)*?)-->\s*\n)?```xml\n(?P<answer>.*?)\n```", re.S)
STEP_KINDS = ("funds", "payment", "payout", "card", "receive", "browser", "call", "request", "unsigned")
PAYOUT_SCRIPTS = frozenset({"reg2nonreg", "reg2reg", "payment_status"})


@dataclass(frozen=True)
class Step:
    kind: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    page: str
    line: int
    steps: tuple[Step, ...]  # empty when not run
    not_run: str | None  # the reason, when not run
    answer: str | None  # None: a block with no comment at all

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _steps(comment: str, last: tuple[str, ...] = ("request", "unsigned")) -> tuple[Step, ...]:
    body = comment.strip().removeprefix("run").strip()
    steps = []
    for line in body.splitlines():
        kind, sep, rest = line.strip().partition(":")
        if not sep or kind not in STEP_KINDS:
            raise ValueError(f"unknown sample step {line.strip()!r}")
        steps.append(Step(kind, tuple(shlex.split(rest))))
    if not steps or steps[-1].kind not in last:
        raise ValueError(f"a sample ends with the request whose message it shows ({', '.join(last)})")
    return tuple(steps)


def samples(page: Path) -> list[Sample]:
    text = page.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        answer = match.group("answer")
        if not (answer.startswith("<?xml") or answer.startswith("<response")):
            continue  # a request or a callback body, not a gateway answer
        line = text.count("\n", 0, match.start("answer"))
        comment = (match.group("comment") or "").strip()
        name = str(page.relative_to(DOCS))
        if comment.startswith("run"):
            found.append(Sample(name, line, _steps(comment), None, answer))
        elif comment.startswith("not run:"):
            found.append(Sample(name, line, (), comment.removeprefix("not run:").strip(), answer))
        else:
            found.append(Sample(name, line, (), None, None))
    return found


def all_samples(folder: str = "merchant-api") -> list[Sample]:
    return [s for page in sorted((DOCS / folder).glob("*.md")) for s in samples(page)]


@dataclass(frozen=True)
class CallbackSample:
    page: str
    line: int
    steps: tuple[Step, ...]
    message: str  # the callback's parameters as a query string

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def callback_samples(folder: str = "merchant-api") -> list[CallbackSample]:
    found = []
    for page in sorted((DOCS / folder).glob("*.md")):
        text = page.read_text()
        for match in _CALLBACK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            message = match.group("body").strip().splitlines()[-1]
            steps = _steps(match.group("steps"), last=("receive",))
            found.append(CallbackSample(str(page.relative_to(DOCS)), line, steps, message))
    return found


@dataclass(frozen=True)
class HttpSample:
    page: str
    line: int
    steps: tuple[Step, ...]
    answer: str  # status line, headers, a blank line and the body

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def http_samples(folder: str = "merchant-api") -> list[HttpSample]:
    found = []
    for page in sorted((DOCS / folder).glob("*.md")):
        text = page.read_text()
        for match in _HTTP.finditer(text):
            line = text.count("\n", 0, match.start("answer"))
            steps = _steps(match.group("steps"), last=("browser",))
            found.append(HttpSample(str(page.relative_to(DOCS)), line, steps, match.group("answer")))
    return found
