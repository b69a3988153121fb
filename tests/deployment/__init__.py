"""Deployment tests: a multi-worker CeleryExecutor Airflow on PostgreSQL and Redis (``make test-deployment``)."""
