"""A waiter reads a store's announcement of a save (qhive.announcements)."""

from qhive.announcements import names


def test_an_announcement_concerns_a_waiter_when_it_names_a_key_it_waits_for():
    saved = '["result:a1","group:g","name:four-word-task-name"]'
    assert names(saved, {"result:a1"})
    assert names(saved, {"group:g", "result:zz"})
    assert not names(saved, {"result:a2", "group:h"})


def test_waiting_for_anything_or_reading_nonsense_means_look():
    assert names('["result:a1"]', set())
    assert names("not json", {"result:a1"})  # unreadable: look rather than miss it
    assert names('{"result": "a1"}', {"result:a1"})  # not a list: look
