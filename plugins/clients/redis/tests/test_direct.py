"""DirectCommands on the shared Redis: raw replies, one connection per thread and per
process, a dropped connection reopened once, a flushed script loaded again."""

from __future__ import annotations

import os
import threading
import uuid

import pytest
import redis
from qhive_redis_client.client import new_client
from qhive_redis_client.direct import DirectCommands
from qhive_testkit.services import redis_options, require

PLUGIN = "test-plugin"


@pytest.fixture
def client():
    require("redis")
    client = new_client(redis_options(), plugin=PLUGIN)
    yield client
    client.close()


@pytest.fixture
def key(client):
    name = f"qhive-test-direct:{uuid.uuid4().hex}"
    yield name
    client.delete(name)


def test_commands_return_raw_replies_and_errors_are_redis_pys(client, key):
    direct = DirectCommands(client)
    assert direct.execute("RPUSH", key, "a", "b") == 2
    assert direct.execute("LRANGE", key, 0, -1) == [b"a", b"b"]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        direct.execute("HGET", key, "field")
    assert direct.execute("LLEN", key) == 2, "the connection is usable after an error reply"


def test_a_pipeline_returns_each_reply_in_its_place(client, key):
    direct = DirectCommands(client)
    replies = direct.pipeline(("RPUSH", key, "x"), ("HGET", key, "f"), ("LLEN", key))
    assert replies[0] == 1 and replies[2] == 1
    assert isinstance(replies[1], redis.ResponseError)


def test_a_command_behind_a_blocking_one_runs_when_it_returns(client, key):
    direct = DirectCommands(client)
    threading.Timer(0.2, lambda: client.rpush(key, "woken")).start()
    moved, length = direct.pipeline(("BLMOVE", key, key, "LEFT", "LEFT", 5), ("LLEN", key))
    assert (moved, length) == (b"woken", 1)


def test_each_thread_has_its_own_connection(client):
    direct = DirectCommands(client)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(direct.connection()))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen[0] is not seen[1]
    assert direct.connection() is direct.connection()


def test_a_connection_killed_by_the_server_is_reopened_once(client, key):
    direct = DirectCommands(client)
    direct.execute("SET", key, "1")
    me = direct.execute("CLIENT", "ID")
    assert client.client_kill_filter(_id=me) == 1
    assert direct.execute("GET", key) == b"1"
    assert direct.execute("CLIENT", "ID") != me


def test_a_dead_server_raises_redis_pys_connection_error():
    dead = new_client({"host": "127.0.0.1", "port": 1, "socket_connect_timeout": 1},
                      plugin=PLUGIN)
    with pytest.raises(redis.ConnectionError):
        DirectCommands(dead).execute("PING")


def test_a_script_the_server_lost_is_loaded_again(client, key):
    direct = DirectCommands(client)
    script = client.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])")
    assert direct.evalsha(script, [key], []) == 1, "never loaded: NOSCRIPT, then loaded"
    assert direct.evalsha(script, [key], []) == 2


def test_a_forked_child_opens_its_own_connection(client):
    direct = DirectCommands(client)
    parent_id = direct.execute("CLIENT", "ID")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new connection, the parent's socket untouched
        try:
            os.write(write, str(direct.execute("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = int(os.read(read, 100))
    os.waitpid(pid, 0)
    assert child_id != parent_id
    assert direct.execute("CLIENT", "ID") == parent_id, "the parent's connection still works"


def test_close_disconnects_this_threads_connection_and_the_others_before_their_next_use(
        client):
    direct = DirectCommands(client)
    asked, answered, ids = threading.Event(), threading.Event(), []

    def other_thread():
        ids.append(direct.execute("CLIENT", "ID"))
        answered.set()
        asked.wait(10)
        ids.append(direct.execute("CLIENT", "ID"))

    thread = threading.Thread(target=other_thread)
    thread.start()
    answered.wait(10)
    first = direct.execute("CLIENT", "ID")
    direct.close()
    assert direct.execute("CLIENT", "ID") != first
    asked.set()
    thread.join(10)
    assert ids[1] != ids[0], "the other thread's connection was replaced at its next command"
