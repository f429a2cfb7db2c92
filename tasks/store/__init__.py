"""The store: engine and ledger (tasks.store.ledger), the schema and its Alembic migrations, the change feed and
webhook state, delivery counts and drop lineage. SQLAlchemy core on PostgreSQL or SQLite; no Celery.
"""
