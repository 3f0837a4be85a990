"""The link: messages and transfers (protocol v2), signing, the two durable queues,
MQTT, the budget, the daemons' supervision."""
