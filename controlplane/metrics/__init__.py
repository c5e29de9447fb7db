"""Metrics where operators already look: Ray's Prometheus endpoint (ray_sink.py) for the Ray
deployment, /metrics in Prometheus text for a standalone node (prometheus.py); what a replica
reports is replica.py's, whichever sink it goes to."""
