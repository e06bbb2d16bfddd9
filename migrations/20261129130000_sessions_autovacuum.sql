-- Per-table autovacuum settings on sessions: vacuum and analyze it after 2% of its rows have
-- changed (dead row versions, or rows inserted since the last vacuum), not the server's
-- default of 20%.
--
-- sessions takes an UPDATE per refresh and per touch, and a purge deletes in batches. With
-- the default scale factors a 10M-row table waits for about 2M dead row versions before a
-- vacuum: index entries of the updates that were not HOT pile up meanwhile, and pruning alone
-- cannot reclaim them. With 0.02 a vacuum comes after about 200k, ten times as often and each
-- ten times shorter. The insert scale factor does the same for a table that mostly grows
-- (logins), so its visibility map stays current and index-only scans stay cheap; analyze
-- keeps the planner's statistics of expires_at current for the purge.
--
-- Settings of the table, not of the server: ALTER TABLE … RESET (…) undoes them. Nothing else
-- changes; the thresholds (autovacuum_vacuum_threshold, 50 rows) stay the server's.

ALTER TABLE latchkey.sessions SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02
);
