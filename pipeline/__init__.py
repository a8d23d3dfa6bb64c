"""touchpoint: event-streaming customer-journey analytics on Kafka, faust and ClickHouse."""

__version__ = "0.1.0"
