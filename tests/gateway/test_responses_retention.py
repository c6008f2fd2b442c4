"""Stored /v1/responses answers live for GATEWAY_RESPONSES_RETENTION_DAYS: past it they are neither
read nor continued, and the hourly purge deletes them; with the retention at 0 nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import openai
import pytest
from django.utils import timezone

from gateway.models import StoredResponse
from gateway.tasks import purge_stored_responses
from tests.factories import make_api_key
from tests.gateway.test_responses_api import one_route
from tests.live_server import LiveGateway
from tests.upstream_server import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_expired_response_is_not_read_nor_continued_and_the_purge_deletes_it(setup):
    one_route("aged", setup.instance("oa-aged", Behaviour(content="Kept for a while.")))
    client = setup.client()
    old = client.responses.create(model="aged", input="Remember this")
    fresh = client.responses.create(model="aged", input="And this")
    assert client.responses.retrieve(old.id).output_text == "Kept for a while."

    StoredResponse.objects.filter(pk=old.id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(old.id)
    with pytest.raises(openai.BadRequestError) as continued:
        client.responses.create(model="aged", input="Go on", previous_response_id=old.id)
    assert continued.value.code == "previous_response_not_found"

    assert purge_stored_responses() == 1
    assert list(StoredResponse.objects.values_list("pk", flat=True)) == [fresh.id]
    assert client.responses.retrieve(fresh.id).output_text == "Kept for a while."
    assert purge_stored_responses() == 0


@pytest.fixture
def keeps_nothing(transactional_db: Any) -> Iterator[LiveGateway]:
    server = LiveGateway(extra_env={"GATEWAY_RESPONSES_RETENTION_DAYS": "0"})
    yield server
    server.stop()


def test_with_the_retention_at_zero_nothing_is_stored(setup, keeps_nothing):
    one_route("unkept", setup.instance("oa-unkept", Behaviour(content="Gone after this.")))
    _, secret = make_api_key()
    keeps_nothing.wait_for_config()
    client = openai.OpenAI(base_url=keeps_nothing.v1, api_key=secret, max_retries=0)
    made = client.responses.create(model="unkept", input="Remember this")
    assert made.output_text == "Gone after this." and made.store is False
    assert not StoredResponse.objects.exists()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.BadRequestError) as continued:
        client.responses.create(model="unkept", input="Go on", previous_response_id=made.id)
    assert "GATEWAY_RESPONSES_RETENTION_DAYS is 0" in continued.value.message
