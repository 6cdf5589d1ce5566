"""Coverage-guided fuzz target for the Merchant API codec (atheris / libFuzzer).

Each input picks a transport (content type), a query string and a body, and runs the codec as a
request would. A refusal must be an ``InvalidRequest``; anything else is a finding, and so is an
accepted message whose parameters cannot travel in an XML callback the way the worker sends one
(names XML cannot carry left out) and be read back.

    .venv/bin/pip install -c constraints.txt -e '.[fuzz]'
    .venv/bin/python fuzz/merchant_codec.py fuzz/corpus/merchant_codec -max_total_time=60

Every finding becomes a case in tests/unit/test_merchant_codec_fuzz_findings.py.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["greengate"]):
    from greengate.api.merchant.codec import is_xml_name, parse_message, parse_xml, render_xml
    from greengate.domain.errors import InvalidRequest

CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "application/json",
    "text/xml",
    "application/xml; charset=utf-8",
    "",
    "text/plain",
]


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    content_type = CONTENT_TYPES[provider.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    query = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 200))
    body = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        params = parse_message(query, body, content_type)
    except InvalidRequest:
        return
    # As an XML callback echoes the merchant's own parameters: the flat ones (the only ones a payment
    # keeps), with the names XML can carry.
    echoed = [(name, value) for name, value in params if isinstance(value, str) and is_xml_name(name)]
    assert parse_xml(render_xml(echoed)) == echoed


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
