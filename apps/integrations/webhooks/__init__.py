"""The GitHub webhook receiver: ``POST /webhooks/github/`` (``views.github_webhook``).

The view checks size and signature before anything touches the database, then hands the
delivery to ``services.webhook_events``, which applies it in one transaction with its GUID.
"""
