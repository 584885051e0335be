"""Gunicorn config hook: make the SQLite database of the dev Glance (and Keystone) safe for concurrent requests.

oslo.db opens every transaction with a deferred BEGIN. Two threads that both read inside a
transaction and then write deadlock on SQLite's lock upgrade, and SQLite answers one of them
"database is locked" at once, without waiting: Glance turns that into a 500 and can leave an
image in "saving" for good. Measured with 16 threads creating, uploading and deleting images
for 60 s: 2141 of 5000 requests failed so. Production Glance runs MySQL or PostgreSQL; this
only concerns the SQLite files of scripts/glance-dev and scripts/keystone-dev.

BEGIN IMMEDIATE takes the write lock up front, so transactions queue behind each other in
SQLite's busy handler instead of deadlocking; the database is in WAL mode (set by
the scripts after db_sync) so reads outside a transaction do not wait for writers.

Loaded by gunicorn (-c) in the master before it forks the workers; the listeners are on
SQLAlchemy's Engine class, which runs them before oslo.db's per-engine ones.
"""

import sqlite3

from sqlalchemy import event
from sqlalchemy.engine import Engine

# How long a transaction waits for another's write lock before failing (ms).
BUSY_TIMEOUT_MS = 60000


@event.listens_for(Engine, "connect")
def _wait_for_locks(dbapi_connection, connection_record):
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA busy_timeout = %d" % BUSY_TIMEOUT_MS)


@event.listens_for(Engine, "begin")
def _begin_immediate(connection):
    # oslo.db's own listener emits a deferred BEGIN unless "in_transaction" is set.
    if connection.dialect.name == "sqlite" and "in_transaction" not in connection.info:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.info["in_transaction"] = True
