"""Webhooks: organisations' endpoints, the events they hear, and the outbox that
delivers them (Standard Webhooks, and Slack, Discord and Teams for alerts)."""
