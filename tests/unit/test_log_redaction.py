"""The log set-up of the CLI at --debug: botocore's request logging (which prints the
Authorization header: access key id and signature) never reaches the log, and a
secret key handed to hide_in_logs is replaced in any record, message, arguments or
traceback. The whole-run check is tests/mount/test_security.py."""

from __future__ import annotations

import argparse
import logging

import pytest

from s3pvefs import cli
from s3pvefs.store.s3 import hide_in_logs

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


@pytest.fixture
def debug_log(tmp_path):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = ("botocore", "botocore.endpoint", "aiobotocore", "httpx", "httpcore", "urllib3")
    levels = {n: logging.getLogger(n).level for n in names}
    path = tmp_path / "debug.log"
    cli._setup_logging(argparse.Namespace(debug=True, log_file=str(path)), background=True)
    yield path
    for h in root.handlers:
        h.close()
    root.handlers[:], root.level = saved
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_botocore_request_logging_stays_out_at_debug(debug_log):
    logging.getLogger("botocore.endpoint").debug(
        "Sending http request: <AWSPreparedRequest headers={'Authorization': b'AWS4-HMAC-SHA256 "
        "Credential=AKIAEXAMPLE/20260101/us-east-1/s3/aws4_request, Signature=abc'}>")
    logging.getLogger("httpcore.http11").debug("send_request_headers.started request=<Request [b'PUT']>")
    logging.getLogger("s3pvefs.test").debug("our own debug line")
    text = debug_log.read_text()
    assert "our own debug line" in text  # debug is on...
    assert "Authorization" not in text and "AKIAEXAMPLE" not in text and "send_request_headers" not in text


def test_a_secret_is_replaced_wherever_it_appears(debug_log):
    hide_in_logs(SECRET, None, "short")  # too short values are not hidden (they would hide words)
    log = logging.getLogger("s3pvefs.test")
    log.error("in the message %s", SECRET)
    log.warning("in the arguments: %r", {"aws_secret_access_key": SECRET})
    try:
        raise ValueError(f"a library quoting its input: {SECRET}")
    except ValueError:
        log.exception("in a traceback")
    log.info("a short word stays")
    logging.getLogger("botocore.credentials").warning("a library at WARNING: %s", SECRET)
    text = debug_log.read_text()
    assert SECRET not in text
    assert text.count("[secret]") == 4, text
    assert "ValueError: a library quoting its input: [secret]" in text
    assert "a short word stays" in text


def test_handlers_set_up_after_the_secret_are_covered_too(tmp_path):
    hide_in_logs(SECRET)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        cli._setup_logging(argparse.Namespace(debug=False, log_file=str(tmp_path / "l")), background=True)
        hide_in_logs()  # what S3Store.open does on every client: (re)attach to the current handlers
        logging.getLogger("s3pvefs.x").error("late %s", SECRET)
        assert (tmp_path / "l").read_text().rstrip().endswith("late [secret]")
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], root.level = saved
