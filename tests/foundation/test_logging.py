import logging

import pytest

from models.logsetup import RedactingFilter, redact, setup_logging


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("mail to jane.doe@example.org now", "mail to j***@example.org now"),
        ('[2,"1","StartTransaction",{"connectorId":1,"idTag":"04A1B2C3D4"}]',
         '[2,"1","StartTransaction",{"connectorId":1,"idTag":"***"}]'),
        (
            '{"idToken": {"idToken": "DEADBEEF", "type": "ISO14443"}}',
            '{"idToken": {"idToken": "***", "type": "ISO14443"}}',
        ),
        ("id_token=ABC123 ok", "id_token=*** ok"),
        ("open rtsp://admin:hunter2@10.0.0.5/stream", "open rtsp://***@10.0.0.5/stream"),
        ("nothing personal here", "nothing personal here"),
    ],
)
def test_redact(raw, clean):
    assert redact(raw) == clean


def test_filter_applies_to_args_and_names_process(capsys):
    setup_logging("INFO", "camera-gate")
    logging.getLogger("t").info("driver %s tag %s", "bob@example.com", '"idTag":"X1"')
    err = capsys.readouterr().err
    assert "[camera-gate] t: driver b***@example.com tag \"idTag\":\"***\"" in err
    assert "bob@example.com" not in err


def test_bad_format_string_is_not_lost():
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, "value %d", ("x",), None)
    assert RedactingFilter().filter(rec)
    assert rec.getMessage() == "value %d"
