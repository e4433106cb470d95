"""A lease in the study's database: who may sample the teacher, without a shared filesystem.

One row per lease in a small table, ``gped_leases(name, holder, expires)``, next to Optuna's tables.
Taking the lease is one ``UPDATE ... WHERE holder = me OR expires < now``: atomic in every database
SQLAlchemy speaks (PostgreSQL, MySQL, SQLite), so exactly one worker gets it. The holder renews it
every ``ttl / 4`` seconds from a thread (:meth:`Lease.renewing`); a worker that dies stops renewing,
and ``ttl`` seconds later (``$GPED_LEASE_SECONDS``, default 60) the next worker takes it over. Expiry
times are the workers' clocks (epoch seconds): keep the nodes' clocks in sync (NTP) to well within
``ttl``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from gped_search.errors import StudyError

log = logging.getLogger(__name__)

__all__ = ["Lease", "lease_seconds", "supports_lease"]

TABLE = "gped_leases"


def lease_seconds() -> float:
    """``$GPED_LEASE_SECONDS`` (whole seconds >= 2), default 60."""
    raw = os.environ.get("GPED_LEASE_SECONDS", "").strip()
    if not raw:
        return 60.0
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 2:
        raise StudyError(f"GPED_LEASE_SECONDS={raw!r}: give a whole number of seconds >= 2")
    return float(raw)


def supports_lease(url: str) -> bool:
    """A database URL (SQLAlchemy) rather than a journal file."""
    return "://" in url and not url.startswith("journal://") and not url.endswith(".journal")


def _table():
    import sqlalchemy as sa

    meta = sa.MetaData()
    return sa.Table(
        TABLE,
        meta,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )


class Lease:
    """The lease ``name`` in the database at ``url`` (an SQLAlchemy URL with its driver, as Optuna's RDB storage's)."""

    def __init__(self, url: str, name: str, ttl: float | None = None, create: bool = True):
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        self.name, self.ttl = name, float(ttl or lease_seconds())
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.engine = sa.create_engine(url, poolclass=NullPool)
        self.table = _table()
        self.lost = threading.Event()
        for attempt in range(6 if create else 0):  # workers starting together race to create the table
            try:
                self.table.metadata.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.SQLAlchemyError:
                if attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours; True when we hold it now."""
        import sqlalchemy as sa

        t = self.table
        now = time.time()
        with self.engine.begin() as c:
            got = c.execute(
                t.update()
                .where(t.c.name == self.name, sa.or_(t.c.holder == self.holder, t.c.expires < now))
                .values(holder=self.holder, expires=now + self.ttl)
            ).rowcount
        if got:
            return True
        with self.engine.begin() as c:  # held by someone: no failing INSERT (and no server log line) per poll
            if c.execute(sa.select(t.c.name).where(t.c.name == self.name)).first() is not None:
                return False
        try:
            with self.engine.begin() as c:
                c.execute(t.insert().values(name=self.name, holder=self.holder, expires=now + self.ttl))
            return True
        except sa.exc.IntegrityError:  # someone holds it (or inserted it first)
            return False

    def renew(self) -> bool:
        """Push our expiry ``ttl`` seconds ahead; False when the lease is no longer ours."""
        t = self.table
        with self.engine.begin() as c:
            return bool(
                c.execute(
                    t.update()
                    .where(t.c.name == self.name, t.c.holder == self.holder)
                    .values(expires=time.time() + self.ttl)
                ).rowcount
            )

    def release(self) -> None:
        t = self.table
        with contextlib.suppress(Exception), self.engine.begin() as c:
            c.execute(t.delete().where(t.c.name == self.name, t.c.holder == self.holder))

    def current(self) -> tuple[str, float] | None:
        """(holder, expiry) of a live lease, or None when nobody holds it (or there is no lease table)."""
        import sqlalchemy as sa

        t = self.table
        try:
            with self.engine.begin() as c:
                row = c.execute(t.select().where(t.c.name == self.name)).first()
        except sa.exc.SQLAlchemyError:  # a database without the table (never leased), or out of reach
            return None
        if row is None or row.expires < time.time():
            return None
        return row.holder, row.expires

    @contextlib.contextmanager
    def renewing(self) -> Iterator[Lease]:
        """Renew the lease every ``ttl / 4`` s while the block runs; release it after. ``lost`` is set
        when a renewal found the lease taken (we were silent longer than ``ttl``)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(self.ttl / 4):
                try:
                    if not self.renew():
                        self.lost.set()
                        log.warning("lost the lease %s (not renewed within %.0f s)", self.name, self.ttl)
                        return
                except Exception as e:  # a database hiccup: try again at the next tick
                    log.warning("could not renew the lease %s: %s", self.name, type(e).__name__)

        th = threading.Thread(target=loop, name=f"lease:{self.name}", daemon=True)
        th.start()
        try:
            yield self
        finally:
            stop.set()
            th.join(timeout=10)
            self.release()

    def close(self) -> None:
        self.engine.dispose()
