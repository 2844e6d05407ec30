"""A NATS URL names one server or a cluster's seeds, and the replica count of its streams."""

from __future__ import annotations

import pytest

from convergent.errors import ConfigurationError
from convergent.transports.nats import nats_options, parse_nats_url, stream_name


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


def test_stream_limits_prefix_tls_and_credentials_come_from_the_url() -> None:
    options = nats_options(
        "tls://a:4222?max_age=86400&max_bytes=1000000&prefix=staging&creds=/etc/app.creds"
    )
    assert (options.max_age, options.max_bytes) == (86400.0, 1_000_000)
    security = options.security
    assert (security.prefix, security.tls, security.credentials) == (
        "staging",
        True,
        "/etc/app.creds",
    )
    assert stream_name("shop.orders", security.prefix) == "cv_staging__shop_orders"
    assert stream_name("shop.orders") == "cv_shop_orders"  # no prefix: as before


def test_the_settings_fill_in_what_the_url_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENT_BROKER_PREFIX", "prod")
    monkeypatch.setenv("CONVERGENT_BROKER_CREDENTIALS", "/run/secrets/nats.creds")
    assert nats_options("nats://a:4222").security.prefix == "prod"
    assert nats_options("nats://a:4222").security.credentials == "/run/secrets/nats.creds"
    assert nats_options("nats://a:4222?prefix=dev").security.prefix == "dev"  # the URL wins


@pytest.mark.parametrize("url", ["nats://a:4222?max_age=-1", "nats://a:4222?max_bytes=lots"])
def test_bad_limits_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="max_age=SECONDS"):
        nats_options(url)


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        nats_options("nats://a:4222?prefix=a.b")


def test_kafka_sasl_and_tls_come_from_the_url() -> None:
    from convergent.transports.kafka import KafkaTransport

    t = KafkaTransport(
        "kafka://app:s%40cret@k1:9093,k2:9093?sasl_mechanism=scram-sha-512&tls=1"
        "&prefix=stg&session_timeout_ms=2000"
    )
    assert t.bootstrap == "k1:9093,k2:9093"
    assert t.connection["security_protocol"] == "SASL_SSL"
    assert t.connection["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (t.connection["sasl_plain_username"], t.connection["sasl_plain_password"]) == (
        "app",
        "s@cret",
    )
    assert t.consumer_options == {"session_timeout_ms": 2000}
    assert t.topic_name("orders") == "stg.orders"
    plain = KafkaTransport("kafka://k1:9092")
    assert plain.connection == {"bootstrap_servers": "k1:9092", "security_protocol": "PLAINTEXT"}
    assert plain.topic_name("orders") == "orders"


def test_kafka_refuses_an_unknown_mechanism() -> None:
    from convergent.transports.kafka import KafkaTransport

    with pytest.raises(ConfigurationError, match="sasl_mechanism"):
        KafkaTransport("kafka://u:p@k1:9092?sasl_mechanism=GSSAPI")
