"""Several broker addresses: which one is tried next and how long to wait (pure), and that publishes whose
confirm was lost are sent again while unroutable ones are not."""

from __future__ import annotations

import json

import aiormq
import pytest
from aio_pika.exceptions import PublishError
from pamqp.commands import Basic

from tests.environment import as_environment
from worker.amqp.confirms import publish_until_confirmed, worth_retrying
from worker.amqp.connection import Backoff, MultiAddressConnection, next_attempt, redacted
from worker.settings import Settings


def nominal(delay_s: float) -> float:
    """No jitter: the nominal schedule itself."""
    return delay_s


class TestNextAttempt:
    """A lost connection or failed attempt moves to the next address; only whole failed rounds wait."""

    def test_a_lost_connection_tries_the_next_address_at_once(self):
        assert next_attempt(0, 3, failures=0) == (1, 0.0)
        assert next_attempt(2, 3, failures=0) == (0, 0.0)

    def test_the_first_round_of_failures_does_not_wait(self):
        assert next_attempt(1, 3, failures=1) == (2, 0.0)
        assert next_attempt(2, 3, failures=2) == (0, 0.0)

    def test_whole_failed_rounds_back_off_doubling_up_to_the_cap(self):
        backoff = Backoff(initial_s=0.5, max_s=4.0)
        delays = [next_attempt(0, 3, failures=f, backoff=backoff, jitter=nominal)[1] for f in range(3, 19, 3)]
        assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]

    def test_one_address_retries_itself_with_backoff(self):
        assert next_attempt(0, 1, failures=0) == (0, 0.0)
        assert next_attempt(0, 1, failures=1, jitter=nominal) == (0, 0.5)
        assert next_attempt(0, 1, failures=2, jitter=nominal) == (0, 1.0)

    def test_the_waits_taken_are_jittered_between_half_and_all_of_the_schedule(self):
        waits = {next_attempt(0, 1, failures=4)[1] for _ in range(50)}  # nominal 4 s
        assert all(2.0 <= wait <= 4.0 for wait in waits) and len(waits) > 1
        assert {next_attempt(0, 3, failures=2)[1] for _ in range(20)} == {0.0}  # the first round still does not wait


class TestAddresses:
    async def test_passwords_are_hidden_in_what_is_logged(self):
        connection = MultiAddressConnection(["amqp://u:s3cret@n1:5672/", "amqp://u:s3cret@n2:5672/"], start=1)
        try:
            assert connection.address == "amqp://u:******@n2:5672/"
            assert "s3cret" not in redacted(connection.addresses[0]) + str(connection) + repr(connection)
        finally:
            await connection.close()

    async def test_at_least_one_address(self):
        with pytest.raises(ValueError):
            MultiAddressConnection([])

    def test_settings_take_a_list_and_keep_the_single_url(self, monkeypatch):
        assert Settings(_env_file=None, amqp_url="amqp://a/").broker_urls() == ["amqp://a/"]
        monkeypatch.setenv("DMS_WORKER_AMQP_URLS", '["amqp://u:p@n1:5681/", "amqp://u:p@n2:5682/"]')
        settings = Settings(_env_file=None)
        assert settings.broker_urls() == ["amqp://u:p@n1:5681/", "amqp://u:p@n2:5682/"]
        assert "u:p@" not in repr(settings) and "u:p@" not in settings.model_dump_json()
        # Replicas are started from as_environment(): the list must survive it.
        env = as_environment(settings)
        assert json.loads(env["DMS_WORKER_AMQP_URLS"]) == settings.broker_urls()
        monkeypatch.setenv("DMS_WORKER_AMQP_URLS", env["DMS_WORKER_AMQP_URLS"])
        assert Settings(_env_file=None).broker_urls() == settings.broker_urls()


class TestPublishUntilConfirmed:
    """What a lost confirm means: send again. What a returned message means: a topology fault, raise."""

    async def test_a_publish_lost_with_its_connection_is_sent_again(self):
        calls = []

        async def publish():
            calls.append(1)
            if len(calls) < 3:
                raise aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED")
            return "confirmed"

        assert await publish_until_confirmed(publish) == "confirmed"
        assert len(calls) == 3

    async def test_it_stops_when_the_publish_is_no_longer_wanted(self):
        async def publish():
            raise aiormq.exceptions.ChannelInvalidStateError("closed")

        with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
            await publish_until_confirmed(publish, still_wanted=lambda: False)

    def test_what_is_worth_retrying(self):
        nack = aiormq.exceptions.DeliveryError(None, Basic.Nack(delivery_tag=1))
        assert worth_retrying(nack)
        assert worth_retrying(aiormq.exceptions.ChannelInvalidStateError("closed"))
        assert worth_retrying(ConnectionResetError())
        assert not worth_retrying(PublishError.__new__(PublishError))
        assert not worth_retrying(ValueError("bug"))
