"""The outcome cache on a real Redis (a database claimed for this test run, a key prefix per test, cleaned up)."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tasks.images.cache import OutcomeCache
from tasks.images.checker import ImageChecker
from tasks.shapes import ImageResult
from tests.test_images import Host, limits

SCOPE = "allow=127.0.0.1/32;ports 1-65535 (images.allow_ports)"  # what the checker keys its answers by


@pytest.fixture
def cache(redis_url: str) -> Iterator[OutcomeCache]:
    client = redis.Redis.from_url(redis_url)
    prefix = f"feedworker-test:img:{secrets.token_hex(4)}:"
    yield OutcomeCache(client, prefix=prefix, ok_ttl=86400, gone_ttl=3600)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def host() -> Iterator[Host]:
    h = Host()
    yield h
    h.close()


def run(cache: OutcomeCache | None, urls: list[str], **kw: object) -> dict[str, ImageResult]:
    with ImageChecker(limits(**kw), cache) as checker:
        return checker.check_many(urls)


def test_a_second_call_makes_no_request(host: Host, cache: OutcomeCache) -> None:
    urls = [host.url("/ok/640/360/a.png"), host.url("/html/b.png"), host.url("/status/404/c.png"),
            host.url("/status/410/d.png")]
    first = run(cache, urls)
    requests = sum(host.hits.values())
    second = run(cache, urls)
    assert second == first and sum(host.hits.values()) == requests == 4
    assert first[urls[0]]["width"] == 640


def test_good_answers_for_a_day_gone_for_an_hour(host: Host, cache: OutcomeCache) -> None:
    ok, gone, not_image = host.url("/ok/1/1/a.png"), host.url("/status/404/a.png"), host.url("/liar/1/1/a.png")
    run(cache, [ok, gone, not_image])
    ttl = {url: cache.client.ttl(cache.key(url, SCOPE)) for url in (ok, gone, not_image)}
    assert 86000 < ttl[ok] <= 86400 and 86000 < ttl[not_image] <= 86400
    assert 3500 < ttl[gone] <= 3600


def test_transient_failures_and_refusals_are_never_cached(host: Host, cache: OutcomeCache) -> None:
    urls = [host.url("/status/500/a.png"), host.url("/status/429/a.png"), host.url("/stall/a.png"),
            "http://127.0.0.1:9/refused.png", "ftp://example.com/a.png"]
    run(cache, urls, retries=0, timeout_seconds=0.5)
    assert cache.get_many(urls, SCOPE) == {}
    run(cache, urls, retries=0, timeout_seconds=0.5)
    assert host.paths["/status/500/a.png"] == host.paths["/status/429/a.png"] == host.paths["/stall/a.png"] == 2


def test_answers_reached_under_another_allow_list_are_not_reused(host: Host, cache: OutcomeCache) -> None:
    url = host.url("/ok/2/2/a.png")
    assert run(cache, [url])[url]["status"] == "ok"
    assert run(cache, [url], allow_networks=[])[url]["status"] == "blocked"  # not the cached "ok"


def test_duplicates_in_a_batch_are_one_lookup_and_one_fetch(host: Host, cache: OutcomeCache) -> None:
    url = host.url("/ok/3/3/a.png")
    assert list(run(cache, [url, url, url])) == [url] and host.paths["/ok/3/3/a.png"] == 1


def test_unreadable_entries_are_misses(host: Host, cache: OutcomeCache) -> None:
    url = host.url("/ok/4/4/a.png")
    cache.client.set(cache.key(url, SCOPE), b"{not json")
    assert run(cache, [url])[url]["width"] == 4 and host.paths["/ok/4/4/a.png"] == 1


def test_redis_down_means_checking_without_the_cache_and_not_asking_again_for_a_while(host: Host) -> None:
    broken = socket.create_server(("127.0.0.1", 0))  # a "Redis" that hangs up on every connection, counting them
    attempts = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = broken.accept()
            except OSError:
                return
            attempts.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    client = redis.Redis(host="127.0.0.1", port=broken.getsockname()[1], retry=Retry(NoBackoff(), 0))
    down = OutcomeCache(client, pause=60)
    url = host.url("/ok/5/5/a.png")
    try:
        assert run(down, [url])[url]["status"] == "ok" and not down.available
        tried = len(attempts)
        assert run(down, [url])[url]["status"] == "ok" and host.paths["/ok/5/5/a.png"] == 2
        assert tried >= 1 and len(attempts) == tried  # the second call did not even try Redis
    finally:
        broken.close()


# -- the in-process cache (no Redis: a RabbitMQ broker and no cache_url) -------------------------------------------


def test_memory_cache_answers_a_second_call_and_follows_the_same_rules(host: Host) -> None:
    from tasks.images.cache import MemoryOutcomeCache

    cache = MemoryOutcomeCache(max_entries=100)
    ok, gone, not_image = host.url("/ok/6/6/a.png"), host.url("/status/404/b.png"), host.url("/html/c.png")
    transient = host.url("/status/503/d.png")
    first = run(cache, [ok, gone, not_image, transient], retries=0)
    assert run(cache, [ok, gone, not_image, transient], retries=0) == first
    assert host.paths["/ok/6/6/a.png"] == host.paths["/status/404/b.png"] == host.paths["/html/c.png"] == 1
    assert host.paths["/status/503/d.png"] == 2  # a transient failure is never cached
    assert run(cache, [ok], allow_networks=[])[ok]["status"] == "blocked"  # another policy, another answer


def test_memory_cache_is_bounded_and_forgets_expired_answers() -> None:
    import time

    from tasks.images.cache import MemoryOutcomeCache

    result: ImageResult = {"status": "ok", "width": 1, "height": 1, "http_status": 200,
                           "content_type": "image/png", "reason": None}
    cache = MemoryOutcomeCache(max_entries=3)
    cache.put_many({f"https://h/{i}.png": result for i in range(3)})
    cache.get_many(["https://h/0.png"])  # used: it outlives the others
    cache.put_many({"https://h/3.png": result})
    assert set(cache.get_many([f"https://h/{i}.png" for i in range(4)])) == {"https://h/0.png", "https://h/3.png",
                                                                              "https://h/2.png"}
    short = MemoryOutcomeCache(ok_ttl=1)
    short.put_many({"https://h/x.png": result})
    assert short.get_many(["https://h/x.png"]) == {"https://h/x.png": result}
    time.sleep(1.1)
    assert short.get_many(["https://h/x.png"]) == {}


def test_the_checker_caches_in_memory_when_there_is_no_redis(redis_url: str) -> None:
    from tasks.images.cache import MemoryOutcomeCache
    from worker.celeryapp.resources import make_checker
    from worker.settings import Settings

    with make_checker(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/")) as checker:
        assert isinstance(checker.cache, MemoryOutcomeCache)
    with make_checker(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672/", cache_url=redis_url)) as checker:
        assert type(checker.cache) is OutcomeCache
    with make_checker(Settings(broker_url=redis_url)) as checker:
        assert type(checker.cache) is OutcomeCache
