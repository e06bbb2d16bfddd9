-- Autovacuum's budget on sessions: a tenth of the server's default. Each pass sleeps 20 ms
-- (autovacuum_vacuum_cost_delay) every time it has spent the server's cost limit (200 by
-- default), against the server's 2 ms.
--
-- At the server's budget a pass over a 10M-session table (half of its 557k pages read, 400k
-- dirtied) took about two minutes and wrote about 3 GB of WAL, most of it whole pages: a
-- checkpoint every 16 s, and the refreshes' p99 at 7.5-8.8x idle while it ran. With this
-- budget the same kind of pass took about ten minutes, wrote 1.4 GB, a checkpoint every
-- 100-120 s, and the refreshes stayed at 1.15x (docs/BENCHMARKS.md, Ten million a third
-- time, autovacuum at a tenth of the budget). The purge's own VACUUM (latchkey expire
-- --vacuum-after) has its own, gentler settings and is not affected.
--
-- The trade: a pass takes ten times as long, so dead row versions wait longer to be
-- reclaimed. A table whose n_dead_tup keeps rising across passes needs more: RESET it
-- (ALTER TABLE latchkey.sessions RESET (autovacuum_vacuum_cost_delay)) or set a lower delay.
-- A setting of the table, not of the server; the server's autovacuum_vacuum_cost_limit and
-- every other table's budget stay as they are.

ALTER TABLE latchkey.sessions SET (autovacuum_vacuum_cost_delay = 20);
