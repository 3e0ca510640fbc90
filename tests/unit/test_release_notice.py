"""The v2 backend's word on the server's release (yaim.dcs.etcd2.release_notice) and its
logging once per change (DCS.check_release)."""

import logging

from yaim.dcs import ReleaseNote
from yaim.dcs.etcd2 import release_notice

END = "http://192.0.2.1:2379"


def test_v2_off_is_an_error_naming_server_and_way_out() -> None:
    level, words = release_notice(END, "3.5.16", 404)
    assert level == logging.ERROR
    for part in (END, "3.5.16", "no v2 API", "3.6", "dcs-type: etcd3", "yaimctl migrate"):
        assert part in words


def test_v2_on_in_3_5_is_a_warning() -> None:
    level, words = release_notice(END, "3.5.16", 200)
    assert level == logging.WARNING
    assert "deprecated in 3.5" in words and "gone in 3.6" in words


def test_older_releases_say_nothing() -> None:
    assert release_notice(END, "3.3.25", 200) is None
    assert release_notice(END, "3.4.30", 200) is None


def test_note_changes_once_and_keeps_only_errors_as_problem() -> None:
    note = ReleaseNote()
    error = release_notice(END, "3.5.16", 404)
    assert note.update(error) and not note.update(error)
    assert note.problem == error[1]
    assert note.update(release_notice(END, "3.5.16", 200))
    assert note.problem is None
