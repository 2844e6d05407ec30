"""A NATS URL names one server or a cluster's seeds, and the replica count of its streams."""

from __future__ import annotations

import pytest

from convergent.errors import ConfigurationError
from convergent.transports.nats import parse_nats_url


def test_one_server_means_streams_of_one_replica() -> None:
    assert parse_nats_url("nats://127.0.0.1:4222") == (["nats://127.0.0.1:4222"], 1)


def test_a_cluster_is_comma_separated_seeds_with_a_replica_count() -> None:
    url = "nats://10.0.0.1:4222,10.0.0.2:4222,nats://10.0.0.3:4222?replicas=3"
    assert parse_nats_url(url) == (
        ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"],
        3,
    )


@pytest.mark.parametrize(
    "url", ["nats://a:4222?replicas=0", "nats://a:4222?replicas=x", "nats://a:4222?r=3"]
)
def test_a_bad_option_names_the_one_that_exists(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"\?replicas=N"):
        parse_nats_url(url)
