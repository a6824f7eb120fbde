"""Outage management: outage records for OMS integration, detection events, webhooks."""
