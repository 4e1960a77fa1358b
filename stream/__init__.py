"""cx-stream: real-time customer-experience metrics from helpdesk events on Kafka."""
